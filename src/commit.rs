//! Commit: the recovery protocol that keeps the lake exactly-once.
//!
//! Per flush cycle and partition, in this order (see docs/recovery.md):
//! 1. write a recovery record `_lakewriter/recovery/<group>/<topic>/<partition>/<start>-<tag>.json`
//!    listing the files the cycle is about to upload and its offset range;
//! 2. upload the files (names derive from the partition, the cycle's first offset and the
//!    writer's tag: a retry overwrites, another writer never does);
//! 3. commit `end` to the consumer group, synchronously;
//! 4. delete the recovery record.
//!
//! A commit the group refuses (the member was fenced) removes the cycle's files and
//! record at once ([`abandon`]): the partition's next owner re-reads the range.
//!
//! Step 4 deletes the partition's *previous* record, not this one: the newest
//! committed record stays as the partition's checkpoint in the lake.
//!
//! On start and on every assignment, [`rollback`] looks at the records of
//! the assigned partitions: a record whose range is at or below the
//! committed offset was committed (the newest such record stays, the others
//! go); any other was not, so its files are deleted before the partition is
//! re-read from the committed offset. Should the group have no offset any more
//! (expired or deleted), the records give it back: the latest
//! `committed_before`, then every following cycle whose files are all in the
//! lake (its rows are there exactly once, committed or not).

use serde::{Deserialize, Serialize};

use crate::metrics::METRICS;
use crate::offsets::Tp;
use crate::route::escape_partition_value;
use crate::shutdown::Drain;
use crate::upload::{retry, Lake, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("recovery record {key} is unreadable: {msg}")]
    BadRecord { key: String, msg: String },
    #[error(
        "cannot read the committed offsets of the partitions sharing the files of {key}: {msg}"
    )]
    SharesUnknown { key: String, msg: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub version: u32,
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// First offset of the cycle (inclusive).
    pub start: i64,
    /// Offset committed when the cycle completes (exclusive end).
    pub end: i64,
    /// Lake keys written by the cycle for this partition.
    pub files: Vec<String>,
    pub writer: String,
    pub created_ms: i64,
    /// The partition's committed offset when the cycle began: a resume point
    /// known to be committed, kept in the lake in case the group loses its
    /// offsets (expired after `offsets.retention.minutes`, or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_before: Option<i64>,
    /// The other partitions with rows in any of `files`, each with the offset
    /// the cycle commits for it. One commit request carries them all; should
    /// it ever have landed for some of them only, the shared files hold rows
    /// that are committed and [`rollback`] keeps them (rolls this one forward).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Share {
    pub topic: String,
    pub partition: i32,
    pub end: i64,
}

impl Share {
    pub fn tp(&self) -> Tp {
        Tp {
            topic: self.topic.as_str().into(),
            partition: self.partition,
        }
    }
}

pub fn record_dir(group: &str, tp: &Tp) -> String {
    format!(
        "_lakewriter/recovery/{}/{}/{}/",
        escape_partition_value(group),
        tp.topic,
        tp.partition
    )
}

pub fn record_key(group: &str, tp: &Tp, start: i64, tag: &str) -> String {
    format!("{}{start:020}-{tag}.json", record_dir(group, tp))
}

/// A random tag per writer process. Object names carry it so that two writers
/// that both believe they own a partition (one of them fenced but not yet aware)
/// never write, or delete, each other's objects.
pub fn writer_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Parquet file of one (table, date, type) for a partition's cycle.
pub fn data_key(
    table: &str,
    date: chrono::NaiveDate,
    event_type: &str,
    tp: &Tp,
    start: i64,
    tag: &str,
) -> String {
    format!(
        "{table}/date={date}/event_type={event_type}/{}-{:05}-{start:020}-{tag}.parquet",
        tp.topic, tp.partition
    )
}

