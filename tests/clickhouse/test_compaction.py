"""Readers while `lakewriter compact` merges the lake: the shipped deduplicating view
(sql/02_tables.sql's lake.events) and the view `lakewriter ddl` prints count every record
exactly once at every moment of a compaction, and never fail.

Needs, besides the variables of test_sql.py (tests/clickhouse/run.sh sets them all):
    LW_COMPACT_PREFIX  a second lake of the same events, written with small flushes
    LW_BIN             the lakewriter binary
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time

import pytest

import make_fake_lake
from test_sql import Ch, cfg, load_statements, run_statements  # noqa: F401  (pytest fixture)


def _data_keys(s3, c) -> list[str]:
    keys = make_fake_lake.list_keys_raw(s3, c.bucket, c.table_key_prefix)
    return [k for k in keys if k.endswith(".parquet")]


def _last_value(sql: str, text: str):
    """The value of the last JSON document in `text`: after a query failed, chdb 4.4
    hands its empty partial result out before the next query's."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)
    assert docs and docs[-1]["data"], f"{sql}: no answer in {text!r}"
    return docs[-1]["data"][0][0]


def test_views_count_each_record_once_throughout_a_compaction(cfg):  # noqa: F811
    prefix, binary = os.environ.get("LW_COMPACT_PREFIX"), os.environ.get("LW_BIN")
    if not prefix or not binary:
        pytest.fail("LW_COMPACT_PREFIX and LW_BIN must be set: run tests/clickhouse/run.sh", pytrace=False)
    c = dataclasses.replace(cfg, prefix=prefix)
    total = c.expected["total"]
    s3 = make_fake_lake.s3_client(c.endpoint, c.access_key, c.secret_key)
    before = _data_keys(s3, c)

    ch = Ch()
    try:
        run_statements(ch, load_statements(c))
        ddl = subprocess.run(
            [binary, "ddl", "--lake", f"s3://{c.bucket}/{prefix}", "--table", c.table,
             "--database", "lakec", "--s3-path-style"],
            check=True, capture_output=True, text=True,
        ).stdout
        body = "\n".join(l for l in ddl.splitlines() if not l.lstrip().startswith("--"))
        for stmt in (s.strip() for s in body.split(";")):
            if stmt:
                ch.rows(stmt)
        views = ["lake.events", f"lakec.{c.table}_dedup"]
        for v in views:
            assert ch.value(f"SELECT count() FROM {v}") == total, v

        env = dict(os.environ, AWS_ENDPOINT_URL=c.endpoint, AWS_ACCESS_KEY_ID=c.access_key,
                   AWS_SECRET_ACCESS_KEY=c.secret_key)
        proc = subprocess.Popen(
            [binary, "compact", "--lake", f"s3://{c.bucket}/{prefix}", "--s3-path-style",
             "--once", "--min-age", "0s", "--grace", "10s", "--target-file-size", "1MiB",
             "--admin-addr", "off"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        queries, raw_twice, missing, deadline = 0, 0, [], time.monotonic() + 600

        def count(sql: str):
            # A glob query lists the objects, then reads them: one that listed a merged
            # input just before the compactor removed it fails reading it. ClickHouse has
            # no setting that skips such an object (s3_ignore_file_doesnt_exist only
            # covers explicit keys), so that query is retried, and counted here. It is
            # the only failure allowed; every answer must be exact.
            # The error comes as an exception, or (once rows were being sent) after
            # the result in the output.
            try:
                res = ch.session.query(sql, "JSONCompact")
                text = res.data() if hasattr(res, "data") else str(res)
            except Exception as e:  # chdb raises ChdbError with the server's message
                text = str(e)
            if "while reading key" not in text:
                return _last_value(sql, text)
            assert "S3_ERROR" in text and "while reading key" in text, text
            missing.append(text.split("while reading key: ")[1].split(",")[0])
            return None

        while proc.poll() is None:
            assert time.monotonic() < deadline, "compaction did not finish within 600 s"
            for v in views:
                got = count(f"SELECT count() FROM {v}")
                assert got in (None, total), f"{v} counted {got} of {total} after {queries} queries"
                queries += got is not None
            # What a raw reader sees: every row once, or some twice inside a merge's window.
            raw = count("SELECT count() FROM lake.events_s3")
            assert raw is None or raw >= total, f"a raw reader lost rows: {raw} of {total}"
            raw_twice += raw is not None and raw > total
        out, err = proc.communicate()
        assert proc.returncode == 0, f"{out}\n{err}"
        print(out.strip())
        print(f"{queries} view queries during the compaction, all exact; "
              f"{raw_twice} raw counts saw a merge's rows twice; "
              f"{len(missing)} queries met an input removed after they listed it")
        removed = {k for k in before}
        assert all(k in removed and "/compacted-" not in k for k in missing), missing
        assert queries >= 2, "the loop ran while merges happened"
        assert raw_twice >= 1, "the loop met at least one merge's window"

        for v in views:
            assert ch.value(f"SELECT count() FROM {v}") == total, v
        assert ch.value("SELECT count() FROM lake.events_s3") == total, "no duplicates left"
        after = _data_keys(s3, c)
        print(f"files: {len(before)} -> {len(after)}")
        assert len(after) * 2 < len(before)
    finally:
        ch.close()
