#!/usr/bin/env python3
"""A directory of >= MIB MiB of distinct rows from one of the writer's directories (the compact pass
of scripts/bench.sh).

    distinct_dir.py SRC_DIR OUT_DIR MIB

Copies SRC_DIR's Parquet files again and again, each copy's `_event_time` shifted past the previous
copy's and its `_offset` 10,000,000 further, until OUT_DIR holds MIB MiB. Unlike plain copies, whose
identical rows become neighbours once sorted (the merged file compresses ~100x), these rows are
distinct: the merge's output is as large as its input. The footers' key-value metadata (the writer's
`lakewriter.*` keys) are kept; pyarrow writes the files (zstd level 3, its default encodings).
"""

import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main(src, out, mib):
    files = sorted(f for f in os.listdir(src) if f.endswith(".parquet"))
    tables = [(f, pq.read_table(os.path.join(src, f)), pq.ParquetFile(os.path.join(src, f)).metadata.metadata) for f in files]
    lo = min(pc.min(t["_event_time"]).value for _, t, _ in tables)
    hi = max(pc.max(t["_event_time"]).value for _, t, _ in tables)
    span = hi - lo + 1
    os.makedirs(out, exist_ok=True)
    total, i = 0, 0
    while total < mib * 1048576:
        for name, t, kv in tables:
            time_field = t.schema.field("_event_time")
            times = pc.add(t["_event_time"].cast(pa.int64()), i * span).cast(time_field.type)
            u = t.set_column(t.schema.get_field_index("_event_time"), time_field, times)
            u = u.set_column(u.schema.get_field_index("_offset"), u.schema.field("_offset"),
                             pc.add(t["_offset"], i * 10_000_000))
            path = os.path.join(out, f"copy{i}-{name}")
            pq.write_table(u.replace_schema_metadata(kv), path, compression="zstd", compression_level=3)
            total += os.path.getsize(path)
        i += 1
    print(i)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
