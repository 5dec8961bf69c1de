#!/usr/bin/env python3
"""The compaction pass of scripts/bench.sh: reader queries before and after, and the report.

    compact.py queries --url GLOB --access-key K --secret-key S --start-ms MS --out FILE [--before FILE]
        Times three queries with chdb (in-process ClickHouse) over the lake's s3() glob, best of
        --reps (3): a full scan (count by event type), one hour of _event_time (count), one
        directory (date, event type; count). The hour is the first whole hour starting a day
        after --start-ms; the directory is that day's largest. ClickHouse's per-file caches (rows
        per file, Parquet footers) are off, so every repetition opens every file it needs.
        With --before (the answers before compaction): the same queries with the same
        parameters, and exit 1 unless every answer is equal.

    compact.py dir DIR --json FILE [--source TEXT]
        The data files below DIR (*.parquet, not under _lakewriter/): count, bytes, sizes.

    compact.py report RUN_DIR [--flush-rows N]
        Markdown for summary.md from the pass's files in RUN_DIR, each run NAME of
        `lakewriter compact` leaving NAME.time (time -v), NAME.out (its summary line),
        NAME.log (JSON log, one "merged" line per merge), NAME.s3ops and NAME.{before,after}.json
        (`dir` of what it compacted):
          compact-s3        the lake of small files that compact-write wrote, through S3
          compact-big       one directory of >= 2 GiB, file:// (its `dir` before: compact-big.before.json)
          compact-big-s3    the same directory through S3
          compact-distinct  >= 2 GiB of distinct rows in one directory, file:// (scripts/bench/distinct_dir.py;
                            its `dir` before: compact-distinct.before.json)
        and compact-before.json, compact-after.json (`queries`).
"""

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time

from report import parse_time  # scripts/bench/report.py: `time -v` output, shared by every pass

# Targets (product spec).
TARGET_MB_PER_CPU_S = 50.0
TARGET_QUERY_RATIO = 1 / 5
TARGET_RSS_MB = 300

STRUCTURE = "_event_time DateTime64(6, 'UTC')"
# Every repetition cold: no cached row counts per file, no cached Parquet footers.
SETTINGS = "use_hive_partitioning = 1, use_cache_for_count_from_files = 0, use_parquet_metadata_cache = 0"
COUNTERS = ("EngineFileLikeReadFiles", "S3GetObject", "S3ListObjects")


