//! lakewriter: Kafka JSON events → Hive-partitioned Parquet on S3.
//!
//! The modules follow the data flow:
//! [`source`] → [`route`] → [`buffer`] → [`encode`] → [`upload`] → [`commit`],
//! with [`pipeline`] running the loop and [`deadletter`] keeping what cannot
//! become a row. [`run`] is the whole service; `main.rs` only parses flags.
//!
//! No module imports one that imports it back. [`offsets`] (partitions, range
//! bounds), [`health`] (readiness flags) and [`route`] import no other module
//! of the crate, so the stages that share them need not import one another;
//! [`config`] imports only those leaves.

pub mod admin;
pub mod audit;
pub mod backfill;
pub mod buffer;
pub mod commit;
pub mod compact;
pub mod config;
pub mod ddl;
pub mod deadletter;
pub mod demo;
pub mod encode;
pub mod fault;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod produce;
pub mod route;
pub mod shutdown;
pub mod source;
pub mod upload;

pub use config::Config;
pub use pipeline::Summary;

use tokio_util::sync::CancellationToken;

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("lake {lake}: {source}")]
    LakeUnreachable {
        lake: String,
        source: upload::UploadError,
    },
    /// The shutdown deadline passed before everything was durable; what was not
    /// committed is re-read by the next run.
    #[error("shutdown deadline reached before the final flush completed: {0}")]
    DrainTimeout(String),
    /// The final flush is in the lake but the group did not take its offsets
    /// (the outcome is unknown, e.g. a timeout): the next run keeps the flush
    /// if the commit landed and rolls it back otherwise.
    #[error("the final flush is in the lake but its offsets were not committed ({0}); the next run keeps or rolls it back")]
    Uncommitted(String),
    #[error(transparent)]
    Upload(upload::UploadError),
    #[error(transparent)]
    Commit(#[from] commit::CommitError),
    #[error(transparent)]
    DeadLetterTopic(#[from] deadletter::SinkError),
    #[error("pipeline thread failed: {0}")]
    Join(String),
    /// A backfill ended before its whole range was durable.
    #[error("backfill incomplete, not yet in the lake: {0}")]
    Incomplete(String),
    /// Another run holds the backfill's group, or this run lost it.
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// The group's committed offset is ahead of what the partition holds (the
    /// topic was deleted and recreated, its log truncated, or the offsets reset
    /// past the end): reading on would skip or rewrite events, so the writer
    /// stops and says which partition and both offsets.
    #[error("committed offset ahead of the log: {0}")]
    OffsetAhead(String),
    /// A permanent error (S3 access denied, missing bucket, KMS key; Kafka
    /// authorization) lasted longer than `--give-up-after`.
    #[error("permanent error: {0}")]
    Permanent(String),
    #[error(transparent)]
    Compact(#[from] compact::CompactError),
    /// A combination of settings that would corrupt the lake or disturb a group.
    #[error("refusing to start: {0}")]
    Unsafe(String),
}

impl From<upload::UploadError> for Error {
    fn from(e: upload::UploadError) -> Self {
        match e {
            upload::UploadError::DeadlineExceeded(m) => Error::DrainTimeout(m),
            e @ upload::UploadError::GaveUp(..) => Error::Permanent(e.to_string()),
            other => Error::Upload(other),
        }
    }
}

impl Error {
    /// The process exit code (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        use upload::UploadError as U;
        match self {
            Error::DrainTimeout(_) | Error::Uncommitted(_) => shutdown::EXIT_DRAIN_TIMEOUT as u8,
            Error::Config(_)
            | Error::Unsafe(_)
            | Error::Lease(lease::LeaseError::Held { .. } | lease::LeaseError::Lost(_))
            | Error::Compact(compact::CompactError::Held { .. } | compact::CompactError::Lost) => 2,
            Error::Incomplete(_) => 4,
            Error::OffsetAhead(_) => 5,
            Error::Permanent(_)
            | Error::Commit(commit::CommitError::Upload(U::GaveUp(..)))
            | Error::Lease(lease::LeaseError::Upload(U::GaveUp(..)))
            | Error::LakeUnreachable {
                source: U::GaveUp(..),
                ..
            } => shutdown::EXIT_PERMANENT as u8,
            Error::Commit(commit::CommitError::Upload(U::DeadlineExceeded(_))) => {
                shutdown::EXIT_DRAIN_TIMEOUT as u8
            }
            _ => 1,
        }
    }
}

/// Run the pipeline until `shutdown` is cancelled (then flush, upload,
/// commit within the configured deadline) or, with `until_caught_up`,
/// until the assigned partitions are consumed to their end.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<Summary, Error> {
    let mut drain = shutdown::Drain::with_token(shutdown, cfg.shutdown_timeout);
    drain.give_up_after = cfg.give_up_after;
    let lake = upload::Lake::connect(&cfg.lake, cfg.s3_path_style)
        .await
        .with_write_options(cfg.s3_write.clone());
    lake.check()
        .await
        .map_err(|source| Error::LakeUnreachable {
            lake: cfg.lake.to_string(),
            source,
        })?;
    health::HEALTH
        .s3_ok
        .store(true, std::sync::atomic::Ordering::Relaxed);
    health::HEALTH.liveness_stall_ms.store(
        cfg.liveness_stall.as_millis() as i64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let background = CancellationToken::new();
    if let Some(addr) = cfg.admin_addr {
        admin::serve(addr, background.clone()).await.map_err(|e| {
            Error::Config(config::ConfigError::Invalid {
                flag: "admin-addr",
                msg: format!("cannot listen on {addr}: {e}"),
            })
        })?;
    }
    tokio::spawn(admin::probe_s3(lake.clone(), background.clone()));
    let rt = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || pipeline::run_blocking(cfg, lake, rt, drain))
        .await
        .map_err(|e| Error::Join(e.to_string()));
    background.cancel();
    result?
}