/// The name of a file cut from several partitions' rows: the first partition's
/// name with the cycle's number added. The cycle makes it unique to this flush,
/// so a re-read of the same offsets (after a fenced commit removed the flush)
/// never writes a name that a stale record of another partition still lists
/// and its new owner may delete. A file of one partition keeps its name.
pub fn shared_name(key: String, partitions: usize, cycle: u64) -> String {
    if partitions <= 1 {
        return key;
    }
    match key.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}-c{cycle}.{ext}"),
        None => format!("{key}-c{cycle}"),
    }
}

pub fn dead_letter_key(table: &str, tp: &Tp, start: i64, tag: &str) -> String {
    format!(
        "_lakewriter/dead_letters/{table}/{}-{:05}-{start:020}-{tag}.ndjson",
        tp.topic, tp.partition
    )
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RollbackStats {
    pub records_cleaned: usize,
    pub records_rolled_back: usize,
    pub files_deleted: usize,
}

/// What a partition resumes from after [`rollback`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resume {
    pub stats: RollbackStats,
    /// The offset to read from: the later of the group's committed offset and
    /// what the lake's records prove committed (`None`: neither knows).
    pub offset: Option<i64>,
    /// The record kept as the partition's checkpoint (delete it once a newer
    /// cycle of the partition is committed).
    pub kept: Option<String>,
}

/// The group's committed offsets of some partitions (`None` where it holds
/// none), asked while rolling back a record whose files other partitions share.
pub type CommittedOf<'a> = &'a dyn Fn(&[Tp]) -> Result<Vec<Option<i64>>, String>;

/// Roll back what was not committed for `tp`, given its committed offset.
pub async fn rollback(
    lake: &Lake,
    drain: &Drain,
    group: &str,
    tp: &Tp,
    committed: Option<i64>,
    committed_of: CommittedOf<'_>,
) -> Result<Resume, CommitError> {
    let dir = record_dir(group, tp);
    let keys = retry("list recovery records", drain, || lake.list(&dir)).await?;
    let mut recs: Vec<(String, RecoveryRecord)> = Vec::new();
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        let Some(body) = retry("read recovery record", drain, || lake.get(key)).await? else {
            continue;
        };
        let rec: RecoveryRecord =
            serde_json::from_slice(&body).map_err(|e| CommitError::BadRecord {
                key: key.clone(),
                msg: e.to_string(),
            })?;
        recs.push((key.clone(), rec));
    }
    recs.sort_by_key(|(_, r)| (r.start, r.end));
    let checkpoint = recs.iter().filter_map(|(_, r)| r.committed_before).max();
    let mut resume = committed.max(checkpoint);
    if committed.is_none() {
        // The group lost its offset (or never had one). Cycles after the checkpoint
        // whose files are all in the lake hold their rows exactly once, committed or
        // not: keep them and resume after them.
        for (_, r) in &recs {
            if resume.is_none_or(|c| r.start >= c) && all_present(lake, drain, &r.files).await? {
                resume = Some(r.end);
            } else if resume.is_none_or(|c| r.end > c) {
                break;
            }
        }
    }
    if committed.is_some() {
        // A cycle whose files other partitions share, and whose commit landed for one
        // of them: its files hold committed rows, so they stay, and so must this
        // partition's rows in them. Only the cycle right at the resume point can be one.
        for (key, r) in &recs {
            if resume.is_some_and(|c| c >= r.end) {
                continue;
            }
            if resume != Some(r.start) || r.shares.is_empty() {
                break;
            }
            let tps: Vec<Tp> = r.shares.iter().map(Share::tp).collect();
            let landed = committed_of(&tps)
                .map_err(|msg| CommitError::SharesUnknown {
                    key: key.clone(),
                    msg,
                })?
                .iter()
                .zip(&r.shares)
                .any(|(c, s)| c.is_some_and(|c| c >= s.end));
            if !landed {
                break;
            }
            if !all_present(lake, drain, &r.files).await? {
                tracing::error!(record = %key, "a cycle committed for partitions sharing its files has files missing; rolling it back");
                break;
            }
            tracing::warn!(record = %key, start = r.start, end = r.end,
                "the cycle's commit landed for the partitions sharing its files but not for this one; keeping its files and resuming after it");
            resume = Some(r.end);
        }
    }
    if resume != committed {
        tracing::warn!(topic = %tp.topic, partition = tp.partition, group_offset = ?committed, resume = ?resume,
            "the group's committed offset is missing or behind what the lake's recovery records prove committed; resuming from the lake's");
    }
    let kept = recs
        .iter()
        .filter(|(_, r)| resume.is_some_and(|c| c >= r.end))
        .max_by_key(|(_, r)| r.end)
        .map(|(k, _)| k.clone());
    let mut stats = RollbackStats::default();
    for (key, rec) in &recs {
        match resume {
            Some(c) if c >= rec.end => {
                if kept.as_ref() == Some(key) {
                    continue;
                }
                stats.records_cleaned += 1;
            }
            Some(c) if c > rec.start => {
                // Offsets were moved inside the range by hand; the files hold rows at and
                // beyond `c` that will be read again. Keeping them risks duplicates, deleting
                // them loses rows below `c`: keep them (no loss) and say so loudly.
                tracing::error!(record = %key, committed = c, start = rec.start, end = rec.end,
                    "committed offset lies inside an uncommitted flush; keeping its files (rows at or after the committed offset may appear twice; audit will show them)");
                stats.records_cleaned += 1;
            }
            _ => {
                for f in &rec.files {
                    retry("delete uncommitted file", drain, || lake.delete(f)).await?;
                    stats.files_deleted += 1;
                }
                stats.records_rolled_back += 1;
                METRICS.rollbacks.inc();
                METRICS.rolled_back_files.add(rec.files.len() as u64);
                tracing::info!(record = %key, files = rec.files.len(), start = rec.start, end = rec.end, "rolled back an uncommitted flush");
            }
        }
        retry("delete recovery record", drain, || lake.delete(key)).await?;
    }
    Ok(Resume {
        stats,
        offset: resume,
        kept,
    })
}

