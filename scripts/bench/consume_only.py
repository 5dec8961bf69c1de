#!/usr/bin/env python3
"""The broker's consume-only ceiling: read every record of a topic with a
fresh consumer group and do nothing with it (librdkafka via confluent-kafka,
batched `consume()`), so the cost is the broker's plus the client's.

Stops when it has read the sum of the high watermarks seen at start.
Writes JSON stats (events, bytes, wall, first-record time) to --stats.
"""

import argparse
import time

from confluent_kafka import Consumer

from common import Deadline, end_offsets, write_stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()

    t0 = time.monotonic()
    expect, parts = end_offsets(a.brokers, a.topic)
    c = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([a.topic])
    deadline = Deadline(a.timeout)
    events = nbytes = errors = 0
    first = None
    while events < expect and not deadline.passed():
        msgs = c.consume(num_messages=10000, timeout=1.0)
        for m in msgs:
            if m.error():
                errors += 1
                continue
            events += 1
            nbytes += len(m.value() or b"")
        if msgs and first is None:
            first = time.monotonic()
    done = time.monotonic()
    c.close()
    write_stats(a.stats, {
        "name": "consume-only",
        "expected": expect,
        "partitions": parts,
        "events": events,
        "errors": errors,
        "bytes_in": nbytes,
        "wall_s": done - t0,
        "first_record_s": (first - t0) if first else None,
        "steady_rate": events / (done - first) if first and done > first else None,
        "complete": events >= expect,
    })


if __name__ == "__main__":
    main()
