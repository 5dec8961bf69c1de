//! Admin HTTP port: `/healthz` (process alive), `/readyz` (ready to do its
//! job: joined the group or running a range, S3 reachable, not stalled) and
//! `/metrics` (Prometheus text). A tiny HTTP/1.x responder: probes and
//! scrapers send one GET per connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::{liveness_failure, now_ms, unready_reason, HEALTH};
use crate::metrics::METRICS;
use crate::upload::Lake;

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
