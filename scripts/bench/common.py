"""Shared bits of the benchmark's Python consumers (scripts/bench.sh)."""

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition


def end_offsets(brokers, topic, timeout=15.0):
    """Sum of the high watermarks of `topic`: what a pass must read to be done."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-watermarks", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=timeout)
        parts = sorted(md.topics[topic].partitions)
        total = 0
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            total += high - low
        return total, len(parts)
    finally:
        c.close()


def write_stats(path, stats):
    with open(path, "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats), file=sys.stderr)


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def passed(self):
        return time.monotonic() >= self.end
