"""`lakewriter ddl` output, run in chdb against the lake lakewriter wrote.

Needs LW_DDL (the file `lakewriter ddl` printed) besides the variables of test_sql.py;
tests/clickhouse/run.sh sets them all.
"""

from __future__ import annotations

import os

import pytest

from test_sql import applied, cfg, ch, diff, partition_counts  # noqa: F401  (pytest fixtures)


@pytest.fixture(scope="module")
def ddl_table(cfg, ch, applied):  # noqa: F811
    path = os.environ.get("LW_DDL")
    if not path:
        pytest.fail("LW_DDL is not set: run tests/clickhouse/run.sh", pytrace=False)
    text = open(path).read()
    body = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("--"))
    for stmt in (s.strip() for s in body.split(";")):
        if stmt:
            ch.rows(stmt)
    return f"lake.{cfg.table}"


def test_ddl_declares_explicit_typed_columns(cfg):  # noqa: F811
    text = open(os.environ["LW_DDL"]).read()
    assert "`event_params` Tuple(" in text, text
    assert "`_event_time` DateTime64(6, 'UTC')" in text
    assert "use_hive_partitioning = 1" in text


def test_ddl_table_count_matches(cfg, ch, ddl_table):  # noqa: F811
    assert ch.value(f"SELECT count() FROM {ddl_table}") == cfg.expected["total"]


def test_ddl_table_counts_per_partition(cfg, ch, ddl_table):  # noqa: F811
    rows = ch.rows(f"SELECT toString(date), event_type, count() FROM {ddl_table} GROUP BY 1, 2")
    got = partition_counts(rows)
    assert got == cfg.expected["by_partition"], diff(got, cfg.expected["by_partition"])


def test_ddl_table_types_and_sample(cfg, ch, ddl_table):  # noqa: F811
    s = cfg.expected["sample"]
    rows = ch.rows(
        f"SELECT toTypeName(_event_time), event_params.user_id, toUnixTimestamp64Milli(_event_time) "
        f"FROM {ddl_table} WHERE _partition = {int(s['_partition'])} AND _offset = {int(s['_offset'])}"
    )
    assert len(rows) == 1, rows
    assert rows[0][0] == "DateTime64(6, 'UTC')"
    assert rows[0][1] == s["event_params"]["user_id"]
    assert int(rows[0][2]) == s["event_timestamp_ms"]["ts_ms"]


def test_ddl_dedup_view_counts_each_record_once(cfg, ch, ddl_table):  # noqa: F811
    view = f"{ddl_table}_dedup"
    assert ch.value(f"SELECT count() FROM {view}") == cfg.expected["total"]
    rows = ch.rows(f"SELECT toString(date), event_type, count() FROM {view} GROUP BY 1, 2")
    got = {f"{d}|{t}": int(n) for d, t, n in rows}
    assert got == cfg.expected["by_partition"], diff(got, cfg.expected["by_partition"])
