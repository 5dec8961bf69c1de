//! Readiness and liveness: what `/readyz`, `/healthz` and the `lakewriter_ready`
//! metric report, and the flags the pipeline, the uploads and the S3 probe set.
//!
//! Apart from the admin HTTP server so that the modules reporting into it
//! (upload, metrics, pipeline) need not depend on the server, which itself
//! uses upload (to probe S3) and metrics (to serve them).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Readiness inputs, updated by the pipeline and the S3 probe.
#[derive(Default)]
pub struct Health {
    /// Joined the group (an assignment arrived, possibly empty) or a backfill range is running.
    pub started: AtomicBool,
    pub s3_ok: AtomicBool,
    /// An operation keeps failing in a way retrying cannot fix.
    pub permanent_error: AtomicBool,
    /// Unix ms of the pipeline loop's last turn; a loop stuck elsewhere than an S3 retry is "stalled".
    pub last_loop_ms: AtomicI64,
    /// `/healthz` fails once the loop has not turned for this long while S3 is fine
    /// (0: never).
    pub liveness_stall_ms: AtomicI64,
}

pub static HEALTH: std::sync::LazyLock<Health> = std::sync::LazyLock::new(Health::default);

/// A loop turn older than this (outside S3 retries, which have their own signal) means stalled.
const STALL_AFTER_MS: i64 = 120_000;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn set_permanent_error(on: bool) {
    HEALTH.permanent_error.store(on, Ordering::Relaxed);
}

pub fn mark_loop() {
    HEALTH.last_loop_ms.store(now_ms(), Ordering::Relaxed);
}

/// Why the process should be restarted, if it should: the pipeline loop has not
/// turned for `stall_ms` although S3 answers and no permanent error repeats (a
/// restart cannot cure an outage). Before the loop's first turn (recovery at
/// start) it is healthy: a startup probe covers that time.
pub fn liveness_failure(
    now_ms: i64,
    last_loop_ms: i64,
    stall_ms: i64,
    s3_ok: bool,
    permanent: bool,
) -> Option<String> {
    (stall_ms > 0 && last_loop_ms > 0 && s3_ok && !permanent && now_ms - last_loop_ms > stall_ms)
        .then(|| {
            format!(
                "stuck: the pipeline loop has not turned for {} s\n",
                (now_ms - last_loop_ms) / 1000
            )
        })
}

/// Why the process is not ready, if it is not.
pub fn unready_reason() -> Option<&'static str> {
    if !HEALTH.started.load(Ordering::Relaxed) {
        return Some("not started: no partition assignment yet");
    }
    if HEALTH.permanent_error.load(Ordering::Relaxed) {
        return Some(
            "a permanent error (S3 access, bucket or KMS key; Kafka authorization): see the log",
        );
    }
    if !HEALTH.s3_ok.load(Ordering::Relaxed) {
        return Some("S3 unreachable");
    }
    let last = HEALTH.last_loop_ms.load(Ordering::Relaxed);
    if last > 0 && now_ms() - last > STALL_AFTER_MS {
        return Some("stalled: the pipeline loop has not turned for 2 minutes");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_only_for_a_stuck_loop_with_s3_fine() {
        let min = 60_000;
        assert!(liveness_failure(20 * min, 5 * min, 10 * min, true, false).is_some());
        assert!(
            liveness_failure(14 * min, 5 * min, 10 * min, true, false).is_none(),
            "not long enough"
        );
        assert!(
            liveness_failure(20 * min, 5 * min, 10 * min, false, false).is_none(),
            "an S3 outage"
        );
        assert!(
            liveness_failure(20 * min, 5 * min, 10 * min, true, true).is_none(),
            "a permanent error"
        );
        assert!(
            liveness_failure(20 * min, 0, 10 * min, true, false).is_none(),
            "before the first turn"
        );
        assert!(
            liveness_failure(20 * min, 5 * min, 0, true, false).is_none(),
            "disabled"
        );
    }
}
