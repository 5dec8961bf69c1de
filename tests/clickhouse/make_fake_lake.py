#!/usr/bin/env python3
"""Write a small lake with exactly the layout and schema lakewriter writes.

Lets the ClickHouse SQL and its test (`test_sql.py`) be developed and re-checked without the
Rust writer. The real acceptance run uses a lake written by lakewriter itself.

Layout (the fixed contract, see docs/clickhouse.md):

    <bucket>/<prefix>/<table>/date=YYYY-MM-DD/event_type=<hive-escaped>/<topic>-<partition>-<offset:020>.parquet
    <bucket>/<prefix>/_lakewriter/...            internal state, never matched by the date=* glob

Each file holds rows of one Kafka partition, one date and one event type. Columns: the event's
top-level JSON fields (`event_params`, `event_timestamp_ms` as Parquet structs; the struct's
fields depend on the event type, as in the clickstream generator) plus `_topic` string,
`_partition` int32, `_offset` int64, `_timestamp` / `_event_time` / `_ingested_at`
timestamp[us, UTC], `_key` binary (nullable). No `date` / `event_type` columns inside the files.

It also writes the expectation file the test reads (`LW_EXPECTED`):

    {"total": N, "by_partition": {"2024-05-18|track_playback": n, ...},
     "sample": {<one event's JSON>, "_topic": ..., "_partition": ..., "_offset": ...}}

Usage (upload to an S3 server, e.g. s3s-fs or MinIO):

    python3 tests/clickhouse/make_fake_lake.py --endpoint http://127.0.0.1:9555 \
        --access-key K --secret-key S --bucket lake --prefix events --table clickstream \
        --expected /tmp/fakelake_expected.json

or write straight into a directory (`--out-dir ROOT`; ROOT/<bucket>/... is created), which an
S3 server that maps buckets to directories (s3s-fs) can then serve.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import sys
import uuid
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

# event type -> (event_type_id, weight, fields after `country`)
EVENT_TYPES = {
    "track_playback": (1, 0.35, ["uuid_track"]),
    "pause_track": (2, 0.15, ["uuid_track"]),
    "resume_track": (3, 0.13, ["uuid_track"]),
    "skipping_track_next": (4, 0.12, ["uuid_track_prev", "uuid_track_current"]),
    "skipping_track_prev": (5, 0.07, ["uuid_track_prev", "uuid_track_current"]),
    "adding_track_to_playlist": (6, 0.08, ["uuid_track", "uuid_playlist"]),
    "track_like": (7, 0.06, ["uuid_track_like_status"]),
    "track_unlike": (8, 0.04, ["uuid_track_like_status"]),
}
# Values for --odd-event-types: each needs escaping in a path (or maps to Hive's default).
ODD_EVENT_TYPES = ["a/b", "50%", "", "..", "x=y?#", "sp ace+plus"]
COUNTRIES = ["RU", "KZ", "BY", "DE", "US", "BR", "IN", "FR", "GB", "JP"]
PLATFORMS = ["web", "android", "ios", "smart_tv"]

# Characters lakewriter percent-encodes in a partition value (Hive's escaping rules).
_HIVE_ESCAPE = set('/=%"#\'*:?\\{[]^')


def hive_escape(value: str) -> str:
    """Hive-style escaping of a partition value, as lakewriter does it."""
    if value == "":
        return "__HIVE_DEFAULT_PARTITION__"
    if value in (".", ".."):
        return "".join("%%%02X" % ord(c) for c in value)
    out = []
    for c in value:
        if c in _HIVE_ESCAPE or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append("%%%02X" % ord(c))
        else:
            out.append(c)
    return "".join(out)


def make_events(n: int, rng: random.Random, start_ms: int, span_ms: int, n_users: int):
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_users)]
    tracks = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(200)]
    names = list(EVENT_TYPES)
    weights = [EVENT_TYPES[t][1] for t in names]
    events = []
    for _ in range(n):
        et = rng.choices(names, weights)[0]
        type_id, _, extra = EVENT_TYPES[et]
        ts_ms = start_ms + rng.randrange(span_ms)
        params = {
            "event_type_id": type_id,
            "event_type": et,
            "user_id": rng.choice(users),
            "platform_token": rng.choice(PLATFORMS),
            "ipv4": ".".join(str(rng.randrange(1, 255)) for _ in range(4)),
            "country": rng.choice(COUNTRIES),
        }
        for f in extra:
            params[f] = rng.choice(tracks)
        events.append(
            {"event_params": params, "event_timestamp_ms": {"ts": ts_ms // 1000, "ts_ms": ts_ms}}
        )
    return events


def arrow_schema(event_type: str) -> pa.Schema:
    _, _, extra = EVENT_TYPES.get(event_type, EVENT_TYPES["track_playback"])
    ts = pa.timestamp("us", tz="UTC")
    params = pa.struct(
        [
            ("event_type_id", pa.int64()),
            ("event_type", pa.string()),
            ("user_id", pa.string()),
            ("platform_token", pa.string()),
            ("ipv4", pa.string()),
            ("country", pa.string()),
        ]
        + [(f, pa.string()) for f in extra]
    )
    return pa.schema(
        [
            ("event_params", params),
            ("event_timestamp_ms", pa.struct([("ts", pa.int64()), ("ts_ms", pa.int64())])),
            # Metadata columns: never null, except the Kafka key.
            pa.field("_topic", pa.string(), nullable=False),
            pa.field("_partition", pa.int32(), nullable=False),
            pa.field("_offset", pa.int64(), nullable=False),
            pa.field("_timestamp", ts, nullable=False),
            pa.field("_key", pa.binary(), nullable=True),
            pa.field("_event_time", ts, nullable=False),
            pa.field("_ingested_at", ts, nullable=False),
        ]
    )


def parquet_bytes(rows: list[dict], event_type: str) -> bytes:
    schema = arrow_schema(event_type)
    cols = {name: [r[name] for r in rows] for name in schema.names}
    table = pa.table(cols, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=max(1, len(rows) // 2 or 1))
    return buf.getvalue()


def build(args) -> tuple[dict[str, bytes], dict]:
    """Return ({object key: bytes}, expectation)."""
    rng = random.Random(args.seed)
    start = dt.datetime.fromisoformat(args.start_date).replace(tzinfo=dt.timezone.utc)
    start_ms = int(start.timestamp() * 1000)
    events = make_events(args.events, rng, start_ms, args.days * 86_400_000, args.users)
    if args.odd_event_types:
        # Untrusted partition values that need Hive escaping; the SQL must give them back as is.
        for i, value in enumerate(ODD_EVENT_TYPES * 3):
            ev = json.loads(json.dumps(events[i]))
            ev["event_params"]["event_type"] = value
            ev["event_params"].pop("uuid_track_prev", None)
            ev["event_params"].pop("uuid_track_current", None)
            ev["event_params"].pop("uuid_playlist", None)
            ev["event_params"].pop("uuid_track_like_status", None)
            ev["event_params"]["uuid_track"] = "00000000-0000-4000-8000-000000000000"
            events.append(ev)

    # Produce: events go round-robin-ish (by user) to Kafka partitions and get offsets in order.
    by_kpart: dict[int, list] = defaultdict(list)
    for ev in events:
        kp = hash_user(ev["event_params"]["user_id"]) % args.kafka_partitions
        by_kpart[kp].append(ev)

    ingested = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rows_by_file_group: dict[tuple, list] = defaultdict(list)
    for kp, evs in sorted(by_kpart.items()):
        for off, ev in enumerate(evs):
            ts_ms = ev["event_timestamp_ms"]["ts_ms"]
            event_time = dt.datetime.fromtimestamp(ts_ms / 1000, dt.timezone.utc)
            record_time = event_time + dt.timedelta(milliseconds=rng.randrange(5, 2000))
            key = ev["event_params"]["user_id"].encode() if off % 7 else None
            row = dict(ev)
            row.update(
                _topic=args.topic,
                _partition=kp,
                _offset=off,
                _timestamp=record_time,
                _key=key,
                _event_time=event_time,
                _ingested_at=ingested,
            )
            date = event_time.strftime("%Y-%m-%d")
            et = ev["event_params"]["event_type"]
            rows_by_file_group[(kp, date, et)].append(row)

    base = "/".join(p for p in (args.prefix.strip("/"), args.table) if p)
    objects: dict[str, bytes] = {}
    by_partition: dict[str, int] = defaultdict(int)
    for (kp, date, et), rows in sorted(rows_by_file_group.items()):
        # Cut files of at most --rows-per-file rows, named by their first offset.
        for i in range(0, len(rows), args.rows_per_file):
            chunk = rows[i : i + args.rows_per_file]
            name = "%s-%d-%020d.parquet" % (args.topic, kp, chunk[0]["_offset"])
            key = f"{base}/date={date}/event_type={hive_escape(et)}/{name}"
            objects[key] = parquet_bytes(chunk, et)
        by_partition[f"{date}|{et}"] += len(rows)

    # Internal state that must never be read by the date=* glob (a recovery record and a
    # dead-letter Parquet file under <prefix>/_lakewriter/).
    state = "/".join(p for p in (args.prefix.strip("/"), "_lakewriter") if p)
    objects[f"{state}/recovery/{args.topic}-0-00000000000000000000.json"] = json.dumps(
        {"files": [], "ranges": {}}
    ).encode()
    first_group = sorted(rows_by_file_group)[0]
    objects[f"{state}/dead_letters/{args.table}/date=1970-01-01/event_type=track_playback/dl.parquet"] = (
        parquet_bytes(rows_by_file_group[first_group][:1], "track_playback")
    )

    # The sample: one full event as produced, plus its Kafka coordinates.
    all_rows = [r for rows in rows_by_file_group.values() for r in rows]
    s = rng.choice(all_rows)
    sample = {"event_params": s["event_params"], "event_timestamp_ms": s["event_timestamp_ms"]}
    sample.update(_topic=s["_topic"], _partition=s["_partition"], _offset=s["_offset"])
    expected = {"total": len(all_rows), "by_partition": dict(sorted(by_partition.items())), "sample": sample}
    return objects, expected


def s3_client(endpoint: str, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )


def list_keys_raw(s3, bucket: str, prefix: str) -> list[str]:
    """All keys under prefix, exactly as stored.

    boto3 asks for EncodingType=url and URL-decodes the keys it gets back. s3s-fs 0.14 echoes
    EncodingType=url without encoding, so boto3 turns a stored `event_type=a%2Fb` into `a/b`
    (and `+` into a space). Without EncodingType the server returns the keys verbatim (XML-escaped),
    which is right for every server.
    """
    from botocore.handlers import decode_list_object_v2, set_list_objects_encoding_type_url

    s3.meta.events.unregister("before-parameter-build.s3.ListObjectsV2", set_list_objects_encoding_type_url)
    s3.meta.events.unregister("after-call.s3.ListObjectsV2", decode_list_object_v2)
    keys: list[str] = []
    token = None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]


def hash_user(user_id: str) -> int:
    # Stable across runs (Python's hash() is salted).
    return int(user_id.replace("-", "")[:8], 16)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("--endpoint", help="S3 endpoint (http://host:port), path-style; uploads with boto3")
    dest.add_argument("--out-dir", help="write objects as files under OUT_DIR/<bucket>/<key>")
    p.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "K"))
    p.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "S"))
    p.add_argument("--bucket", default="lake")
    p.add_argument("--prefix", default="events")
    p.add_argument("--table", default="clickstream")
    p.add_argument("--topic", default="clickstream")
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--start-date", default="2024-05-18")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--kafka-partitions", type=int, default=3)
    p.add_argument("--rows-per-file", type=int, default=60)
    p.add_argument(
        "--odd-event-types",
        action="store_true",
        help="also write a few events whose event_type needs Hive escaping (a/b, 50%%, '', .., ...)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--clean", action="store_true", help="delete every object under <prefix>/ first (S3 only)")
    p.add_argument("--expected", required=True, help="where to write the expectation JSON")
    args = p.parse_args(argv)

    objects, expected = build(args)
    if args.out_dir:
        for key, data in objects.items():
            path = os.path.join(args.out_dir, args.bucket, *key.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    else:
        s3 = s3_client(args.endpoint, args.access_key, args.secret_key)
        try:
            s3.head_bucket(Bucket=args.bucket)
        except Exception:
            s3.create_bucket(Bucket=args.bucket)
        if args.clean:
            prefix = args.prefix.strip("/") + "/" if args.prefix.strip("/") else ""
            for key in list_keys_raw(s3, args.bucket, prefix):
                s3.delete_object(Bucket=args.bucket, Key=key)
        for key, data in objects.items():
            s3.put_object(Bucket=args.bucket, Key=key, Body=data)
    with open(args.expected, "w") as f:
        json.dump(expected, f, indent=1)
    n_files = sum(1 for k in objects if "/date=" in k and "_lakewriter" not in k)
    print(
        f"wrote {expected['total']} events in {n_files} files "
        f"({len(expected['by_partition'])} date/event_type directories); expectation: {args.expected}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