async fn all_present(lake: &Lake, drain: &Drain, files: &[String]) -> Result<bool, CommitError> {
    for f in files {
        if retry("check a cycle's file", drain, || lake.get(f))
            .await?
            .is_none()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Remove a cycle whose commit the group refused: its files, then its records.
/// Safe because every name carries this writer's tag: whatever the partition's
/// new owner writes for the same offsets has other names.
pub async fn abandon(
    lake: &Lake,
    drain: &Drain,
    files: &[String],
    records: &[String],
) -> Result<(), CommitError> {
    for f in files.iter().chain(records) {
        retry("delete abandoned object", drain, || lake.delete(f)).await?;
    }
    METRICS.rollbacks.inc();
    METRICS.rolled_back_files.add(files.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    /// No other partition has a committed offset.
    fn none(tps: &[Tp]) -> Result<Vec<Option<i64>>, String> {
        Ok(vec![None; tps.len()])
    }

    fn tp() -> Tp {
        Tp {
            topic: "clicks".into(),
            partition: 2,
        }
    }

    async fn write_cycle(lake: &Lake, start: i64, end: i64) -> Vec<String> {
        write_tagged(lake, start, end, "0a0b0c0d").await
    }

    async fn write_tagged(lake: &Lake, start: i64, end: i64, tag: &str) -> Vec<String> {
        write_record(lake, start, end, tag, None).await
    }

    async fn write_record(
        lake: &Lake,
        start: i64,
        end: i64,
        tag: &str,
        committed_before: Option<i64>,
    ) -> Vec<String> {
        let files = vec![
            data_key(
                "t",
                chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
                "a",
                &tp(),
                start,
                tag,
            ),
            dead_letter_key("t", &tp(), start, tag),
        ];
        for f in &files {
            lake.put(f, Bytes::from_static(b"x")).await.unwrap();
        }
        let rec = RecoveryRecord {
            version: 1,
            group: "g/1".into(),
            topic: "clicks".into(),
            partition: 2,
            start,
            end,
            files: files.clone(),
            writer: "w".into(),
            created_ms: 0,
            committed_before,
            shares: Vec::new(),
        };
        lake.put(
            &record_key("g/1", &tp(), start, tag),
            Bytes::from(serde_json::to_vec(&rec).unwrap()),
        )
        .await
        .unwrap();
        files
    }

    #[tokio::test]
    async fn committed_cycles_are_kept_and_uncommitted_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::Local {
            root: dir.path().into(),
        };
        let drain = Drain::new(Duration::from_secs(1));
        let kept = write_cycle(&lake, 0, 100).await;
        let gone = write_cycle(&lake, 100, 150).await;
        // An older committed record: cleaned, the newest one kept.
        write_tagged(&lake, 0, 60, "0e0e0e0e").await;
        let s = rollback(&lake, &drain, "g/1", &tp(), Some(100), &none)
            .await
            .unwrap();
        assert_eq!(
            s.stats,
            RollbackStats {
                records_cleaned: 1,
                records_rolled_back: 1,
                files_deleted: 2
            }
        );
        assert_eq!(s.offset, Some(100));
        // The newest committed record stays as the partition's checkpoint.
        let checkpoint = record_key("g/1", &tp(), 0, "0a0b0c0d");
        assert_eq!(s.kept.as_deref(), Some(checkpoint.as_str()));

        for f in &kept {
            assert!(lake.get(f).await.unwrap().is_some(), "{f} must stay");
        }
        for f in &gone {
            assert!(lake.get(f).await.unwrap().is_none(), "{f} must be gone");
        }
        assert_eq!(
            lake.list("_lakewriter/recovery/").await.unwrap(),
            vec![checkpoint.clone()]
        );
        assert_eq!(
            kept[0],
            "t/date=2024-01-01/event_type=a/clicks-00002-00000000000000000000-0a0b0c0d.parquet"
        );
        // Nothing committed at all and a file missing: everything goes.
        lake.delete(&checkpoint).await.unwrap();
        let f = write_cycle(&lake, 0, 10).await;
        lake.delete(&f[1]).await.unwrap();
        let r = rollback(&lake, &drain, "g/1", &tp(), None, &none)
            .await
            .unwrap();
        assert!(lake.get(&f[0]).await.unwrap().is_none());
        assert_eq!((r.offset, r.kept), (None, None));
    }

    /// Marks the record of `write_record(…, 100, 150, "0000000a", …)` as sharing
    /// its files (and `shared`, when given) with clicks/3 up to offset 80.
    async fn share_record(lake: &Lake, shared: Option<&String>) -> String {
        let key = record_key("g/1", &tp(), 100, "0000000a");
        let mut rec: RecoveryRecord =
            serde_json::from_slice(&lake.get(&key).await.unwrap().unwrap()).unwrap();
        rec.files.extend(shared.cloned());
        rec.shares = vec![Share {
            topic: "clicks".into(),
            partition: 3,
            end: 80,
        }];
        lake.put(&key, Bytes::from(serde_json::to_vec(&rec).unwrap()))
            .await
            .unwrap();
        key
    }

    /// A cycle of partitions 2 and 3 wrote one shared file. Its commit landed for
    /// partition 3 only: partition 2 keeps the file and resumes after the cycle.
    /// Where it landed for neither (or partition 3's offset cannot vouch for it),
    /// the file goes as for any uncommitted cycle.
    #[tokio::test]
    async fn a_shared_file_committed_for_another_partition_is_kept() {
        let drain = Drain::new(Duration::from_secs(1));
        let other = Tp {
            topic: "clicks".into(),
            partition: 3,
        };
        for other_committed in [Some(80), Some(70), None] {
            let dir = tempfile::tempdir().unwrap();
            let lake = Lake::Local {
                root: dir.path().into(),
            };
            let files = write_record(&lake, 100, 150, "0000000a", Some(100)).await;
            let shared = shared_name(files[0].clone(), 2, 7);
            assert!(shared.ends_with("-0000000a-c7.parquet"), "{shared}");
            lake.put(&shared, Bytes::from_static(b"x")).await.unwrap();
            let key = share_record(&lake, Some(&shared)).await;
            let asked = std::sync::Mutex::new(Vec::new());
            let committed_of = |tps: &[Tp]| {
                asked.lock().unwrap().extend_from_slice(tps);
                Ok::<_, String>(vec![other_committed; tps.len()])
            };
            let r = rollback(&lake, &drain, "g/1", &tp(), Some(100), &committed_of)
                .await
                .unwrap();
            assert_eq!(*asked.lock().unwrap(), vec![other.clone()]);
            let landed = other_committed == Some(80);
            assert_eq!(r.offset, Some(if landed { 150 } else { 100 }));
            assert_eq!(r.kept, landed.then(|| key.clone()));
            for f in files.iter().chain([&shared]) {
                assert_eq!(lake.get(f).await.unwrap().is_some(), landed, "{f}");
            }
        }
        // The group cannot tell: the rollback stops rather than guess.
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::Local {
            root: dir.path().into(),
        };
        let files = write_record(&lake, 100, 150, "0000000a", None).await;
        share_record(&lake, None).await;
        let down = |_: &[Tp]| Err("broker down".to_string());
        let e = rollback(&lake, &drain, "g/1", &tp(), Some(100), &down)
            .await
            .unwrap_err();
        assert!(matches!(e, CommitError::SharesUnknown { .. }), "{e}");
        assert!(lake.get(&files[0]).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_group_that_lost_its_offset_resumes_from_the_lakes_records() {
        let drain = Drain::new(Duration::from_secs(1));
        for c_complete in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let lake = Lake::Local {
                root: dir.path().into(),
            };
            // A committed; B committed (C's record says so); C's uploads complete or not.
            let a = write_record(&lake, 0, 100, "0000000a", None).await;
            let b = write_record(&lake, 100, 150, "0000000b", Some(100)).await;
            let c = write_record(&lake, 150, 200, "0000000c", Some(150)).await;
            if !c_complete {
                lake.delete(&c[1]).await.unwrap();
            }
            let r = rollback(&lake, &drain, "g/1", &tp(), None, &none)
                .await
                .unwrap();
            let (want, kept) = if c_complete {
                (200, "0000000c")
            } else {
                (150, "0000000b")
            };
            assert_eq!(r.offset, Some(want));
            assert_eq!(r.kept, Some(record_key("g/1", &tp(), want - 50, kept)));
            for f in a.iter().chain(&b) {
                assert!(lake.get(f).await.unwrap().is_some(), "{f} is committed");
            }
            assert_eq!(lake.get(&c[0]).await.unwrap().is_some(), c_complete);
            // A later group offset wins over the lake's.
            let r = rollback(&lake, &drain, "g/1", &tp(), Some(400), &none)
                .await
                .unwrap();
            assert_eq!(r.offset, Some(400));
        }
    }

    #[tokio::test]
    async fn a_fenced_writer_removes_only_its_own_objects() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::Local {
            root: dir.path().into(),
        };
        let drain = Drain::new(Duration::from_secs(1));
        // Two writers that both started a cycle at offset 100 of the same partition.
        let stale = write_tagged(&lake, 100, 150, "00000001").await;
        let owner = write_tagged(&lake, 100, 180, "00000002").await;
        assert!(stale.iter().all(|f| !owner.contains(f)), "names differ");
        let stale_record = record_key("g/1", &tp(), 100, "00000001");
        abandon(&lake, &drain, &stale, &[stale_record])
            .await
            .unwrap();
        for f in &stale {
            assert!(lake.get(f).await.unwrap().is_none(), "{f} must be gone");
        }
        for f in &owner {
            assert!(lake.get(f).await.unwrap().is_some(), "{f} must stay");
        }
        let left = lake.list("_lakewriter/recovery/").await.unwrap();
        assert_eq!(left, vec![record_key("g/1", &tp(), 100, "00000002")]);
    }
}
