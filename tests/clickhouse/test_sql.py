"""Prove the files in sql/ against a lake on S3, with the chdb engine (ClickHouse in-process).

Run (see docs/clickhouse.md for the whole walk-through):

    LW_S3_ENDPOINT=http://127.0.0.1:9555 LW_BUCKET=lake LW_PREFIX=events LW_TABLE=clickstream \
    AWS_ACCESS_KEY_ID=K AWS_SECRET_ACCESS_KEY=S LW_EXPECTED=/tmp/expected.json \
    python3 -m pytest tests/clickhouse -v -rP

Environment (all required; a missing one fails the run, nothing is skipped):
    LW_S3_ENDPOINT         http://host:port of the S3 server (path-style addressing)
    LW_BUCKET              bucket of the lake
    LW_PREFIX              key prefix above the table directories (may be set to "" for none)
    LW_TABLE               table directory: <bucket>/<prefix>/<table>/date=*/event_type=*/*.parquet
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    LW_EXPECTED            JSON file written by whoever produced the events:
                           {"total": N, "by_partition": {"YYYY-MM-DD|<event_type>": n, ...},
                            "sample": {<one event's JSON>, "_topic": ..., "_partition": ..., "_offset": ...}}
                           by_partition keys hold the event_type as produced (unescaped).
                           sample may also hold "_event_time" (microseconds since the epoch, or
                           RFC 3339); otherwise it is event_timestamp_ms.ts_ms.
Optional:
    LW_PARTITION_TZ        time zone lakewriter computes `date` in (default UTC)
    LW_SQL_DIR             directory of the .sql files (default: sql/ of this repository)

What is proved:
  * every statement of sql/*.sql runs, in file order, after the compose-default literals are
    rewritten to this lake; and the same files run on an empty table directory;
  * queries marked `-- @check: ...` in sql/ return what was produced;
  * count over the s3() glob == total; the dedup view lake.events == total; per (date,
    event_type) counts == by_partition, with Hive-escaped values read back unescaped;
  * the glob reads exactly the .parquet objects under <table>/date=*/ (never _lakewriter/);
  * partition pruning: a query filtered on one date and one event type opens exactly as many
    files as boto3 lists in that directory (system.events EngineFileLikeReadFiles), for s3(),
    the S3 table and the dedup view;
  * the dedup view collapses duplicated records (its own SELECT over the data read twice);
  * the sampled event comes back with its nested fields, and _event_time is
    DateTime64(6, 'UTC') with the right value; `date` is the event time's date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SQL_DIR = Path(os.environ.get("LW_SQL_DIR") or HERE.parent.parent / "sql")
sys.path.insert(0, str(HERE))

import make_fake_lake  # noqa: E402  (s3_client, list_keys_raw)

REQUIRED_ENV = [
    "LW_S3_ENDPOINT",
    "LW_BUCKET",
    "LW_PREFIX",
    "LW_TABLE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "LW_EXPECTED",
]

# The compose-default literals in sql/ and what they become (see sql/README.md).
SHIPPED_URL = "'http://minio:9000/lake/events/'"
SHIPPED_ACCESS_KEY = "access_key_id = 'minioadmin'"
SHIPPED_SECRET_KEY = "secret_access_key = 'minioadmin'"
SHIPPED_TABLE = "'clickstream/"

HIVE_DEFAULT = "__HIVE_DEFAULT_PARTITION__"
DT64_UTC = "DateTime64(6, 'UTC')"


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Cfg:
    endpoint: str
    bucket: str
    prefix: str
    table: str
    access_key: str
    secret_key: str
    expected: dict
    partition_tz: str

    @property
    def base_url(self) -> str:
        """<endpoint>/<bucket>/<prefix>/ — the named collection's url."""
        parts = [self.endpoint.rstrip("/"), self.bucket] + ([self.prefix] if self.prefix else [])
        return "/".join(parts) + "/"

    @property
    def table_key_prefix(self) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + [self.table]) + "/"

    @property
    def glob_url(self) -> str:
        return f"{self.base_url}{self.table}/date=*/event_type=*/*.parquet"

    def s3_fn(self, structure: str | None = None, url: str | None = None) -> str:
        """An s3() table function over the lake, independent of the files in sql/."""
        args = [url or self.glob_url, self.access_key, self.secret_key, "Parquet"]
        if structure:
            args.append(structure)
        return "s3(" + ", ".join(sql_str(a) for a in args) + ")"


def sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load_cfg() -> Cfg:
    missing = [k for k in REQUIRED_ENV if k not in os.environ]
    if missing:
        pytest.fail(
            "tests/clickhouse needs these environment variables: "
            + ", ".join(missing)
            + " (missing). See the docstring of tests/clickhouse/test_sql.py or docs/clickhouse.md; "
            "for a fake lake run tests/clickhouse/make_fake_lake.py.",
            pytrace=False,
        )
    empty = [k for k in REQUIRED_ENV if k != "LW_PREFIX" and not os.environ[k].strip()]
    if empty:
        pytest.fail("these environment variables are empty: " + ", ".join(empty), pytrace=False)
    path = os.environ["LW_EXPECTED"]
    try:
        with open(path) as f:
            expected = json.load(f)
    except (OSError, ValueError) as e:
        pytest.fail(f"LW_EXPECTED={path}: cannot read the expectation JSON: {e}", pytrace=False)
    problems = []
    if not isinstance(expected.get("total"), int):
        problems.append('"total" (int)')
    if not isinstance(expected.get("by_partition"), dict):
        problems.append('"by_partition" (object)')
    sample = expected.get("sample")
    if not isinstance(sample, dict) or not all(k in sample for k in ("_topic", "_partition", "_offset")):
        problems.append('"sample" (object with _topic, _partition, _offset)')
    if problems:
        pytest.fail(f"LW_EXPECTED={path} lacks " + ", ".join(problems), pytrace=False)
    if sum(expected["by_partition"].values()) != expected["total"]:
        pytest.fail(f"LW_EXPECTED={path}: by_partition does not add up to total", pytrace=False)
    return Cfg(
        endpoint=os.environ["LW_S3_ENDPOINT"].rstrip("/"),
        bucket=os.environ["LW_BUCKET"].strip("/"),
        prefix=os.environ["LW_PREFIX"].strip("/"),
        table=os.environ["LW_TABLE"].strip("/"),
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        expected=expected,
        partition_tz=os.environ.get("LW_PARTITION_TZ", "UTC"),
    )


# --------------------------------------------------------------------------------------------
# sql/ files: splitting and literal rewriting


@dataclass
class Statement:
    file: str
    index: int  # 1-based within the file
    line: int  # first line of the statement
    sql: str
    checks: list[str]  # from `-- @check: <name>` comments before the statement

    def where(self) -> str:
        return f"{self.file} statement {self.index} (line {self.line})"


_CHECK_RE = re.compile(r"@check:\s*([A-Za-z_]+)")


def split_statements(text: str, file: str = "<sql>") -> list[Statement]:
    """Split on `;` outside strings ('..', "..", `..`, with '' and backslash escapes) and
    comments (-- to end of line, /* */). Comments stay out of the statement text; the
    `-- @check: name` ones before a statement are attached to it."""
    out: list[Statement] = []
    buf: list[str] = []
    checks: list[str] = []
    start_line = None
    i, n, line = 0, len(text), 1

    def flush():
        nonlocal buf, checks, start_line
        sql = "".join(buf).strip()
        if sql:
            out.append(Statement(file, len(out) + 1, start_line or line, sql, checks))
        buf, checks, start_line = [], [], None

    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            checks += _CHECK_RE.findall(text[i:j])
            buf.append(" ")
            i = j
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ValueError(f"{file}:{line}: unterminated /* comment")
            line += text.count("\n", i, j + 2)
            buf.append(" ")
            i = j + 2
            continue
        if c in "'\"`":
            j = i + 1
            while True:
                if j >= n:
                    raise ValueError(f"{file}:{line}: unterminated {c} literal")
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            if start_line is None:
                start_line = line
            buf.append(text[i : j + 1])
            line += text.count("\n", i, j + 1)
            i = j + 1
            continue
        if c == ";":
            flush()
            i += 1
            continue
        if c == "\n":
            line += 1
        elif not c.isspace() and start_line is None:
            start_line = line
        buf.append(c)
        i += 1
    flush()
    return out


