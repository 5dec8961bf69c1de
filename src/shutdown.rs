//! One cancellation token for the whole process and the drain deadline that
//! bounds how long a shutdown may spend flushing, uploading and committing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Exit code when the drain deadline cut the shutdown short (data not yet
/// durable stays uncommitted and is re-consumed by the next run).
pub const EXIT_DRAIN_TIMEOUT: i32 = 3;

/// Exit code when a permanent error (S3 access denied, missing bucket, KMS;
/// Kafka authorization) outlasted `--give-up-after`.
pub const EXIT_PERMANENT: i32 = 6;

#[derive(Clone, Debug)]
pub struct Drain {
    pub token: CancellationToken,
    timeout: Duration,
    deadline: Arc<Mutex<Option<Instant>>>,
    /// How long a permanent error may repeat before the run gives up.
    pub give_up_after: Duration,
}

impl Drain {
    pub fn new(timeout: Duration) -> Self {
        Self::with_token(CancellationToken::new(), timeout)
    }

    /// Wrap an existing token (e.g. the caller's shutdown signal).
    pub fn with_token(token: CancellationToken, timeout: Duration) -> Self {
        Self {
            token,
            timeout,
            deadline: Arc::new(Mutex::new(None)),
            give_up_after: Duration::from_secs(300),
        }
    }

    /// Begin draining: cancel the token and start the deadline clock (once).
    pub fn start(&self) {
        self.token.cancel();
        self.arm();
    }

    fn arm(&self) {
        let mut d = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_none() {
            *d = Some(Instant::now() + self.timeout);
        }
    }

    pub fn is_draining(&self) -> bool {
        if self.token.is_cancelled() {
            self.arm();
            true
        } else {
            false
        }
    }

    pub fn deadline_passed(&self) -> bool {
        if !self.is_draining() {
            return false;
        }
        let d = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        d.is_some_and(|d| Instant::now() >= d)
    }
}

/// Resolve on SIGTERM or Ctrl-C, then cancel `token`.
pub async fn signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; draining"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received; draining"),
                    _ = token.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install SIGTERM handler; only Ctrl-C will drain");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received; draining"),
                    _ = token.cancelled() => {}
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}
