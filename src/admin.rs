//! Admin HTTP port: `/healthz` (process alive), `/readyz` (ready to do its
//! job: joined the group or running a range, S3 reachable, not stalled) and
//! `/metrics` (Prometheus text). A tiny HTTP/1.x responder: probes and
//! scrapers send one GET per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;
use crate::upload::Lake;

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

/// Probe the bucket every few seconds so `/readyz` sees an outage even when idle.
pub async fn probe_s3(lake: Lake, token: CancellationToken) {
    loop {
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(3), lake.check()).await,
            Ok(Ok(()))
        );
        if HEALTH.s3_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("S3 reachable again");
            } else {
                tracing::warn!("S3 health probe failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// Serve the admin endpoints until `token` is cancelled.
pub async fn serve(addr: SocketAddr, token: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin endpoints: /healthz /readyz /metrics");
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = token.cancelled() => return,
            };
            let Ok((mut sock, _)) = conn else { continue };
            tokio::spawn(async move {
                // Read the request head (up to 8 KiB); only its first line matters.
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let read_head = async {
                    while buf.len() < 8192
                        && !buf.windows(4).any(|w| w == b"\r\n\r\n")
                        && !buf.windows(2).any(|w| w == b"\n\n")
                    {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                };
                if tokio::time::timeout(Duration::from_secs(5), read_head)
                    .await
                    .is_err()
                {
                    return;
                }
                let req = String::from_utf8_lossy(&buf);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/healthz" => match liveness_failure(
                        now_ms(),
                        HEALTH.last_loop_ms.load(Ordering::Relaxed),
                        HEALTH.liveness_stall_ms.load(Ordering::Relaxed),
                        HEALTH.s3_ok.load(Ordering::Relaxed),
                        HEALTH.permanent_error.load(Ordering::Relaxed),
                    ) {
                        None => ("200 OK", "text/plain", "ok\n".to_string()),
                        Some(r) => ("503 Service Unavailable", "text/plain", r),
                    },
                    "/readyz" => match unready_reason() {
                        None => ("200 OK", "text/plain", "ready\n".to_string()),
                        Some(r) => ("503 Service Unavailable", "text/plain", format!("{r}\n")),
                    },
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", METRICS.render()),
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(local)
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