def sql_files() -> list[Path]:
    files = sorted(p for p in SQL_DIR.glob("*.sql") if re.match(r"^\d\d_", p.name))
    assert files, f"no numbered .sql files in {SQL_DIR}"
    return files


def rewrite(text: str, cfg: Cfg, table: str | None = None, used: set | None = None) -> str:
    """Replace the compose-default literals with this lake's values."""
    pairs = [
        (SHIPPED_URL, sql_str(cfg.base_url)),
        (SHIPPED_ACCESS_KEY, "access_key_id = " + sql_str(cfg.access_key)),
        (SHIPPED_SECRET_KEY, "secret_access_key = " + sql_str(cfg.secret_key)),
        (SHIPPED_TABLE, "'" + (table or cfg.table).replace("'", "\\'") + "/"),
    ]
    for old, new in pairs:
        if old in text and used is not None:
            used.add(old)
        text = text.replace(old, new)
    return text


def load_statements(cfg: Cfg, table: str | None = None) -> list[Statement]:
    used: set = set()
    statements = []
    for path in sql_files():
        statements += split_statements(rewrite(path.read_text(), cfg, table, used), path.name)
    unused = {SHIPPED_URL, SHIPPED_ACCESS_KEY, SHIPPED_SECRET_KEY, SHIPPED_TABLE} - used
    assert not unused, (
        f"sql/ no longer contains the literal(s) {sorted(unused)} the test rewrites; "
        "the files would run against the compose defaults. Update sql/README.md and this test."
    )
    return statements


# --------------------------------------------------------------------------------------------
# chdb


class Ch:
    """A chdb Session with a fresh data directory."""

    COUNTERS = ("EngineFileLikeReadFiles", "S3GetObject", "S3ListObjects", "S3HeadObject")

    def __init__(self):
        from chdb import session

        self.dir = tempfile.mkdtemp(prefix="lw-chdb-")
        self.session = session.Session(self.dir)

    def close(self):
        try:
            self.session.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def rows(self, sql: str) -> list[list]:
        res = self.session.query(sql, "JSONCompact")
        text = res.data() if hasattr(res, "data") else str(res)
        if not text or not text.strip():  # DDL; chdb 3.x returns None there
            return []
        return json.loads(text)["data"]

    def value(self, sql: str):
        rows = self.rows(sql)
        assert len(rows) == 1 and len(rows[0]) == 1, f"expected one value from {sql!r}, got {rows!r}"
        return rows[0][0]

    def counters(self) -> dict[str, int]:
        names = ", ".join(sql_str(n) for n in self.COUNTERS)
        got = {name: int(v) for name, v in self.rows(f"SELECT name, value FROM system.events WHERE name IN ({names})")}
        return {n: got.get(n, 0) for n in self.COUNTERS}

    def measure(self, sql: str) -> tuple[list[list], dict[str, int]]:
        before = self.counters()
        rows = self.rows(sql)
        after = self.counters()
        return rows, {k: after[k] - before[k] for k in self.COUNTERS}


def run_statements(ch: Ch, statements: list[Statement]) -> list[tuple[Statement, list[list]]]:
    results = []
    for st in statements:
        try:
            results.append((st, ch.rows(st.sql)))
        except Exception as e:  # chdb raises RuntimeError / ChdbError with the server's message
            first = "\n    ".join(st.sql.splitlines()[:6])
            raise AssertionError(f"{st.where()} failed:\n    {first}\n  -> {e}") from None
    return results


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def cfg() -> Cfg:
    return load_cfg()


