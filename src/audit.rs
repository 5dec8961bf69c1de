//! Audit: compare what the lake holds with the group's committed offsets.
//!
//! Reads the `_topic`/`_partition`/`_offset` columns of every Parquet file of
//! a table and every dead-letter record, and reports per partition:
//! - gaps: offsets below the committed offset (and at or above the low
//!   watermark) found neither as a row nor as a dead letter;
//! - duplicates: offsets present more than once;
//! - orphans: rows at or above the committed offset (visible but not
//!   committed), and recovery records still pending.
//!
//! Run it on a quiesced group: a running writer legitimately has a flush in
//! flight. A compaction in progress is accounted for: the outputs of a merge
//! before its commit point and the inputs of one after it are not counted. Compacted or transactional topics have offsets that hold no
//! record; those show up as gaps.

use std::collections::BTreeMap;
use std::fmt::Write;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use rdkafka::consumer::Consumer;

use crate::config::Config;
use crate::deadletter;
use crate::offsets::Tp;
use crate::source;
use crate::upload::{Lake, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Lake(#[from] UploadError),
    #[error(transparent)]
    Kafka(#[from] source::SourceError),
    #[error("{key}: {msg}")]
    BadFile { key: String, msg: String },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionAudit {
    pub committed: Option<i64>,
    pub low: i64,
    pub rows: u64,
    pub dead_letters: u64,
    /// Missing offset ranges `[a, b)`.
    pub gaps: Vec<(i64, i64)>,
    pub duplicates: Vec<i64>,
    pub orphans: Vec<i64>,
}

impl PartitionAudit {
    pub fn gap_count(&self) -> i64 {
        self.gaps.iter().map(|(a, b)| b - a).sum()
    }
    pub fn clean(&self) -> bool {
        self.gaps.is_empty() && self.duplicates.is_empty() && self.orphans.is_empty()
    }
}

#[derive(Debug, Default, Clone)]
pub struct AuditReport {
    pub partitions: BTreeMap<(String, i32), PartitionAudit>,
    pub pending_recovery_records: Vec<String>,
    pub files: u64,
}

impl AuditReport {
    pub fn clean(&self) -> bool {
        self.pending_recovery_records.is_empty()
            && self.partitions.values().all(PartitionAudit::clean)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<28} {:>5} {:>12} {:>10} {:>8} {:>8} {:>6} {:>7}",
            "topic", "part", "committed", "rows", "dead", "gaps", "dups", "orphans"
        );
        for ((t, p), a) in &self.partitions {
            let _ = writeln!(
                s,
                "{:<28} {:>5} {:>12} {:>10} {:>8} {:>8} {:>6} {:>7}",
                t,
                p,
                a.committed.map_or("-".into(), |c| c.to_string()),
                a.rows,
                a.dead_letters,
                a.gap_count(),
                a.duplicates.len(),
                a.orphans.len()
            );
            for (x, y) in a.gaps.iter().take(5) {
                let _ = writeln!(s, "    gap: offsets {x}..{y}");
            }
            if !a.duplicates.is_empty() {
                let _ = writeln!(
                    s,
                    "    duplicates: {:?}{}",
                    &a.duplicates[..a.duplicates.len().min(10)],
                    if a.duplicates.len() > 10 { " …" } else { "" }
                );
            }
            if !a.orphans.is_empty() {
                let _ = writeln!(
                    s,
                    "    orphans (rows past the committed offset): {:?}{}",
                    &a.orphans[..a.orphans.len().min(10)],
                    if a.orphans.len() > 10 { " …" } else { "" }
                );
            }
        }
        for r in &self.pending_recovery_records {
            let _ = writeln!(s, "pending recovery record: {r}");
        }
        let _ = writeln!(
            s,
            "{} files; {}",
            self.files,
            if self.clean() {
                "CLEAN: no gap, duplicate or orphan"
            } else {
                "PROBLEMS FOUND"
            }
        );
        s
    }
}

fn read_offsets(key: &str, body: bytes::Bytes) -> Result<RecordBatch, AuditError> {
    let bad = |e: &dyn std::fmt::Display| AuditError::BadFile {
        key: key.to_string(),
        msg: e.to_string(),
    };
    let b = ParquetRecordBatchReaderBuilder::try_new(body).map_err(|e| bad(&e))?;
    let mask = ProjectionMask::columns(b.parquet_schema(), ["_topic", "_partition", "_offset"]);
    let r = b.with_projection(mask).build().map_err(|e| bad(&e))?;
    let batches: Vec<RecordBatch> = r.collect::<Result<_, _>>().map_err(|e| bad(&e))?;
    let Some(first) = batches.first() else {
        return Ok(RecordBatch::new_empty(std::sync::Arc::new(
            arrow::datatypes::Schema::empty(),
        )));
    };
    arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| bad(&e))
}

