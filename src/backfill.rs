//! Backfill planning: turn `--from`/`--to` into per-partition offset ranges.
//!
//! A backfill assigns partitions directly (no group subscription, so it
//! never disturbs stream writers) and commits its progress under its own
//! group id, derived from its arguments: re-running the same command resumes
//! where a killed run stopped, and a finished range is not written twice.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::offsets::{Bound, Tp};
use crate::source::{self, OnRebalance, Source, SourceError};

const TIMEOUT: Duration = Duration::from_secs(15);

/// The range of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRange {
    pub tp: Tp,
    /// Where this run starts (the later of `--from` and the backfill's committed progress).
    pub start: i64,
    /// `--from` resolved, before progress.
    pub from: i64,
    /// Exclusive end.
    pub end: i64,
    /// The backfill group's committed offset (progress of an earlier run).
    pub committed: Option<i64>,
}

impl PartRange {
    pub fn remaining(&self) -> i64 {
        (self.end - self.start).max(0)
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub ranges: Vec<PartRange>,
    /// Kafka-timestamp filter `[from, to)` when a bound is a time.
    pub time_filter: (Option<i64>, Option<i64>),
}

/// The Kafka timestamp of the record at `offset` (None if unreadable).
fn timestamp_at(brokers_cfg: &rdkafka::ClientConfig, tp: &Tp, offset: i64) -> Option<i64> {
    let mut cfg = brokers_cfg.clone();
    cfg.set("group.id", "lakewriter-probe")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))
        .ok()?;
    c.assign(&tpl).ok()?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            return m.timestamp().to_millis();
        }
    }
    None
}

fn resolve<S: OnRebalance>(
    consumer: &Source<S>,
    client_cfg: &rdkafka::ClientConfig,
    tp: &Tp,
    bound: &Bound,
    low: i64,
    high: i64,
    is_from: bool,
) -> Result<i64, SourceError> {
    Ok(match bound {
        Bound::Earliest => low,
        Bound::Latest => high,
        Bound::Offsets(m) => m
            .get(&tp.partition)
            .copied()
            .unwrap_or(if is_from { low } else { high })
            .clamp(low, high),
        Bound::Time(t) => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*t))?;
            let got = consumer.offsets_for_times(tpl, TIMEOUT)?;
            match got
                .find_partition(&tp.topic, tp.partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => {
                    // Kafka answers "no record at or after t" with the end; some brokers
                    // (tansu) answer 0. Record 0 older than t means the latter.
                    if o == low
                        && high > low
                        && timestamp_at(client_cfg, tp, o).is_some_and(|ts| ts < *t)
                    {
                        high
                    } else {
                        o.clamp(low, high)
                    }
                }
                _ => high,
            }
        }
    })
}

/// Resolve the range for every partition of `topics` (or the `partitions` subset).
pub fn plan<S: OnRebalance>(
    consumer: &Source<S>,
    client_cfg: &rdkafka::ClientConfig,
    topics: &[String],
    partitions: Option<&[i32]>,
    from: &Bound,
    to: &Bound,
    group: &str,
) -> Result<Plan, SourceError> {
    let mut tps = Vec::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), TIMEOUT)?;
        let Some(mt) = md.topics().iter().find(|m| m.name() == t) else {
            return Err(SourceError::NoSuchTopic(t.clone()));
        };
        for p in mt.partitions() {
            if partitions.is_none_or(|ps| ps.contains(&p.id())) {
                tps.push(Tp {
                    topic: t.as_str().into(),
                    partition: p.id(),
                });
            }
        }
    }
    tps.sort();
    let committed = source::committed(consumer, &tps, TIMEOUT)?;
    let mut ranges = Vec::new();
    for (tp, c) in tps.into_iter().zip(committed) {
        let (low, high) = consumer.fetch_watermarks(&tp.topic, tp.partition, TIMEOUT)?;
        let f = resolve(consumer, client_cfg, &tp, from, low, high, true)?;
        let e = resolve(consumer, client_cfg, &tp, to, low, high, false)?.max(f);
        // Progress of an earlier run of the same backfill (its own group).
        let start = c.map_or(f, |c| c.clamp(f, e));
        tracing::debug!(group, topic = %tp.topic, partition = tp.partition, from = f, start, end = e, "backfill range");
        ranges.push(PartRange {
            tp,
            start,
            from: f,
            end: e,
            committed: c,
        });
    }
    let time = |b: &Bound| {
        if let Bound::Time(t) = b {
            Some(*t)
        } else {
            None
        }
    };
    Ok(Plan {
        ranges,
        time_filter: (time(from), time(to)),
    })
}