@pytest.fixture(scope="module")
def s3(cfg):
    return make_fake_lake.s3_client(cfg.endpoint, cfg.access_key, cfg.secret_key)


_DATA_KEY_RE = re.compile(r"date=([^/]+)/event_type=([^/]*)/([^/]+)$")


@pytest.fixture(scope="module")
def listing(cfg, s3):
    """Objects under <prefix>/<table>/, as stored: {"data": [(key, date, raw_event_type)], "other": [...]}."""
    keys = make_fake_lake.list_keys_raw(s3, cfg.bucket, cfg.table_key_prefix)
    data, other = [], []
    for key in keys:
        m = _DATA_KEY_RE.fullmatch(key[len(cfg.table_key_prefix) :])
        if m and key.endswith(".parquet"):
            data.append((key, m.group(1), m.group(2)))
        else:
            other.append(key)
    assert data, f"no objects under s3://{cfg.bucket}/{cfg.table_key_prefix}date=*/event_type=*/*.parquet"
    return {"data": data, "other": other}


@pytest.fixture(scope="module")
def ch():
    c = Ch()
    yield c
    c.close()


@pytest.fixture(scope="module")
def applied(cfg, ch):
    """Every statement of sql/*.sql, run in order in the session; the results, by statement."""
    statements = load_statements(cfg)
    results = run_statements(ch, statements)
    for st, rows in results:
        shown = f"{len(rows)} row(s)" if rows else "ok"
        print(f"{st.where()}: {shown}" + (f"  checks={st.checks}" if st.checks else ""))
    return results


def unescape(raw: str) -> str:
    """Hive partition value in a path -> the value (as lake.events does it)."""
    return "" if raw == HIVE_DEFAULT else urllib.parse.unquote(raw)


def partition_counts(rows) -> dict[str, int]:
    return {f"{r[0]}|{r[1]}": int(r[2]) for r in rows}


def diff(got: dict, want: dict) -> str:
    keys = sorted(set(got) | set(want))
    bad = [f"  {k}: got {got.get(k)}, expected {want.get(k)}" for k in keys if got.get(k) != want.get(k)]
    return "\n".join(bad[:40]) + ("\n  ..." if len(bad) > 40 else "")


# --------------------------------------------------------------------------------------------
# Tests


def test_sql_files_run_in_order(applied):
    files = {st.file for st, _ in applied}
    assert files == {p.name for p in sql_files()}
    print(f"{len(applied)} statements from {len(files)} files ran without error")


def test_sql_checks_match_expected(cfg, applied):
    exp = cfg.expected
    done = []
    for st, rows in applied:
        for check in st.checks:
            if check == "by_partition":
                got = partition_counts(rows)
                assert got == exp["by_partition"], f"{st.where()}: counts differ:\n{diff(got, exp['by_partition'])}"
            elif check == "total":
                assert int(rows[0][0]) == exp["total"], f"{st.where()}: {rows[0][0]} != total {exp['total']}"
            elif check == "zero":
                assert int(rows[0][0]) == 0, f"{st.where()}: expected 0, got {rows[0][0]}"
            else:
                pytest.fail(f"{st.where()}: unknown check {check!r}")
            done.append(f"{st.file}#{st.index}:{check}")
    assert {c.split(":")[1] for c in done} >= {"by_partition", "total", "zero"}, done
    print("checked:", ", ".join(done))


