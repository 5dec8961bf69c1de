//! All metrics in one place: process-wide counters and gauges, rendered in
//! the Prometheus text format. Labels are bounded (no per-event values).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Gauges reuse the same cell.
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Metrics {
    pub events_in: Counter,
    pub bytes_in: Counter,
    pub events_written: Counter,
    pub dead_letters: Counter,
    pub dead_letters_truncated: Counter,
    pub tombstones: Counter,
    pub files_written: Counter,
    pub bytes_written: Counter,
    pub flushes: Counter,
    pub flush_micros_total: Counter,
    pub upload_retries: Counter,
    pub commits: Counter,
    pub commit_failures: Counter,
    pub rollbacks: Counter,
    pub rolled_back_files: Counter,
    pub buffered_bytes: Counter,
    pub last_commit_unix_ms: Counter,
    pub schema_changes: Counter,
    pub flush_duration: Histogram,
    pub labeled: std::sync::Mutex<Labeled>,
    pub compact: Compaction,
}

/// `lakewriter compact`'s series.
#[derive(Default)]
pub struct Compaction {
    pub merges: Counter,
    pub files_in: Counter,
    pub files_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub rows: Counter,
    pub inputs_removed: Counter,
    pub rollbacks: Counter,
    pub bad_inputs: Counter,
    pub skipped_dirs: Counter,
    pub micros: Counter,
    pub lease_held: Counter,
    pub last_success_ms: Counter,
    pub runs_ok: Counter,
    pub runs_error: Counter,
}

/// Flush duration buckets, seconds.
const FLUSH_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Histogram {
    buckets: [Counter; 9],
    count: Counter,
    sum_micros: Counter,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        for (i, b) in FLUSH_BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].inc();
            }
        }
        self.count.inc();
        self.sum_micros.add(d.as_micros() as u64);
    }
}