/// Audit `cfg.topics` (tables as configured) against `cfg.group`.
pub async fn audit(cfg: &Config, lake: &Lake) -> Result<AuditReport, AuditError> {
    let mut report = AuditReport::default();
    // offset → occurrences, per partition
    let mut seen: BTreeMap<(String, i32), BTreeMap<i64, u32>> = BTreeMap::new();
    let mut rows: BTreeMap<(String, i32), u64> = BTreeMap::new();
    let mut dead: BTreeMap<(String, i32), u64> = BTreeMap::new();
    let tables: std::collections::BTreeSet<String> = cfg
        .topics
        .iter()
        .map(|t| cfg.table.clone().unwrap_or_else(|| t.clone()))
        .collect();
    for table in &tables {
        let keys = lake.list(&format!("{table}/")).await?;
        // A merge in progress shows its rows twice for a while (inputs and
        // outputs); count each row once, as readers of the deduplicating view do.
        let hidden = crate::compact::hidden_keys(lake).await?;
        for key in keys {
            if !key.ends_with(".parquet") || hidden.contains(&key) {
                continue;
            }
            let Some(body) = lake.get(&key).await? else {
                continue;
            };
            report.files += 1;
            let b = read_offsets(&key, body)?;
            if b.num_rows() == 0 {
                continue;
            }
            let (Some(t), Some(p), Some(o)) = (
                b.column_by_name("_topic"),
                b.column_by_name("_partition"),
                b.column_by_name("_offset"),
            ) else {
                return Err(AuditError::BadFile {
                    key,
                    msg: "no _topic/_partition/_offset columns".into(),
                });
            };
            let (t, p, o) = (
                t.as_string::<i32>(),
                p.as_primitive::<Int32Type>(),
                o.as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                let k = (t.value(i).to_string(), p.value(i));
                *seen
                    .entry(k.clone())
                    .or_default()
                    .entry(o.value(i))
                    .or_default() += 1;
                *rows.entry(k).or_default() += 1;
            }
        }
        for key in lake
            .list(&format!("_lakewriter/dead_letters/{table}/"))
            .await?
        {
            let Some(body) = lake.get(&key).await? else {
                continue;
            };
            let dls = deadletter::from_ndjson(&body).map_err(|e| AuditError::BadFile {
                key: key.clone(),
                msg: e.to_string(),
            })?;
            for d in dls {
                let k = (d.topic.clone(), d.partition);
                *seen
                    .entry(k.clone())
                    .or_default()
                    .entry(d.offset)
                    .or_default() += 1;
                *dead.entry(k).or_default() += 1;
            }
        }
    }
    let group_dir = format!(
        "_lakewriter/recovery/{}/",
        crate::route::escape_partition_value(&cfg.group)
    );
    let records = lake.list(&group_dir).await?;

    let consumer: source::Source = source::consumer(cfg)?;
    let timeout = std::time::Duration::from_secs(15);
    for topic in &cfg.topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(source::SourceError::from)?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let tps: Vec<Tp> = parts
            .iter()
            .map(|&p| Tp {
                topic: topic.as_str().into(),
                partition: p,
            })
            .collect();
        let committed =
            source::committed(&consumer, &tps, timeout).map_err(source::SourceError::from)?;
        // A record at or below its partition's committed offset is the partition's
        // checkpoint (see commit.rs), not a pending flush.
        for (tp, c) in tps.iter().zip(&committed) {
            let dir = crate::commit::record_dir(&cfg.group, tp);
            for key in records.iter().filter(|k| k.starts_with(&dir)) {
                let end = match lake.get(key).await? {
                    Some(b) => serde_json::from_slice::<crate::commit::RecoveryRecord>(&b)
                        .map(|r| r.end)
                        .ok(),
                    None => continue,
                };
                if end.is_none_or(|e| c.is_none_or(|c| e > c)) {
                    report.pending_recovery_records.push(key.clone());
                }
            }
        }
        for (tp, c) in tps.iter().zip(committed) {
            let (low, _high) = consumer
                .fetch_watermarks(topic, tp.partition, timeout)
                .map_err(source::SourceError::from)?;
            let k = (topic.clone(), tp.partition);
            let offsets = seen.remove(&k).unwrap_or_default();
            let mut a = PartitionAudit {
                committed: c,
                low,
                rows: rows.get(&k).copied().unwrap_or(0),
                dead_letters: dead.get(&k).copied().unwrap_or(0),
                ..Default::default()
            };
            let end = c.unwrap_or(0);
            // Offsets below the low watermark may have been ingested before retention removed them.
            let mut expect = low;
            for (&o, &n) in &offsets {
                if n > 1 {
                    a.duplicates.push(o);
                }
                if o >= end {
                    a.orphans.push(o);
                    continue;
                }
                if o < low {
                    continue;
                }
                if o > expect {
                    a.gaps.push((expect, o));
                }
                expect = expect.max(o + 1);
            }
            if expect < end {
                a.gaps.push((expect, end));
            }
            report.partitions.insert(k, a);
        }
    }
    // Rows of partitions the topic does not have (should never happen).
    for (k, offsets) in seen {
        if cfg.topics.contains(&k.0) {
            report.partitions.insert(
                k,
                PartitionAudit {
                    orphans: offsets.keys().copied().collect(),
                    ..Default::default()
                },
            );
        }
    }
    Ok(report)
}