def test_sql_files_run_on_an_empty_lake(cfg):
    """ClickHouse runs sql/ as init scripts, possibly before lakewriter has written a file."""
    empty_table = f"{cfg.table}__lw_empty_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, LW_TABLE=empty_table)
    proc = subprocess.run(
        [sys.executable, __file__, "--empty-lake-check"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"sql/ on an empty table directory ({empty_table}):\n{proc.stdout}\n{proc.stderr}"
    print(proc.stdout.strip())


def test_count_over_s3_glob_equals_total(cfg, ch, listing):
    got = int(ch.value(f"SELECT count() FROM {cfg.s3_fn('_offset Int64')}"))
    print(f"s3() glob {cfg.glob_url}: {got} rows in {len(listing['data'])} files; expected {cfg.expected['total']}")
    assert got == cfg.expected["total"]


def test_glob_reads_exactly_the_listed_parquet_files(cfg, ch, listing):
    nondata = [k for k in listing["other"] if "/date=" in "/" + k[len(cfg.table_key_prefix) :]]
    assert not nondata, f"objects under date=*/ that are not <date>/<event_type>/<name>.parquet: {nondata[:10]}"
    paths = [r[0] for r in ch.rows(f"SELECT DISTINCT _path FROM {cfg.s3_fn('_offset Int64')}")]
    assert not [p for p in paths if "/_lakewriter/" in p], "the glob matched internal state"
    want = {f"{cfg.bucket}/{key}" for key, _, _ in listing["data"]}
    # Files with zero rows produce no _path row; lakewriter does not write empty files.
    assert set(paths) == want, f"read but not listed: {sorted(set(paths) - want)[:5]}; listed but not read: {sorted(want - set(paths))[:5]}"
    print(f"{len(paths)} files read == {len(want)} listed; other objects under the table: {len(listing['other'])}")


def test_dedup_view_count_equals_total(cfg, ch, applied):
    total = cfg.expected["total"]
    raw = int(ch.value("SELECT count() FROM lake.events_s3"))
    distinct = int(ch.value("SELECT uniqExact(_topic, _partition, _offset) FROM lake.events_s3"))
    view = int(ch.value("SELECT count() FROM lake.events"))
    print(f"lake.events_s3: {raw} rows, {distinct} distinct records; lake.events: {view}; expected {total}")
    assert view == total, f"lake.events: {view} rows, expected {total}"
    assert distinct == total, f"{distinct} distinct (_topic, _partition, _offset) in the files, expected {total}"
    assert raw == total, f"{raw - distinct} duplicate rows visible in the files (lake.events hides them)"


def test_dedup_view_removes_duplicates(cfg, ch, applied):
    """Run the view's own SELECT over the lake read twice: still one row per record."""
    as_select = ch.value("SELECT as_select FROM system.tables WHERE database = 'lake' AND name = 'events'")
    assert as_select.count("lake.events_s3") == 1, as_select
    doubled = "(SELECT * FROM lake.events_s3 UNION ALL SELECT * FROM lake.events_s3)"
    twice = int(ch.value(f"SELECT count() FROM {doubled}"))
    deduped = int(ch.value(f"SELECT count() FROM ({as_select.replace('lake.events_s3', doubled)})"))
    print(f"lake read twice: {twice} rows; through the view's SELECT: {deduped}")
    assert twice == 2 * cfg.expected["total"]
    assert deduped == cfg.expected["total"]


def test_counts_per_partition(cfg, ch, applied):
    want = cfg.expected["by_partition"]
    via_s3 = partition_counts(
        ch.rows(
            f"SELECT date, if(event_type = '{HIVE_DEFAULT}', '', decodeURLComponent(event_type)) AS et, count() "
            f"FROM {cfg.s3_fn('_offset Int64')} GROUP BY date, et SETTINGS use_hive_partitioning = 1"
        )
    )
    via_view = partition_counts(ch.rows("SELECT date, event_type, count() FROM lake.events GROUP BY date, event_type"))
    odd = sorted(k for k in want if not re.fullmatch(r"[^|]+[|][a-z_]+", k))
    print(f"{len(want)} (date, event_type) partitions; values that need escaping: {odd}")
    assert via_s3 == want, "s3() glob:\n" + diff(via_s3, want)
    assert via_view == want, "lake.events:\n" + diff(via_view, want)


def test_date_is_the_event_times_date(cfg, ch, applied):
    bad = int(
        ch.value(f"SELECT countIf(date != toDate(_event_time, {sql_str(cfg.partition_tz)})) FROM lake.events_s3")
    )
    assert bad == 0, f"{bad} rows sit in a date= directory other than their _event_time's date ({cfg.partition_tz})"


def test_partition_pruning(cfg, ch, listing, applied):
    files_by_dir: dict[tuple[str, str], int] = {}
    for _, date, raw in listing["data"]:
        files_by_dir[(date, raw)] = files_by_dir.get((date, raw), 0) + 1
    total_files = len(listing["data"])
    plain = {d: n for d, n in files_by_dir.items() if re.fullmatch(r"[A-Za-z0-9_-]+", d[1])}
    assert len(files_by_dir) >= 2 and plain, "the lake needs two or more date/event_type directories to show pruning"
    (date, raw), n_files = max(plain.items(), key=lambda kv: (kv[1], kv[0]))
    value = unescape(raw)
    want_rows = cfg.expected["by_partition"].get(f"{date}|{value}")
    where = f"WHERE date = {sql_str(date)} AND event_type = {sql_str(raw)}"
    where_view = f"WHERE date = {sql_str(date)} AND event_type = {sql_str(value)}"
    ch.rows(f"DESCRIBE {cfg.s3_fn()}")  # schema inference outside the measurements

    cases = [
        ("s3() glob", cfg.s3_fn(), where),
        ("lake.events_s3", "lake.events_s3", where),
        ("lake.events (dedup view)", "lake.events", where_view),
    ]
    report = [f"directory date={date}/event_type={raw}: {n_files} of {total_files} files (boto3 list_objects_v2)"]
    for name, source, filt in cases:
        # sum(_offset) makes ClickHouse read column data, not only the (cached) footers.
        rows_all, all_ = ch.measure(f"SELECT count(), sum(_offset) FROM {source} SETTINGS use_hive_partitioning = 1")
        rows_one, one = ch.measure(f"SELECT count(), sum(_offset) FROM {source} {filt} SETTINGS use_hive_partitioning = 1")
        report.append(f"  {name}: unfiltered {all_} -> {rows_all[0][0]} rows; filtered {one} -> {rows_one[0][0]} rows")
        assert int(rows_all[0][0]) == cfg.expected["total"], name
        assert int(rows_one[0][0]) == want_rows, name
        assert all_["EngineFileLikeReadFiles"] == total_files, f"{name}: unfiltered read {all_} of {total_files} files"
        assert one["EngineFileLikeReadFiles"] == n_files, f"{name}: filtered query opened {one['EngineFileLikeReadFiles']} files, the directory has {n_files}"
        if n_files < total_files:
            assert one["S3GetObject"] < all_["S3GetObject"], f"{name}: GETs not reduced: {one} vs {all_}"
    print("\n".join(report))


def test_sample_event(cfg, ch, applied):
    sample = cfg.expected["sample"]
    topic, part, off = sample["_topic"], int(sample["_partition"]), int(sample["_offset"])
    key = f"_topic = {sql_str(topic)} AND _partition = {part} AND _offset = {off}"
    params = sample.get("event_params", {})
    ts = sample.get("event_timestamp_ms", {})

    # Where the record is, and the types its file holds.
    paths = ch.rows(f"SELECT DISTINCT _path FROM {cfg.s3_fn('_topic String, _partition Int32, _offset Int64')} WHERE {key}")
    assert paths, f"sample {topic}/{part}/{off} is in no file"
    if len(paths) > 1:  # duplicates fail test_dedup_view_count_equals_total; check the first copy
        print(f"note: the sample is stored in {len(paths)} files: {paths}")
    path = sorted(p[0] for p in paths)[0]
    # A glob for just this object's directory and name, with `*` for any special characters,
    # keeps %-escapes (and `?`, which would start a query string) out of the URL.
    obj_glob = f"{cfg.endpoint}/" + re.sub(r"[^A-Za-z0-9_./=-]+", "*", path)
    file_types = {
        name: typ for name, typ, *_ in ch.rows(f"DESCRIBE {cfg.s3_fn(url=obj_glob)} SETTINGS use_hive_partitioning = 0")
    }
    print(f"sample in {path}; types in the file: " + json.dumps(file_types, indent=None)[:2000])
    for col in ("_timestamp", "_event_time", "_ingested_at"):
        assert re.fullmatch(rf"(Nullable\()?{re.escape(DT64_UTC)}\)?", file_types.get(col, "")), (col, file_types.get(col))
    assert file_types.get("_partition") in ("Int32", "Nullable(Int32)"), file_types.get("_partition")
    assert file_types.get("_offset") in ("Int64", "Nullable(Int64)"), file_types.get("_offset")
    assert "date" not in file_types and "event_type" not in file_types, "partition columns stored inside the file"
    assert file_types.get("event_params", "").startswith("Tuple("), file_types.get("event_params")

    # The record through the dedup view.
    cols = [
        "toTypeName(_event_time)",
        "toUnixTimestamp64Micro(_event_time)",
        "toString(_event_time)",
        "event_type",
        "toString(date)",
        "event_params.user_id",
        "toTypeName(event_params.user_id)",
    ]
    rows = ch.rows(f"SELECT {', '.join(cols)} FROM lake.events WHERE {key}")
    assert len(rows) == 1, f"lake.events has {len(rows)} rows for the sample"
    typ, micros, shown, event_type, date, user_id, user_id_type = rows[0]
    print(f"lake.events: _event_time {shown} ({typ}), event_type {event_type!r}, date {date}, user_id {user_id} ({user_id_type})")
    assert typ == DT64_UTC
    assert int(micros) == expected_event_micros(sample), f"_event_time {shown} != {expected_event_micros(sample)} µs"
    if "user_id" in params:
        assert user_id == params["user_id"]
    if "event_type" in params:
        assert event_type == params["event_type"]

    # Every scalar field of the sample, nested ones by their dotted name, in the raw file.
    checks = {f"event_params.{k}": v for k, v in params.items() if not isinstance(v, (dict, list))}
    checks.update({f"event_timestamp_ms.{k}": v for k, v in ts.items() if not isinstance(v, (dict, list))})
    if checks:
        names = list(checks)
        got = ch.rows(f"SELECT {', '.join(names)} FROM {cfg.s3_fn(url=obj_glob)} WHERE {key} SETTINGS use_hive_partitioning = 0")
        assert len(got) == 1
        mismatched = {n: (g, checks[n]) for n, g in zip(names, got[0]) if str(g) != str(checks[n])}
        assert not mismatched, f"fields differ (got, produced): {mismatched}"


def expected_event_micros(sample: dict) -> int:
    if "_event_time" in sample:
        v = sample["_event_time"]
        if isinstance(v, (int, float)):
            return int(v)
        t = dt.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return int(t.timestamp()) * 1_000_000 + t.microsecond
    return int(sample["event_timestamp_ms"]["ts_ms"]) * 1000


# --------------------------------------------------------------------------------------------
# Child process for test_sql_files_run_on_an_empty_lake (a fresh chdb instance per process).


def _empty_lake_check() -> int:
    cfg = load_cfg()
    ch = Ch()
    try:
        results = run_statements(ch, load_statements(cfg))
        n = int(ch.value("SELECT count() FROM lake.events"))
        assert n == 0, f"lake.events over {cfg.table}/ has {n} rows, expected an empty directory"
        print(f"{len(results)} statements ran over the empty directory {cfg.table}/; lake.events is empty")
    finally:
        ch.close()
    return 0


if __name__ == "__main__" and "--empty-lake-check" in sys.argv:
    sys.exit(_empty_lake_check())
