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
}

pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP lakewriter_{name} {help}\n# TYPE lakewriter_{name} {kind}\nlakewriter_{name} {v}");
        };
        put("events_in_total", "counter", "Kafka messages consumed.", self.events_in.get());
        put("bytes_in_total", "counter", "Kafka message payload bytes consumed.", self.bytes_in.get());
        put("events_written_total", "counter", "Rows written to Parquet files in the lake.", self.events_written.get());
        put("dead_letters_total", "counter", "Messages written to the dead-letter output.", self.dead_letters.get());
        put("files_written_total", "counter", "Parquet files uploaded.", self.files_written.get());
        put("bytes_written_total", "counter", "Parquet bytes uploaded.", self.bytes_written.get());
        put("flushes_total", "counter", "Flush cycles completed (uploaded and committed).", self.flushes.get());
        put("flush_seconds_total", "counter", "Time spent in flush cycles.", self.flush_micros_total.get() / 1_000_000);
        put("upload_retries_total", "counter", "S3 operations retried.", self.upload_retries.get());
        put("commits_total", "counter", "Synchronous offset commits that succeeded.", self.commits.get());
        put("commit_failures_total", "counter", "Offset commits that failed.", self.commit_failures.get());
        put("rollbacks_total", "counter", "Uncommitted flushes rolled back.", self.rollbacks.get());
        put("buffered_bytes", "gauge", "Bytes of events buffered in memory.", self.buffered_bytes.get());
        put("last_commit_timestamp_ms", "gauge", "Unix time of the last successful commit.", self.last_commit_unix_ms.get());
        put("schema_changes_total", "counter", "Table schemas created or widened.", self.schema_changes.get());
        s
    }
}
