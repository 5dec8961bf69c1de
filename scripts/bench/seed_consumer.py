#!/usr/bin/env python3
"""The seeds' Python consumer ("Kafka for data engineers", brief seeds.md item
5), reconstructed as the baseline lakewriter is compared with.

As in the seed: a confluent-kafka consumer with auto-commit on polls one
message at a time, `json.loads` each value, collects BATCH_SIZE of them,
flattens the batch with `pandas.json_normalize`, writes it with
`DataFrame.to_parquet` (pyarrow, its default snappy compression) and puts it
to S3 as `<prefix>/<wall-clock date>/<uuid4>.parquet` (boto3 against the local
S3 server instead of MinIO).

Two changes for benchmarking only: it stops once it has read the sum of the
high watermarks seen at start (writing the last, partial batch), and it
writes JSON stats to --stats.
"""

import argparse
import io
import json
import os
import time
import uuid
from datetime import datetime

import boto3
import pandas as pd
from confluent_kafka import Consumer

from common import Deadline, end_offsets, write_stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()

    t0 = time.monotonic()
    expect, parts = end_offsets(a.brokers, a.topic)
    BATCH_SIZE = a.batch_size

    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    consumer = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    })
    consumer.subscribe([a.topic])

    stats = {"files": 0, "rows": 0, "bytes_out": 0}

    def write_batch(batch):
        df = pd.json_normalize(batch)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        body = buf.getvalue()
        key = f"{a.prefix}/{datetime.now().strftime('%Y-%m-%d')}/{uuid.uuid4()}.parquet"
        s3.put_object(Bucket=a.bucket, Key=key, Body=body)
        stats["files"] += 1
        stats["rows"] += len(df)
        stats["bytes_out"] += len(body)

    deadline = Deadline(a.timeout)
    batch = []
    events = nbytes = bad = 0
    while events < expect and not deadline.passed():
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            print(f"Consumer error: {msg.error()}")
            continue
        events += 1
        value = msg.value() or b""
        nbytes += len(value)
        try:
            batch.append(json.loads(value.decode("utf-8")))
        except Exception as e:  # the seed prints and goes on
            bad += 1
            print(f"bad message: {e}")
        if len(batch) >= BATCH_SIZE:
            write_batch(batch)
            batch = []
    if batch:
        write_batch(batch)
    done = time.monotonic()
    consumer.close()  # commits the auto-commit offsets
    write_stats(a.stats, {
        "name": f"seed-python-batch-{BATCH_SIZE}",
        "expected": expect,
        "partitions": parts,
        "events": events,
        "bad": bad,
        "bytes_in": nbytes,
        "wall_s": done - t0,
        "complete": events >= expect,
        **stats,
    })


if __name__ == "__main__":
    main()
