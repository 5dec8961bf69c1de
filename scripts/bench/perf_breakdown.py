#!/usr/bin/env python3
"""Group a flat CPU profile by component.

Reads `perf report --no-children --sort dso,symbol --stdio -g none` on stdin
and prints a Markdown table: the share of samples whose *self* time is in
each component (zstd, parquet, arrow-json, JSON routing, librdkafka, the
allocator, the kernel, ...). Self time, so e.g. `memcpy` called from the
Parquet writer counts as "memcpy/memset", not as "parquet".
"""

import re
import sys

COMPONENTS = [
    ("kernel (syscalls, page faults, scheduling)", r"^\[k\]"),
    ("zstd compression (Parquet pages)", r"\b(ZSTD_|HUF_|HIST_|FSE_|ZSTDMT_)"),
    ("snappy", r"snap"),
    ("parquet writer (encoding, dictionaries, stats)", r"\bparquet::"),
    ("arrow-json decode", r"\barrow_json::"),
    ("arrow (other kernels: sort, take, concat, builders)", r"\barrow_"),
    ("serde_json (routing scan, schema sampling)", r"\bserde_json::|serde_core::"),
    ("lakewriter's own code (route, buffer, pipeline)", r"\blakewriter::"),
    ("librdkafka (Kafka client)", r"\b(rd_kafka|rd_|rdk)"),
    ("rdkafka Rust binding", r"\brdkafka::"),
    ("S3 client / HTTP / TLS / signing", r"\b(aws_|hyper|h2::|http::|rustls|ring::|sha2|md5|crc|aws_lc)"),
    ("tokio runtime", r"\btokio::|mio::"),
    ("hashing (SipHash/ahash/hashbrown)", r"hash|Hasher|hashbrown"),
    ("malloc/free", r"malloc|free|_int_|realloc|calloc|unlink_chunk|tcache|arena"),
    ("memcpy/memset/memcmp", r"mem(move|cpy|set|cmp|chr)|memchr::"),
    ("UTF-8 validation", r"from_utf8|run_utf8_validation"),
    ("Rust std (Vec growth, BTreeMap, fmt), chrono", r"\b(alloc::|core::|std::|__rust|__rdl|chrono::)"),
]


def main():
    rows = []
    for line in sys.stdin:
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+(\[[.k]\])\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        rows.append((pct, dso, kind, sym))
    totals = {}
    for pct, dso, kind, sym in rows:
        text = f"{kind} {sym}" if kind == "[k]" else sym
        name = "other"
        for label, pat in COMPONENTS:
            if re.search(pat, text if label.startswith("kernel") else sym):
                name = label
                break
        if kind == "[k]":
            name = COMPONENTS[0][0]
        totals[name] = totals.get(name, 0.0) + pct
    print("| component (self time) | share of samples |")
    print("|---|---:|")
    for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {pct:.1f}% |")


if __name__ == "__main__":
    main()
