//! Lease: one live holder at a time for a backfill's consumer group.
//!
//! A backfill assigns its partitions directly, without group membership, so
//! the broker cannot tell two runs of the same backfill apart: both would read
//! the range, and one could roll back the other's recovery records. The lease
//! is an object in the lake, `_lakewriter/leases/<group>.json`, created with a
//! conditional write (`If-None-Match: *`) and renewed with `If-Match` on the
//! version it last wrote, so exactly one run holds it at any moment:
//!
//! - a run that finds a lease waits for it: an expired or released lease is
//!   taken over (conditionally, so two waiters cannot both take it); one that
//!   its holder renews is alive, and the run refuses to start;
//! - the holder renews every quarter of the time to live and commits offsets
//!   only while its last renewal is younger than three quarters of it, so a
//!   holder that stalled (or lost the lease) stops before its commit;
//! - stream writers refuse a group whose lease is live.
//!
//! The margin assumes the hosts' clocks agree to well within a quarter of the
//! time to live (NTP-synchronised hosts do).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::route::escape_partition_value;
use crate::upload::{Lake, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another live run holds the group.
    #[error("group {group:?} is held by {holder} (lease renewed, expires {expires}); another run of this backfill is in progress")]
    Held {
        group: String,
        holder: String,
        expires: String,
    },
    /// This run's lease expired or was taken over before a commit.
    #[error("lost the lease on group {0:?} (renewal failed or another run took it over)")]
    Lost(String),
    #[error("lease record {key} is unreadable: {msg}")]
    Bad { key: String, msg: String },
    #[error(transparent)]
    Upload(#[from] UploadError),
}

/// The stored lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    pub group: String,
    pub holder: String,
    /// Wall-clock expiry, ms since the epoch; 0 once released.
    pub expires_ms: i64,
}

impl LeaseRecord {
    fn live(&self, now_ms: i64) -> bool {
        self.expires_ms > now_ms
    }
}

pub fn lease_key(group: &str) -> String {
    format!("_lakewriter/leases/{}.json", escape_partition_value(group))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn show_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

struct Inner {
    tag: String,
    /// Commits are safe until then (monotonic clock of this process).
    safe_until: Instant,
    lost: bool,
}

/// A held lease; renewed in the background once [`Lease::keep_renewed`] runs.
#[derive(Clone)]
pub struct Lease {
    lake: Lake,
    key: String,
    record: LeaseRecord,
    ttl: Duration,
    inner: Arc<Mutex<Inner>>,
}

async fn read(lake: &Lake, key: &str) -> Result<Option<(LeaseRecord, String)>, LeaseError> {
    // The record is read without its stored checksum (see
    // `Lake::get_record_tagged`): parsing it is the check. A read that meets a
    // simultaneous create or takeover can still fail; look again a few times
    // before calling the record unreadable.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let got = match lake.get_record_tagged(key).await {
            Ok(None) => return Ok(None),
            Ok(Some((body, tag))) => serde_json::from_slice(&body)
                .map(|rec| Some((rec, tag)))
                .map_err(|e| LeaseError::Bad {
                    key: key.to_string(),
                    msg: e.to_string(),
                }),
            Err(e) => Err(LeaseError::Upload(e)),
        };
        match got {
            Err(_) if attempt < READ_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await
            }
            other => return other,
        }
    }
}

/// Reads of the lease record before its error counts.
const READ_ATTEMPTS: u64 = 5;

/// The lease stored at [`lease_key`] if it is live (stream writers check it
/// before they take partitions of a group).
pub fn live(stored: &[u8]) -> Result<Option<LeaseRecord>, serde_json::Error> {
    let r: LeaseRecord = serde_json::from_slice(stored)?;
    Ok(r.live(now_ms()).then_some(r))
}

impl Lease {
    /// Take the lease on `group` for `holder`, waiting out a lease that is not
    /// renewed (a crashed run's) and refusing one that is.
    pub async fn acquire(
        lake: &Lake,
        group: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        Self::acquire_at(lake, lease_key(group), group, holder, ttl).await
    }

    /// [`Lease::acquire`] of the lease stored at `key`, named `group` in its record.
    pub async fn acquire_at(
        lake: &Lake,
        key: String,
        group: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let mut seen: Option<String> = None;
        // Runs started at the same instant (a Job retried beside a stuck pod) would
        // otherwise race their creates; on a store whose create-if-absent is not
        // atomic (s3s-fs) two simultaneous writes can leave the record unreadable.
        // A random pause of up to 250 ms spreads them apart.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..250))).await;
        loop {
            let record = LeaseRecord {
                group: group.to_string(),
                holder: holder.to_string(),
                expires_ms: now_ms() + ttl.as_millis() as i64,
            };
            let body = Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
            let sent = Instant::now();
            if lake.put_new(&key, body.clone()).await?.is_some() {
                // Read it back: a store whose create-if-absent is not atomic under
                // simultaneous requests (s3s-fs) lets two runs both "create" it, and
                // then the version tag it compares renewals with is the one it
                // serves, not necessarily the one this create returned.
                match read(lake, &key).await? {
                    Some((r, tag)) if r.holder == holder => {
                        return Ok(Lease::held(lake, key, record, ttl, tag, sent))
                    }
                    _ => continue,
                }
            }
            let Some((cur, tag)) = read(lake, &key).await? else {
                continue; // removed in between: try to create it again
            };
            if !cur.live(now_ms()) {
                if let Some(tag) = lake.put_if(&key, body, &tag).await? {
                    if cur.expires_ms > 0 {
                        tracing::warn!(group, previous = %cur.holder, "took over an expired lease (its holder stopped renewing)");
                    }
                    return Ok(Lease::held(lake, key, record, ttl, tag, sent));
                }
                continue; // another run took it first: look at theirs
            }
            match &seen {
                Some(first) if *first != tag => {
                    return Err(LeaseError::Held {
                        group: group.to_string(),
                        holder: cur.holder,
                        expires: show_ms(cur.expires_ms),
                    })
                }
                Some(_) => {}
                None => {
                    tracing::info!(group, holder = %cur.holder, expires = %show_ms(cur.expires_ms), "the backfill's lease is held; waiting to see whether its holder is alive");
                    seen = Some(tag);
                }
            }
            tokio::time::sleep(Duration::from_millis(500).min(ttl / 8)).await;
        }
    }