def q(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Ch:
    def __init__(self):
        from chdb import session

        self.dir = tempfile.mkdtemp(prefix="lw-bench-chdb-")
        self.s = session.Session(self.dir)

    def rows(self, sql):
        res = self.s.query(sql, "JSONCompact")
        text = res.data() if hasattr(res, "data") else str(res)
        return json.loads(text)["data"] if text and text.strip() else []

    def counters(self):
        names = ", ".join(q(n) for n in COUNTERS)
        got = {n: int(v) for n, v in self.rows(f"SELECT name, value FROM system.events WHERE name IN ({names})")}
        return {n: got.get(n, 0) for n in COUNTERS}

    def close(self):
        import shutil

        self.s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def queries(a):
    src = f"s3({q(a.url)}, {q(a.access_key)}, {q(a.secret_key)}, 'Parquet', {q(STRUCTURE)})"
    ch = Ch()
    try:
        if a.before:
            with open(a.before) as f:
                before = json.load(f)
            params = before["params"]
        else:
            before = None
            hour_ms = (a.start_ms + 86_400_000) // 3_600_000 * 3_600_000 + 3_600_000
            hour = dt.datetime.fromtimestamp(hour_ms / 1000, dt.timezone.utc)
            day = hour.strftime("%Y-%m-%d")
            # Untimed: the day's largest directory.
            top = ch.rows(f"SELECT event_type, count() AS n FROM {src} WHERE date = {q(day)} "
                          f"GROUP BY event_type ORDER BY n DESC, event_type LIMIT 1 SETTINGS {SETTINGS}")
            params = {"hour": hour.strftime("%Y-%m-%d %H:%M:%S"), "date": day, "event_type": top[0][0] if top else ""}
        x = f"toDateTime64({q(params['hour'])}, 6, 'UTC')"
        sqls = {
            "full scan": f"SELECT event_type, count() FROM {src} GROUP BY event_type ORDER BY event_type SETTINGS {SETTINGS}",
            "one hour": f"SELECT count() FROM {src} WHERE _event_time >= {x} AND _event_time < {x} + INTERVAL 1 HOUR SETTINGS {SETTINGS}",
            "one directory": f"SELECT count() FROM {src} WHERE date = {q(params['date'])} AND event_type = {q(params['event_type'])} "
                             f"SETTINGS {SETTINGS}",
        }
        out = {"params": params, "queries": {}}
        for name, sql in sqls.items():
            times, answer, counts = [], None, None
            for _ in range(a.reps):
                c0 = ch.counters()
                t0 = time.perf_counter()
                got = ch.rows(sql)
                times.append((time.perf_counter() - t0) * 1000)
                c1 = ch.counters()
                if answer is not None and got != answer:
                    raise SystemExit(f"{name}: the answer changed between repetitions: {answer} then {got}")
                answer, counts = got, {k: c1[k] - c0[k] for k in COUNTERS}
            out["queries"][name] = {"sql": sql, "ms": times, "best_ms": min(times), "answer": answer, "counters": counts}
            print(f"compact queries: {name}: best {min(times):.0f} ms of {', '.join(f'{t:.0f}' for t in times)}; "
                  f"answer {json.dumps(answer)}; {counts}", file=sys.stderr)
    finally:
        ch.close()
    bad = []
    if before:
        for name, r in out["queries"].items():
            b = before["queries"][name]["answer"]
            r["equal"] = r["answer"] == b
            if not r["equal"]:
                bad.append(f"{name}: {b} before, {r['answer']} after")
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)
    if bad:
        print("compact queries: ANSWERS DIFFER after compaction: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


def dirinfo(a):
    """The data files (*.parquet, not under _lakewriter/) below DIR: count, bytes, sizes, into --json."""
    sizes = []
    for root, dirs, files in os.walk(a.dir):
        dirs[:] = [d for d in dirs if d != "_lakewriter"]
        sizes += [os.path.getsize(os.path.join(root, n)) for n in files if n.endswith(".parquet")]
    sizes.sort(reverse=True)
    with open(a.json, "w") as f:
        json.dump({"files": len(sizes), "bytes": sum(sizes), "sizes": sizes, "source": a.source}, f, indent=2)
    return 0


# ------------------------------------------------------------------------------------------ report


def json_fields(path, message):
    if not os.path.exists(path):
        return []
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == message:
                out.append(fields)
    return out


SUMMARY = re.compile(r"compaction: (\d+) merges, (\d+) files \(([\d.]+) MB\) → (\d+) files \(([\d.]+) MB\), (\d+) rows")


def compaction(run, name):
    """One `lakewriter compact` run: time -v, its summary line, its merges."""
    t = os.path.join(run, name + ".time")
    if not os.path.exists(t):
        return None
    r = {"name": name, **parse_time(t)}
    r["rss_mib"] = r.pop("rss_mb", 0.0)  # report.py's name; the figure is KiB / 1024
    if "user_s" in r:
        r["cpu_s"] = r["user_s"] + r["sys_s"]
    with open(os.path.join(run, name + ".out"), errors="replace") as f:
        r["summary"] = next((l.strip() for l in f if l.startswith("compaction:")), None)
    m = SUMMARY.search(r["summary"] or "")
    if m:
        r.update(merges=int(m[1]), files_in=int(m[2]), mb_in=float(m[3]), files_out=int(m[4]), mb_out=float(m[5]), rows=int(m[6]))
    merges = json_fields(os.path.join(run, name + ".log"), "merged")
    if merges:
        r["bytes_in"] = sum(x["bytes_in"] for x in merges)
        r["bytes_out"] = sum(x["bytes_out"] for x in merges)
        for k in ("download_ms", "merge_ms", "commit_ms"):
            r[k] = sum(x.get(k, 0) for x in merges)
        r["merge_inputs"] = [x["inputs"] for x in merges]
    if r.get("cpu_s") and r.get("bytes_in"):
        r["mb_per_cpu_s"] = r["bytes_in"] / 1e6 / r["cpu_s"]
    ops = os.path.join(run, name + ".s3ops")
    if os.path.exists(ops):
        with open(ops) as f:
            r["s3_ops"] = {p[1]: int(p[0]) for p in (l.split() for l in f) if len(p) == 2}
    return r


def phases(r):
    tot = sum(r.get(k, 0) for k in ("download_ms", "merge_ms", "commit_ms")) or 1
    return ", ".join(f"{k[:-3]} {r[k] / 1000:.1f} s ({r[k] / tot:.0%})" for k in ("download_ms", "merge_ms", "commit_ms"))


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


LABELS = {
    "compact-s3": "lake of small files, S3",
    "compact-big": "one ≥ 2 GiB directory, file://",
    "compact-big-s3": "the same directory, S3",
    "compact-distinct": "≥ 2 GiB of distinct rows in one directory, file://",
}


def report(a):
    run = a.run_dir
    runs = [r for r in (compaction(run, n) for n in LABELS) if r]
    if not runs:
        print("compact: no results (see the compact-* files in the run directory)")
        return 0
    lines = ["Compaction, `lakewriter compact --once --min-age 0s --grace 1s` (target file size 256 MiB):", ""]
    lines.append("| run | merges | input files | input MB | output files | output MB | rows merged | wall s | CPU user+sys s "
                 "| MB of input per CPU-second | peak RSS MiB |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        flag = "" if r.get("exit", 0) == 0 else f" (exit {r.get('exit')})"
        lines.append(f"| {r['name']}: {LABELS[r['name']]}{flag} | {r.get('merges', '–')} | {r.get('files_in', 0):,} | {r.get('mb_in', 0):,.1f} | "
                     f"{r.get('files_out', 0):,} | {r.get('mb_out', 0):,.1f} | {r.get('rows', 0):,} | {r.get('wall_s', 0):.1f} | "
                     f"{r.get('cpu_s', 0):.2f} | {r.get('mb_per_cpu_s', 0):.1f} | {r.get('rss_mib', 0):.0f} |")
    lines.append("")
    by = {r["name"]: r for r in runs}
    s3 = by.get("compact-s3")
    if s3:
        w = json_fields(os.path.join(run, "compact-write.log"), "stopped after draining")
        b, af = load_json(os.path.join(run, "compact-s3.before.json")), load_json(os.path.join(run, "compact-s3.after.json"))
        if w:
            lines.append(f"- compact-s3: the lake, written by `lakewriter run --until-caught-up --flush-rows {a.flush_rows}` (compact-write): "
                         f"{w[0].get('rows', 0):,} rows in {w[0].get('files', 0):,} files, {w[0].get('bytes_out', 0) / 1e6:.1f} MB")
        if b and af:
            lines.append(f"- compact-s3: data files before → after: {b['files']:,} ({b['bytes'] / 1e6:.1f} MB) → {af['files']:,} "
                         f"({af['bytes'] / 1e6:.1f} MB)")
            if s3.get("cpu_s") and s3.get("bytes_in"):
                lines.append(f"- compact-s3: per CPU-second, {b['bytes'] / 1e6 / s3['cpu_s']:.1f} MB of the lake's Parquet "
                             f"({s3.get('mb_per_cpu_s', 0):.1f} MB of merge input: tiered merges read "
                             f"{s3.get('bytes_in', 0) / b['bytes']:.2f}× the lake's bytes)")
        lines.append(f"- compact-s3: {s3.get('summary')}")
        if s3.get("merge_inputs"):
            lines.append(f"- compact-s3: inputs per merge {', '.join(map(str, s3['merge_inputs']))}; wall time in merges: {phases(s3)}")
        if s3.get("s3_ops"):
            lines.append("- compact-s3: S3 requests " + ", ".join(f"{k} {v:,}" for k, v in sorted(s3["s3_ops"].items(), key=lambda kv: -kv[1])))
        if s3.get("mb_per_cpu_s"):
            v = s3["mb_per_cpu_s"]
            lines.append(f"- compaction throughput: {v:.1f} MB of input Parquet per CPU-second (target ≥ {TARGET_MB_PER_CPU_S:.0f}) → "
                         + ("met" if v >= TARGET_MB_PER_CPU_S else "MISSED"))
    for name in ("compact-big", "compact-big-s3", "compact-distinct"):
        r = by.get(name)
        if not r:
            continue
        big = load_json(os.path.join(run, ("compact-distinct" if name == "compact-distinct" else "compact-big") + ".before.json"))
        after = load_json(os.path.join(run, name + ".after.json"))
        if big:
            lines.append(f"- {name}: one directory of {big['files']:,} files, {big['bytes'] / 1e9:.2f} GB ({big.get('source', '')})")
        if r.get("merge_inputs"):
            lines.append(f"- {name}: inputs per merge {', '.join(map(str, r['merge_inputs']))}; "
                         f"{r.get('bytes_in', 0) / 1e9:.2f} GB merged in all; wall time in merges: {phases(r)}")
        if after:
            lines.append(f"- {name}: the directory after: {after['files']} files, {after['bytes'] / 1e6:,.1f} MB")
        if r.get("rss_mib") and big:
            lines.append(f"- {name}: peak RSS on a {big['bytes'] / 1e9:.2f} GB directory: {r['rss_mib']:.0f} MiB = {r['rss_mib'] * 1.048576:.0f} MB "
                         f"(target ≤ {TARGET_RSS_MB} MB) → " + ("met" if r["rss_mib"] * 1.048576 <= TARGET_RSS_MB else "MISSED"))
    b, af = load_json(os.path.join(run, "compact-before.json")), load_json(os.path.join(run, "compact-after.json"))
    if b and af:
        p = b["params"]
        lines.append("")
        lines.append(f"Queries on the compact-s3 lake with chdb over its s3() glob, before and after the compaction, best of 3, "
                     f"per-file caches off (hour from {p['hour']} UTC; directory date={p['date']}/event_type={p['event_type']}):")
        lines.append("")
        lines.append("| query | before ms | after ms | after / before | files opened before → after | answers |")
        lines.append("|---|---:|---:|---:|---:|---|")
        for name, rb in b["queries"].items():
            ra = af["queries"].get(name)
            if not ra:
                continue
            ratio = ra["best_ms"] / rb["best_ms"]
            target = f" (target ≤ {TARGET_QUERY_RATIO:.2f}: {'met' if ratio <= TARGET_QUERY_RATIO else 'MISSED'})" if name != "one directory" else ""
            lines.append(f"| {name} | {rb['best_ms']:.0f} | {ra['best_ms']:.0f} | {ratio:.3f}{target} | "
                         f"{rb['counters']['EngineFileLikeReadFiles']:,} → {ra['counters']['EngineFileLikeReadFiles']:,} | "
                         f"{'equal' if ra.get('equal') else 'DIFFER'} |")
    print("\n".join(lines))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("queries")
    p.add_argument("--url", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--start-ms", type=int, required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--before")
    p.add_argument("--out", required=True)
    d = sub.add_parser("dir")
    d.add_argument("dir")
    d.add_argument("--json", required=True)
    d.add_argument("--source", default="")
    r = sub.add_parser("report")
    r.add_argument("run_dir")
    r.add_argument("--flush-rows", default="?")
    a = ap.parse_args()
    return {"queries": queries, "dir": dirinfo, "report": report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