/// Per-topic and per-partition series (bounded by the assignment, not by events).
#[derive(Default)]
pub struct Labeled {
    /// topic → (events in, rows written, dead letters)
    pub topics: std::collections::BTreeMap<String, [u64; 3]>,
    /// (topic, partition) → lag in messages
    pub lag: std::collections::BTreeMap<(String, i32), i64>,
    /// reason kind (`deadletter::reason_kind`) → dead letters written
    pub dead_reasons: std::collections::BTreeMap<&'static str, u64>,
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP lakewriter_{name} {help}\n# TYPE lakewriter_{name} {kind}\nlakewriter_{name} {v}");
        };
        put(
            "events_in_total",
            "counter",
            "Kafka messages consumed.",
            self.events_in.get(),
        );
        put(
            "bytes_in_total",
            "counter",
            "Kafka message payload bytes consumed.",
            self.bytes_in.get(),
        );
        put(
            "events_written_total",
            "counter",
            "Rows written to Parquet files in the lake.",
            self.events_written.get(),
        );
        put(
            "dead_letters_total",
            "counter",
            "Messages written to the dead-letter output.",
            self.dead_letters.get(),
        );
        put(
            "dead_letters_truncated_total",
            "counter",
            "Dead letters sent to the dead-letter topic with their payload cut to fit the producer's message size (kept whole in the lake).",
            self.dead_letters_truncated.get(),
        );
        put(
            "tombstones_total",
            "counter",
            "Messages without a value (tombstones), skipped.",
            self.tombstones.get(),
        );
        put(
            "files_written_total",
            "counter",
            "Parquet files uploaded.",
            self.files_written.get(),
        );
        put(
            "bytes_written_total",
            "counter",
            "Parquet bytes uploaded.",
            self.bytes_written.get(),
        );
        put(
            "flushes_total",
            "counter",
            "Flush cycles completed (uploaded and committed).",
            self.flushes.get(),
        );
        put(
            "upload_retries_total",
            "counter",
            "S3 operations retried.",
            self.upload_retries.get(),
        );
        put(
            "commits_total",
            "counter",
            "Synchronous offset commits that succeeded.",
            self.commits.get(),
        );
        put(
            "commit_failures_total",
            "counter",
            "Offset commits that failed.",
            self.commit_failures.get(),
        );
        put(
            "rollbacks_total",
            "counter",
            "Uncommitted flushes rolled back.",
            self.rollbacks.get(),
        );
        put(
            "rolled_back_files_total",
            "counter",
            "Files deleted because their flush was not committed (rollbacks and fenced cycles).",
            self.rolled_back_files.get(),
        );
        put(
            "buffered_bytes",
            "gauge",
            "Bytes of events buffered in memory.",
            self.buffered_bytes.get(),
        );
        put(
            "last_commit_timestamp_ms",
            "gauge",
            "Unix time of the last successful commit.",
            self.last_commit_unix_ms.get(),
        );
        put(
            "schema_changes_total",
            "counter",
            "Table schemas created or widened.",
            self.schema_changes.get(),
        );
        let _ = writeln!(
            s,
            "# HELP lakewriter_flush_seconds_total Time spent in flush cycles.\n# TYPE lakewriter_flush_seconds_total counter\nlakewriter_flush_seconds_total {}",
            self.flush_micros_total.get() as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "# HELP lakewriter_build_info The running build.\n# TYPE lakewriter_build_info gauge\nlakewriter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            s,
            "# HELP lakewriter_ready Whether /readyz answers ready (1) or not (0).\n# TYPE lakewriter_ready gauge\nlakewriter_ready {}",
            u8::from(crate::health::unready_reason().is_none())
        );
        let _ = writeln!(
            s,
            "# HELP lakewriter_last_commit_timestamp_seconds Unix time of the last successful commit.\n# TYPE lakewriter_last_commit_timestamp_seconds gauge\nlakewriter_last_commit_timestamp_seconds {}",
            self.last_commit_unix_ms.get() as f64 / 1e3
        );
        let _ = writeln!(s, "# HELP lakewriter_flush_duration_seconds Duration of flush cycles.\n# TYPE lakewriter_flush_duration_seconds histogram");
        for (i, b) in FLUSH_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "lakewriter_flush_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.flush_duration.buckets[i].get()
            );
        }
        let _ = writeln!(
            s,
            "lakewriter_flush_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.flush_duration.count.get()
        );
        let _ = writeln!(
            s,
            "lakewriter_flush_duration_seconds_sum {}",
            self.flush_duration.sum_micros.get() as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "lakewriter_flush_duration_seconds_count {}",
            self.flush_duration.count.get()
        );
        let l = self.labeled.lock().unwrap_or_else(|p| p.into_inner());
        for (name, idx, help) in [
            (
                "topic_events_in_total",
                0,
                "Kafka messages consumed, per topic.",
            ),
            ("topic_events_written_total", 1, "Rows written, per topic."),
            ("topic_dead_letters_total", 2, "Dead letters, per topic."),
        ] {
            let _ = writeln!(
                s,
                "# HELP lakewriter_{name} {help}\n# TYPE lakewriter_{name} counter"
            );
            for (t, v) in &l.topics {
                let _ = writeln!(s, "lakewriter_{name}{{topic=\"{t}\"}} {}", v[idx]);
            }
        }
        let _ = writeln!(s, "# HELP lakewriter_dead_letters_by_reason_total Dead letters written, by the kind of reason.\n# TYPE lakewriter_dead_letters_by_reason_total counter");
        for (r, v) in &l.dead_reasons {
            let _ = writeln!(
                s,
                "lakewriter_dead_letters_by_reason_total{{reason=\"{r}\"}} {v}"
            );
        }
        let _ = writeln!(s, "# HELP lakewriter_consumer_lag Messages between the consumed position and the high watermark.\n# TYPE lakewriter_consumer_lag gauge");
        for ((t, p), v) in &l.lag {
            let _ = writeln!(
                s,
                "lakewriter_consumer_lag{{topic=\"{t}\",partition=\"{p}\"}} {v}"
            );
        }
        let c = &self.compact;
        for (name, help, v) in [
            (
                "compact_merges_total",
                "Merges that reached their commit point.",
                &c.merges,
            ),
            (
                "compact_files_in_total",
                "Files merged (inputs).",
                &c.files_in,
            ),
            (
                "compact_files_out_total",
                "Files written by merges.",
                &c.files_out,
            ),
            (
                "compact_bytes_in_total",
                "Parquet bytes merged (inputs).",
                &c.bytes_in,
            ),
            (
                "compact_bytes_out_total",
                "Parquet bytes written by merges.",
                &c.bytes_out,
            ),
            ("compact_rows_total", "Rows merged.", &c.rows),
            (
                "compact_inputs_removed_total",
                "Merged inputs removed after their grace.",
                &c.inputs_removed,
            ),
            (
                "compact_rollbacks_total",
                "Merges found before their commit point and rolled back.",
                &c.rollbacks,
            ),
            (
                "compact_bad_inputs_total",
                "Unreadable Parquet inputs left in place.",
                &c.bad_inputs,
            ),
            (
                "compact_skipped_dirs_total",
                "Directories not merged because their inputs' schemas cannot be joined.",
                &c.skipped_dirs,
            ),
        ] {
            let _ = writeln!(s, "# HELP lakewriter_{name} {help}\n# TYPE lakewriter_{name} counter\nlakewriter_{name} {}", v.get());
        }
        let _ = writeln!(s, "# HELP lakewriter_compact_seconds_total Time spent merging.\n# TYPE lakewriter_compact_seconds_total counter\nlakewriter_compact_seconds_total {}", c.micros.get() as f64 / 1e6);
        let _ = writeln!(s, "# HELP lakewriter_compact_lease_held Whether this process holds the lake's compaction lease.\n# TYPE lakewriter_compact_lease_held gauge\nlakewriter_compact_lease_held {}", c.lease_held.get());
        let _ = writeln!(s, "# HELP lakewriter_compact_runs_total Compaction runs (--once) or passes (--interval), by outcome.\n# TYPE lakewriter_compact_runs_total counter\nlakewriter_compact_runs_total{{outcome=\"ok\"}} {}\nlakewriter_compact_runs_total{{outcome=\"error\"}} {}", c.runs_ok.get(), c.runs_error.get());
        let last_ok = c.last_success_ms.get();
        if last_ok > 0 {
            let _ = writeln!(s, "# HELP lakewriter_compact_last_success_timestamp_seconds When the last compaction pass completed.\n# TYPE lakewriter_compact_last_success_timestamp_seconds gauge\nlakewriter_compact_last_success_timestamp_seconds {}", last_ok as f64 / 1e3);
        }
        let last = self.last_commit_unix_ms.get();
        if last > 0 {
            let age =
                (chrono::Utc::now().timestamp_millis() as u64).saturating_sub(last) as f64 / 1000.0;
            let _ = writeln!(s, "# HELP lakewriter_last_commit_age_seconds Seconds since the last successful commit.\n# TYPE lakewriter_last_commit_age_seconds gauge\nlakewriter_last_commit_age_seconds {age}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_fractional_flush_time_rolled_back_files_and_build_info() {
        let m = Metrics::default();
        m.flush_micros_total.add(1_500_000);
        m.rolled_back_files.add(3);
        m.last_commit_unix_ms.set(1_716_000_000_123);
        let r = m.render();
        assert!(r.contains("\nlakewriter_flush_seconds_total 1.5\n"), "{r}");
        assert!(
            r.contains("\nlakewriter_rolled_back_files_total 3\n"),
            "{r}"
        );
        assert!(r.contains(&format!(
            "lakewriter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(
            r.contains("\nlakewriter_last_commit_timestamp_seconds 1716000000.123\n"),
            "{r}"
        );
        assert!(r.contains("\nlakewriter_ready "), "{r}");
    }
}