    fn held(
        lake: &Lake,
        key: String,
        record: LeaseRecord,
        ttl: Duration,
        tag: String,
        sent: Instant,
    ) -> Lease {
        Lease {
            lake: lake.clone(),
            key,
            record,
            ttl,
            inner: Arc::new(Mutex::new(Inner {
                tag,
                safe_until: sent + ttl * 3 / 4,
                lost: false,
            })),
        }
    }

    /// Renew every quarter of the time to live until `stop`.
    pub async fn keep_renewed(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.ttl / 4) => {}
            }
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(group = %self.record.group, "the backfill's lease was taken over; this run stops before its next commit");
                    return;
                }
                Err(e) => {
                    tracing::warn!(group = %self.record.group, error = %e, "cannot renew the backfill's lease; retrying")
                }
            }
        }
    }

    /// One renewal; `Ok(false)` when the lease is no longer ours.
    pub async fn renew(&self) -> Result<bool, LeaseError> {
        let tag = match self.inner.lock() {
            Ok(i) if !i.lost => i.tag.clone(),
            _ => return Ok(false),
        };
        let mut rec = self.record.clone();
        rec.expires_ms = now_ms() + self.ttl.as_millis() as i64;
        let sent = Instant::now();
        let body = Bytes::from(serde_json::to_vec(&rec).unwrap_or_default());
        let got = self.lake.put_if(&self.key, body, &tag).await?;
        if let Ok(mut i) = self.inner.lock() {
            match &got {
                Some(t) => {
                    i.tag = t.clone();
                    i.safe_until = sent + self.ttl * 3 / 4;
                }
                None => i.lost = true,
            }
        }
        Ok(got.is_some())
    }

    /// Whether a commit is safe now: the lease is ours and was renewed recently
    /// enough that no other run can have taken it over.
    pub fn check(&self) -> Result<(), LeaseError> {
        match self.inner.lock() {
            Ok(i) if !i.lost && Instant::now() < i.safe_until => Ok(()),
            _ => Err(LeaseError::Lost(self.record.group.clone())),
        }
    }

    /// [`Lease::check`], then the stored lease must still name this run: called
    /// right before each commit, so a run that lost a race it could not see
    /// stops there.
    pub async fn verify(&self) -> Result<(), LeaseError> {
        self.check()?;
        match read(&self.lake, &self.key).await? {
            Some((r, _)) if r.holder == self.record.holder && r.live(now_ms()) => Ok(()),
            _ => {
                if let Ok(mut i) = self.inner.lock() {
                    i.lost = true;
                }
                Err(LeaseError::Lost(self.record.group.clone()))
            }
        }
    }

    /// Give the lease up (expiry 0, conditionally: a lease another run took
    /// over is left alone).
    pub async fn release(&self) -> Result<(), LeaseError> {
        let tag = match self.inner.lock() {
            Ok(i) if !i.lost => i.tag.clone(),
            _ => return Ok(()),
        };
        let mut rec = self.record.clone();
        rec.expires_ms = 0;
        let body = Bytes::from(serde_json::to_vec(&rec).unwrap_or_default());
        self.lake.put_if(&self.key, body, &tag).await?;
        if let Ok(mut i) = self.inner.lock() {
            i.lost = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(dir: &std::path::Path) -> Lake {
        Lake::Local {
            root: dir.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn a_live_lease_refuses_a_second_holder_and_a_released_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let ttl = Duration::from_millis(800);
        let a = Lease::acquire(&lake, "g/1", "run-a", ttl).await.unwrap();
        a.check().unwrap();
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(a.clone().keep_renewed(stop.clone()));
        let b = Lease::acquire(&lake, "g/1", "run-b", ttl).await;
        match b {
            Err(LeaseError::Held { holder, .. }) => assert_eq!(holder, "run-a"),
            other => panic!("expected Held, got {:?}", other.map(|_| ())),
        }
        let stored = lake.get(&lease_key("g/1")).await.unwrap().unwrap();
        assert_eq!(live(&stored).unwrap().unwrap().holder, "run-a");
        stop.cancel();
        renewer.await.unwrap();
        a.release().await.unwrap();
        assert!(a.check().is_err());
        let stored = lake.get(&lease_key("g/1")).await.unwrap().unwrap();
        assert!(live(&stored).unwrap().is_none());
        let c = Lease::acquire(&lake, "g/1", "run-c", ttl).await.unwrap();
        c.check().unwrap();
        // The released holder cannot renew over the new one.
        assert!(!a.renew().await.unwrap());
    }

    #[tokio::test]
    async fn a_lease_that_is_not_renewed_expires_and_its_holder_may_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let ttl = Duration::from_millis(400);
        let a = Lease::acquire(&lake, "g", "run-a", ttl).await.unwrap();
        // No renewal (a stalled or killed run): the next run waits it out and takes over.
        let b = Lease::acquire(&lake, "g", "run-b", ttl).await.unwrap();
        b.check().unwrap();
        assert!(a.check().is_err(), "a stalled holder must not commit");
        assert!(!a.renew().await.unwrap(), "nor renew over the new holder");
        assert!(a.check().is_err());
    }
}
