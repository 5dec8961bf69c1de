//! The stream loop: source → route → buffer, and the flush cycle
//! encode → upload → commit. Runs on its own thread; S3 calls are driven on
//! the tokio runtime through a handle.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::Schema;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use rdkafka::consumer::Consumer;
use tokio::runtime::Handle;

use crate::buffer::{Buffer, Buffers, Cycle, Dest, FileKey, Range};
use crate::commit::{self, RecoveryRecord};
use crate::config::Config;
use crate::deadletter::{self, DeadLetter};
use crate::encode::{self, EncodeOptions};
use crate::metrics::METRICS;
use crate::offsets::Tp;
use crate::route;
use crate::shutdown::Drain;
use crate::source::{self, OnRebalance};
use crate::upload::{retry, Lake, UploadError};
use crate::Error;
use crate::{backfill, fault, health};

/// The consumer, its context owning the [`State`] while the loop runs.
type Source = source::Source<State>;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);
const UPLOAD_CONCURRENCY: usize = 8;

/// What a run did, for the final report and for tests.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events_in: u64,
    pub bytes_in: u64,
    pub rows_written: u64,
    pub dead_letters: u64,
    /// Messages without a value (tombstones), skipped and committed.
    pub tombstones: u64,
    pub files: u64,
    pub bytes_out: u64,
    pub flushes: u64,
    pub elapsed: Duration,
    /// Rows per `table/date=…/event_type=…` directory.
    pub rows_per_dir: BTreeMap<String, u64>,
    /// Offsets committed at the end, per partition.
    pub committed: BTreeMap<String, i64>,
}

struct PartState {
    /// Next offset this member will see (committed offset at assignment, then consumed + 1).
    pos: i64,
    /// High watermark at assignment (`--until-caught-up`) or the backfill range end.
    end: i64,
    /// The partition's committed offset as this member knows it (written into each
    /// cycle's recovery record as the lake's checkpoint).
    committed: Option<i64>,
    /// Recovery records to delete once the partition's next cycle is committed
    /// (the previous checkpoint, and records whose commit outcome was unknown).
    superseded: Vec<String>,
}

/// The pipeline's state; owned by the consumer context while running (see `source`).
pub struct State {
    cfg: Arc<Config>,
    lake: Lake,
    rt: Handle,
    drain: Drain,
    buffers: Buffers,
    schemas: HashMap<(Arc<str>, String), Schema>,
    assigned: HashMap<Tp, PartState>,
    topics: HashMap<String, (Arc<str>, Arc<str>)>,
    writer: String,
    /// Random tag in every object name this process writes (see `commit::writer_tag`).
    tag: String,
    summary: Summary,
    errors_logged: u64,
    /// An error raised inside a rebalance callback, surfaced after `poll`.
    pending_error: Option<Error>,
    /// What only a backfill has (time filter, progress, lease); `None` while streaming.
    backfill: Option<BackfillState>,
    per_topic: HashMap<Arc<str>, [u64; 3]>,
    last_report: Instant,
    /// Flush cycles started by this process.
    cycles: u64,
    dlq: Option<deadletter::KafkaSink>,
    /// Partitions sought back during the current batch (a fenced flush): the rest of
    /// the batch holds messages of theirs from before the seek, which librdkafka
    /// fetches again, so they are skipped.
    sought: Vec<Tp>,
    /// The topic-partition and table of the last message ingested.
    last: Option<(Tp, Arc<str>)>,
    encoders: Encoders,
    /// Since when the group has refused commits for lack of authorization.
    commit_refused_since: Option<Instant>,
}

#[derive(Default)]
struct BackfillState {
    /// Kafka-timestamp filter `[from, to)`.
    time_filter: (Option<i64>, Option<i64>),
    progress: Option<Progress>,
    /// The lease on its group (none in a dry run), renewed until `lease_stop`.
    lease: Option<crate::lease::Lease>,
    lease_stop: tokio_util::sync::CancellationToken,
}

struct Progress {
    total: u64,
    last_log: Instant,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

pub fn run_blocking(cfg: Config, lake: Lake, rt: Handle, drain: Drain) -> Result<Summary, Error> {
    let started = Instant::now();
    let consumer = source::consumer(&cfg)?;
    source::check(&consumer, &cfg.brokers, &cfg.topics, KAFKA_TIMEOUT)?;
    // Dropped before the consumer (declared after it).
    let mut feed = source::Feed::new(&consumer)?;
    let topic_map = cfg
        .topics
        .iter()
        .map(|t| {
            let table: Arc<str> = cfg.table.clone().unwrap_or_else(|| t.clone()).into();
            (t.clone(), (Arc::<str>::from(t.as_str()), table))
        })
        .collect();
    let encoders = Encoders::new(cfg.encode_threads);
    let mut st = State {
        buffers: Buffers::new(cfg.flush.clone()),
        cfg: Arc::new(cfg),
        lake,
        rt,
        drain,
        schemas: HashMap::new(),
        assigned: HashMap::new(),
        topics: topic_map,
        writer: format!("{}-{}", hostname(), std::process::id()),
        tag: commit::writer_tag(),
        summary: Summary::default(),
        errors_logged: 0,
        pending_error: None,
        backfill: None,
        per_topic: HashMap::new(),
        last_report: Instant::now(),
        cycles: 0,
        dlq: None,
        sought: Vec::new(),
        last: None,
        encoders,
        commit_refused_since: None,
    };
    st.seed_event_types()?;
    if let Some(t) = &st.cfg.dlq_topic {
        st.dlq = Some(deadletter::KafkaSink::new(
            source::client_config(&st.cfg),
            t,
        )?);
    }
    match st.cfg.backfill.clone() {
        None => {
            let topics: Vec<&str> = st.cfg.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(source::SourceError::from)?;
            tracing::info!(topics = ?st.cfg.topics, group = %st.cfg.group, lake = %st.cfg.lake, "consuming");
        }
        Some(spec) => {
            let mut backfill = BackfillState::default();
            match st.start_backfill(&consumer, &spec, &mut backfill) {
                Ok(Some(summary)) => return Ok(summary),
                Ok(None) => st.backfill = Some(backfill),
                Err(e) => {
                    // A lease taken before the failure is not renewed any more: it expires.
                    backfill.lease_stop.cancel();
                    return Err(e);
                }
            }
        }
    }
    *consumer.context().state() = Some(st);
    let result = run_loop(&consumer, &mut feed);
    // Leave the group promptly so partitions move without waiting for the session timeout
    // (with nothing buffered any more, the revoke callback has nothing to flush).
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(50));
    let mut st = consumer
        .context()
        .state()
        .take()
        .ok_or_else(|| Error::Join("pipeline state lost".into()))?;
    if let Some(b) = st.backfill.take() {
        b.lease_stop.cancel();
        if let Some(l) = b.lease {
            if let Err(e) = st.rt.block_on(l.release()) {
                tracing::warn!(error = %e, "cannot release the backfill's lease; it expires by itself");
            }
        }
        if let Some(bar) = b.progress.and_then(|p| p.bar) {
            bar.finish_and_clear();
        }
    }
    st.summary.elapsed = started.elapsed();
    result?;
    if st.cfg.backfill.is_some() {
        let missing: Vec<String> = st
            .assigned
            .iter()
            .filter(|(_, p)| p.pos < p.end)
            .map(|(tp, p)| {
                format!(
                    "{}/{}: offsets {}..{}",
                    tp.topic, tp.partition, p.pos, p.end
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(Error::Incomplete(missing.join("; ")));
        }
    }
    Ok(st.summary)
}

fn offset_ahead(group: &str, tp: &Tp, committed: i64, seen: i64, what: &str) -> Error {
    Error::OffsetAhead(format!(
        "{}/{}: the group's offset {committed} is past {what} {seen} (topic recreated, log truncated or offsets reset?). \
         Nothing was written. To read the partition again from its start, check the lake with \
         `lakewriter audit`, then run under a new --group, or reset the group's offsets and delete \
         the partition's checkpoint records under {}",
        tp.topic,
        tp.partition,
        commit::record_dir(group, tp)
    ))
}

/// The group's committed offsets of `tps` (a rollback that cannot learn them stops).
fn committed_of(consumer: &Source, tps: &[Tp]) -> Result<Vec<Option<i64>>, String> {
    source::committed(consumer, tps, KAFKA_TIMEOUT).map_err(|e| e.to_string())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lakewriter".into())
}

/// The loop. The state is locked only between polls: rebalance callbacks
/// run inside `poll` and take it themselves.
///
/// Each turn serves one event of the consumer queue (`poll`: rebalances, errors;
/// it returns a message only for a partition not forwarded to the feed), then
/// ingests a batch from the feed. A rebalance therefore never runs while a batch
/// is half ingested; messages of a partition revoked while they waited in the
/// feed are discarded by librdkafka, and `ingest` drops any message of a
/// partition this member does not hold.
fn run_loop(consumer: &Source, feed: &mut source::Feed<'_, State>) -> Result<(), Error> {
    let ctx = consumer.context();
    let mut timeout = Duration::from_millis(100);
    loop {
        let msg = consumer.poll(Duration::ZERO);
        let idle = msg.is_none();
        let n = feed.fill(if msg.is_some() {
            Duration::ZERO
        } else {
            timeout
        });
        let mut guard = ctx.state();
        let Some(st) = guard.as_mut() else {
            return Err(Error::Join("pipeline state lost".into()));
        };
        if let Some(e) = st.pending_error.take() {
            return Err(e);
        }
        // This batch was fetched after any earlier seek took effect.
        st.sought.clear();
        // `now` only drives the age limit and the once-a-second report: read once a turn.
        let mut now = Instant::now();
        match msg {
            Some(Ok(m)) => st.ingest(&source::Record::of(&m), now),
            Some(Err(e)) => st.consumer_error(&e),
            None => {}
        }
        for r in feed.records() {
            match r {
                Ok(r) => st.ingest(&r, now),
                Err(e) => st.consumer_error(&e),
            }
            if st.pending_error.is_some() {
                break;
            }
            // Size limits are checked per message, so a cycle never holds more than
            // them; the age limit once a turn, below (`now` is the turn's).
            if let Some(reason) = st.buffers.limit_reached() {
                st.flush(consumer, reason)?;
                now = Instant::now();
            }
        }
        if let Some(reason) = st.buffers.flush_due(now) {
            st.flush(consumer, reason)?;
            now = Instant::now();
        }
        if now.duration_since(st.last_report) >= Duration::from_secs(1) {
            st.report(consumer);
        }
        if st.drain.is_draining() {
            tracing::info!(buffered_bytes = st.buffers.bytes(), "draining: final flush");
            break;
        }
        if st.cfg.until_caught_up && n == 0 && idle {
            st.advance_to_positions(consumer);
        }
        if st.cfg.until_caught_up && st.caught_up() {
            tracing::info!("caught up with the end offsets");
            break;
        }
        // While messages flow the next turn does not wait; an idle one waits up to
        // the next deadline (or until an event arrives).
        timeout = if n > 0 {
            Duration::ZERO
        } else {
            st.buffers
                .time_to_interval(now)
                .map_or(Duration::from_millis(100), |d| {
                    d.min(Duration::from_millis(100))
                })
        };
    }
    let mut guard = ctx.state();
    let Some(st) = guard.as_mut() else {
        return Err(Error::Join("pipeline state lost".into()));
    };
    if !st.buffers.is_empty() {
        st.flush(consumer, "shutdown")?;
    }
    st.report(consumer);
    Ok(())
}

impl State {
    /// Offsets the application never sees — transaction markers, aborted
    /// records — still move the consumer's position. When a turn brought no
    /// message, the position (not the last record + 1) tells how far a
    /// partition is read, so a range that ends in a commit marker is finished.
    fn advance_to_positions(&mut self, consumer: &Source) {
        if self.assigned.values().all(|p| p.pos >= p.end) {
            return;
        }
        let Ok(tpl) = consumer.position() else {
            return;
        };
        for e in tpl.elements() {
            if let rdkafka::Offset::Offset(o) = e.offset() {
                let tp = Tp {
                    topic: e.topic().into(),
                    partition: e.partition(),
                };
                if let Some(p) = self.assigned.get_mut(&tp) {
                    p.pos = p.pos.max(o);
                }
            }
        }
    }

    fn caught_up(&self) -> bool {
        let started = self.cfg.backfill.is_some() || !self.assigned.is_empty();
        started && self.assigned.values().all(|p| p.pos >= p.end)
    }

    /// Resolve the range, assign it directly (no group membership), roll back
    /// an interrupted earlier run. Returns a summary when there is nothing to run.
    fn start_backfill(
        &mut self,
        consumer: &Source,
        spec: &crate::config::BackfillSpec,
        backfill: &mut BackfillState,
    ) -> Result<Option<Summary>, Error> {
        // A backfill must never share a group with live members (stream writers).
        if let Ok(groups) = consumer.fetch_group_list(Some(&self.cfg.group), KAFKA_TIMEOUT) {
            if groups
                .groups()
                .iter()
                .any(|g| g.name() == self.cfg.group && !g.members().is_empty())
            {
                return Err(Error::Unsafe(format!(
                    "group {:?} has active members (a stream writer?); a backfill needs its own --group",
                    self.cfg.group
                )));
            }
        }
        if !spec.dry_run {
            // Before the plan: a run that waited for an earlier one must see its commits.
            let holder = format!("{}-{}", self.writer, self.tag);
            let lease = self.rt.block_on(crate::lease::Lease::acquire(
                &self.lake,
                &self.cfg.group,
                &holder,
                spec.lease_ttl,
            ))?;
            self.rt
                .spawn(lease.clone().keep_renewed(backfill.lease_stop.clone()));
            backfill.lease = Some(lease);
        }
        let client_cfg = source::client_config(&self.cfg);
        let plan = backfill::plan(
            consumer,
            &client_cfg,
            &self.cfg.topics,
            spec.partitions.as_deref(),
            &spec.from,
            &spec.to,
            &self.cfg.group,
        )?;
        let total: i64 = plan.ranges.iter().map(|r| r.remaining()).sum();
        if spec.dry_run {
            println!("backfill plan (group {}):", self.cfg.group);
            println!(
                "{:<30} {:>9} {:>14} {:>14} {:>14} {:>12}",
                "topic", "partition", "from", "start", "end", "messages"
            );
            for r in &plan.ranges {
                println!(
                    "{:<30} {:>9} {:>14} {:>14} {:>14} {:>12}",
                    r.tp.topic,
                    r.tp.partition,
                    r.from,
                    r.start,
                    r.end,
                    r.remaining()
                );
            }
            println!("total messages: {total}");
            return Ok(Some(Summary::default()));
        }
        backfill.time_filter = plan.time_filter;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for r in &plan.ranges {
            let resume = self.rt.block_on(commit::rollback(
                &self.lake,
                &self.drain,
                &self.cfg.group,
                &r.tp,
                r.committed,
                &|tps| committed_of(consumer, tps),
            ))?;
            // The lake's checkpoint counts when the group lost its offset.
            let start = resume
                .offset
                .map_or(r.start, |o| r.start.max(o.clamp(r.from, r.end)));
            if let Some(o) = resume.offset.filter(|&o| Some(o) != r.committed) {
                self.commit_resume(consumer, &r.tp, o);
            }
            if start < r.end {
                tpl.add_partition_offset(
                    &r.tp.topic,
                    r.tp.partition,
                    rdkafka::Offset::Offset(start),
                )
                .map_err(source::SourceError::from)?;
            }
            self.assigned.insert(
                r.tp.clone(),
                PartState {
                    pos: start,
                    end: r.end,
                    committed: resume.offset,
                    superseded: resume.kept.into_iter().collect(),
                },
            );
        }
        source::forward(consumer, &tpl);
        consumer.assign(&tpl).map_err(source::SourceError::from)?;
        health::HEALTH
            .started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(group = %self.cfg.group, partitions = plan.ranges.len(), messages = total, "backfill started");
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let b = indicatif::ProgressBar::new(total.max(0) as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, ETA {eta}) {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        backfill.progress = Some(Progress {
            total: total.max(0) as u64,
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
        });
        Ok(None)
    }
}

impl OnRebalance for State {
    fn on_revoke(&mut self, consumer: &Source, tps: &[Tp]) {
        if consumer.assignment_lost() {
            // Fenced (session expired): the partitions already belong to someone else and
            // a commit would be refused. Drop what is buffered; the new owner re-reads it.
            tracing::warn!(
                partitions = tps.len(),
                buffered_bytes = self.buffers.bytes(),
                "partitions lost (session expired); discarding their buffered events"
            );
        } else if !self.buffers.is_empty() && self.pending_error.is_none() {
            // Flush and commit now, while these partitions are still ours, so the
            // next owner starts exactly where this member stopped.
            if let Err(e) = self.flush(consumer, "revoke") {
                self.pending_error = Some(e);
            }
        }
        self.buffers.drop_partitions(tps);
        for tp in tps {
            self.assigned.remove(tp);
        }
        if let Ok(mut l) = METRICS.labeled.lock() {
            l.lag.retain(|(t, p), _| {
                !tps.iter()
                    .any(|tp| tp.topic.as_ref() == t && tp.partition == *p)
            });
        }
        tracing::info!(partitions = tps.len(), "partitions revoked");
    }

    fn on_assign(&mut self, consumer: &Source, tps: &[Tp]) {
        if let Err(e) = self.assign(consumer, tps) {
            self.pending_error = Some(e);
        }
    }
}

impl State {
    fn assign(&mut self, consumer: &Source, tps: &[Tp]) -> Result<(), Error> {
        health::HEALTH
            .started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if self.cfg.backfill.is_none() {
            self.refuse_a_leased_group()?;
        }
        let committed =
            source::committed(consumer, tps, KAFKA_TIMEOUT).map_err(source::SourceError::from)?;
        let mut rolled = 0;
        for (tp, c) in tps.iter().zip(&committed) {
            let resume = self.rt.block_on(commit::rollback(
                &self.lake,
                &self.drain,
                &self.cfg.group,
                tp,
                *c,
                &|tps| committed_of(consumer, tps),
            ))?;
            rolled += resume.stats.records_rolled_back;
            let (low, high) = consumer
                .fetch_watermarks(&tp.topic, tp.partition, KAFKA_TIMEOUT)
                .map_err(source::SourceError::from)?;
            tracing::debug!(topic = %tp.topic, partition = tp.partition, committed = ?c, resume = ?resume.offset, low, high, "assigned");
            if let Some(o) = resume.offset.filter(|&o| o > high) {
                return Err(offset_ahead(
                    &self.cfg.group,
                    tp,
                    o,
                    high,
                    "the partition's end",
                ));
            }
            if let Some(o) = resume.offset.filter(|&o| Some(o) != *c) {
                // The lake proved more committed than the group knows: tell the group,
                // and move the consumer (it starts from the group's offset, or the start).
                self.commit_resume(consumer, tp, o);
                if o > low {
                    consumer
                        .seek(
                            &tp.topic,
                            tp.partition,
                            rdkafka::Offset::Offset(o),
                            KAFKA_TIMEOUT,
                        )
                        .map_err(source::SourceError::from)?;
                }
            }
            self.assigned.insert(
                tp.clone(),
                PartState {
                    pos: resume.offset.unwrap_or(low).max(low),
                    end: high,
                    committed: resume.offset,
                    superseded: resume.kept.into_iter().collect(),
                },
            );
        }
        tracing::info!(
            partitions = tps.len(),
            rolled_back = rolled,
            "partitions assigned"
        );
        Ok(())
    }

    /// The event types each table already has in the lake (its stored schemas)
    /// count towards `--max-event-types`.
    fn seed_event_types(&mut self) -> Result<(), Error> {
        let tables: std::collections::BTreeSet<Arc<str>> =
            self.topics.values().map(|(_, t)| t.clone()).collect();
        let mut known = Vec::new();
        for table in tables {
            let dir = format!("_lakewriter/schemas/{table}/");
            let keys = self
                .rt
                .block_on(retry("list schemas", &self.drain, || self.lake.list(&dir)))?;
            for k in keys {
                if let Some(t) = k.strip_prefix(&dir).and_then(|t| t.strip_suffix(".json")) {
                    known.push((table.clone(), t.to_string()));
                }
            }
        }
        self.buffers
            .limit_event_types(self.cfg.max_event_types, known);
        Ok(())
    }

    /// Commit a resume point recovered from the lake's records (best effort: the
    /// partition's next cycle commits past it anyway).
    fn commit_resume(&self, consumer: &Source, tp: &Tp, offset: i64) {
        match source::commit(consumer, &[(tp.clone(), offset)]) {
            Ok(()) => {
                tracing::info!(topic = %tp.topic, partition = tp.partition, offset, "committed the resume point recovered from the lake")
            }
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, offset, error = %e, "cannot commit the resume point recovered from the lake yet")
            }
        }
    }

    fn table_of(&self, tp: &Tp) -> Arc<str> {
        self.topics
            .get(tp.topic.as_ref())
            .map_or_else(|| tp.topic.clone(), |(_, t)| t.clone())
    }

    /// A stream writer must not join a group a backfill holds: its rollback would
    /// delete the backfill's uncommitted files, which the backfill then commits past.
    fn refuse_a_leased_group(&self) -> Result<(), Error> {
        let key = crate::lease::lease_key(&self.cfg.group);
        let stored = self
            .rt
            .block_on(retry("read the group's lease", &self.drain, || {
                self.lake.get(&key)
            }))?;
        match stored.as_deref().map(crate::lease::live) {
            Some(Ok(Some(l))) => Err(Error::Unsafe(format!(
                "group {:?} is held by backfill {} (lease {key}); a stream writer needs another --group",
                self.cfg.group, l.holder
            ))),
            Some(Err(e)) => {
                tracing::warn!(key = %key, error = %e, "ignoring an unreadable lease record");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether another member has taken this cycle's partitions: librdkafka knows the
    /// assignment was lost, or the group's offset moved past the cycle's start (only
    /// another owner commits there). Apache Kafka would refuse the commit anyway (stale
    /// generation); brokers that do not check generations (tansu) would let it move the
    /// new owner's offsets back, so the check runs on every cycle.
    fn taken_over(&self, consumer: &Source, ranges: &BTreeMap<Tp, Range>) -> bool {
        if self.cfg.backfill.is_none() && consumer.assignment_lost() {
            return true;
        }
        let tps: Vec<Tp> = ranges.keys().cloned().collect();
        match source::committed(consumer, &tps, KAFKA_TIMEOUT) {
            Ok(cs) => ranges
                .values()
                .zip(cs)
                .any(|(r, c)| c.is_some_and(|c| c > r.first)),
            Err(e) => {
                // Unknown: commit and let the broker's own generation check decide.
                tracing::warn!(error = %e, "cannot read committed offsets before the commit");
                false
            }
        }
    }

    /// Once a second: health, lag and per-topic metrics, backfill progress.
    fn report(&mut self, consumer: &Source) {
        self.last_report = Instant::now();
        health::mark_loop();
        METRICS.buffered_bytes.set(self.buffers.bytes() as u64);
        if let Ok(mut l) = METRICS.labeled.lock() {
            for (t, v) in &self.per_topic {
                l.topics.insert(t.to_string(), *v);
            }
            for (tp, p) in &self.assigned {
                let high = source::cached_high_watermark(consumer, tp)
                    .unwrap_or(p.end)
                    .max(p.end);
                l.lag
                    .insert((tp.topic.to_string(), tp.partition), (high - p.pos).max(0));
            }
        }
        if let Some(pr) = self.backfill.as_mut().and_then(|b| b.progress.as_mut()) {
            let left: i64 = self.assigned.values().map(|p| (p.end - p.pos).max(0)).sum();
            let done = pr.total.saturating_sub(left as u64);
            match &pr.bar {
                Some(bar) => {
                    bar.set_position(done);
                    bar.set_message(format!(
                        "{} rows, {} dead letters, {} files",
                        self.summary.rows_written, self.summary.dead_letters, self.summary.files
                    ));
                }
                None if pr.last_log.elapsed() >= Duration::from_secs(5) || left == 0 => {
                    pr.last_log = Instant::now();
                    let secs = pr.started.elapsed().as_secs_f64().max(1e-3);
                    let rate = done as f64 / secs;
                    let eta = if rate > 0.0 {
                        left as f64 / rate
                    } else {
                        f64::INFINITY
                    };
                    tracing::info!(
                        done,
                        total = pr.total,
                        events_per_s = rate as u64,
                        eta_s = eta.round(),
                        rows = self.summary.rows_written,
                        dead_letters = self.summary.dead_letters,
                        files = self.summary.files,
                        "backfill progress"
                    );
                }
                None => {}
            }
        }
    }

    fn consumer_error(&mut self, e: &rdkafka::error::KafkaError) {
        if matches!(e, rdkafka::error::KafkaError::PartitionEOF(_)) {
            return; // only with enable.partition.eof; not an error
        }
        self.errors_logged += 1;
        if self.errors_logged <= 10 || self.errors_logged.is_multiple_of(1000) {
            tracing::warn!(error = %e, count = self.errors_logged, "Kafka consumer error");
        }
    }

    fn ingest(&mut self, m: &source::Record<'_>, now: Instant) {
        // Messages come in runs per partition: the last one's names are reused.
        let same = self.last.as_ref().is_some_and(|(tp, _)| {
            tp.partition == m.partition
                && route::scan::short_eq(tp.topic.as_bytes(), m.topic.as_bytes())
        });
        if !same {
            let Some((topic, table)) = self.topics.get(m.topic) else {
                return;
            };
            let tp = Tp {
                topic: topic.clone(),
                partition: m.partition,
            };
            self.last = Some((tp, table.clone()));
        }
        let Some((tp, table)) = &self.last else {
            return;
        };
        let topic = &tp.topic;
        if !self.sought.is_empty() && self.sought.contains(tp) {
            return;
        }
        let Some(part) = self.assigned.get_mut(tp) else {
            return;
        };
        let offset = m.offset;
        if self.cfg.backfill.is_some() && offset >= part.end {
            return; // past the range: not ours to write
        }
        if offset < part.pos && self.cfg.backfill.is_none() {
            // The consumer was sent back below the committed offset (librdkafka resets
            // an out-of-range position to the start): the topic changed under the group.
            self.pending_error = Some(offset_ahead(
                &self.cfg.group,
                tp,
                part.pos,
                offset,
                "a record at",
            ));
            return;
        }
        part.pos = part.pos.max(offset + 1);
        if m.tombstone {
            // A deletion marker of a compacted topic: no event, nothing to keep.
            METRICS.tombstones.inc();
            self.summary.tombstones += 1;
            self.buffers.skip(tp, offset, now);
            return;
        }
        // A byte-order mark some producers put first is not part of the JSON.
        let payload = m.payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(m.payload);
        METRICS.events_in.inc();
        METRICS.bytes_in.add(payload.len() as u64);
        self.summary.events_in += 1;
        self.summary.bytes_in += payload.len() as u64;
        match self.per_topic.get_mut(topic) {
            Some(c) => c[0] += 1,
            None => {
                self.per_topic.insert(topic.clone(), [1, 0, 0]);
            }
        }
        let ts = m.timestamp_ms;
        if let Some(BackfillState {
            time_filter: (from, to),
            ..
        }) = &self.backfill
        {
            if from.is_some() || to.is_some() {
                let inside =
                    ts.is_some_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e));
                if !inside {
                    // Outside a time range (Kafka timestamps need not be monotonic): not
                    // written, but its offset is covered by the range's commit.
                    self.buffers.skip(tp, offset, now);
                    return;
                }
            }
        }
        let refused = match route::route(&self.cfg.route, payload, ts) {
            Ok(r) => {
                let dest = Dest {
                    table,
                    date: r.date,
                    event_type: &r.event_type,
                    tp,
                };
                self.buffers
                    .push(dest, payload, m.key, offset, ts, r.event_time_us, now)
                    .err()
                    .map(|e| e.to_string())
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = refused {
            let dl = DeadLetter::new(m.topic, m.partition, offset, ts, m.key, payload, reason);
            self.buffers.push_dead(tp, dl, now);
        }
    }

    fn load_schema(&mut self, table: &Arc<str>, event_type: &str) -> Result<(), Error> {
        let k = (table.clone(), event_type.to_string());
        if self.schemas.contains_key(&k) {
            return Ok(());
        }
        let key = schema_key(table, event_type);
        if let Some(body) = self
            .rt
            .block_on(retry("read schema", &self.drain, || self.lake.get(&key)))?
        {
            match serde_json::from_slice::<Schema>(&body) {
                Ok(s) => {
                    self.schemas.insert(k, s);
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "ignoring an unreadable stored schema")
                }
            }
        }
        Ok(())
    }

    /// One flush cycle: everything buffered becomes files, then offsets move.
    fn flush(&mut self, consumer: &Source, reason: &'static str) -> Result<(), Error> {
        let started = Instant::now();
        let cycle = self.buffers.take(reason);
        METRICS.buffered_bytes.set(0);
        if cycle.ranges.is_empty() {
            return Ok(());
        }
        let Cycle {
            files,
            ranges,
            mut dead,
            ..
        } = cycle;

        self.cycles += 1;
        let cycle = self.cycles;

        // Encode: group files by (table, event_type) so one schema evolves in order.
        // The partitions' buffers of one directory become one file (the map's order
        // puts them next to each other), cut where the flush limits would be passed.
        let mut groups: BTreeMap<GroupKey, Vec<(FileKey, Buffer)>> = BTreeMap::new();
        let limits = &self.cfg.flush;
        for (k, b) in files {
            let files = groups
                .entry((k.table.clone(), k.event_type.clone()))
                .or_default();
            match files.last_mut() {
                Some((last, joined))
                    if last.date == k.date
                        && joined.rows() + b.rows() <= limits.rows
                        && joined.bytes() + b.bytes() <= limits.bytes =>
                {
                    joined.append(b)
                }
                _ => files.push((k, b)),
            }
        }
        for (table, et) in groups.keys().cloned().collect::<Vec<_>>() {
            self.load_schema(&table, &et)?;
        }
        let opts = EncodeOptions {
            compression: self.cfg.compression,
            row_group_rows: self.cfg.row_group_rows,
            event_type_path: Some(self.cfg.route.event_type.segments().into()),
        };
        let ingested = chrono::Utc::now().timestamp_micros();
        let groups: Vec<_> = groups
            .into_iter()
            .map(|(k, v)| (self.schemas.get(&k).cloned(), k, v))
            .collect();
        let results = self.encoders.encode(groups, &opts, ingested);

        // Assemble the cycle's objects per partition.
        let mut objects: Vec<(String, Bytes)> = Vec::new();
        let mut per_tp: BTreeMap<Tp, Vec<String>> = BTreeMap::new();
        let mut changed_schemas: Vec<(String, Bytes)> = Vec::new();
        let mut rows_written = 0u64;
        let mut dir_rows: Vec<(String, u64)> = Vec::new();
        // Files with rows of several partitions, and those partitions.
        let mut shared: BTreeMap<String, Vec<Tp>> = BTreeMap::new();
        for g in results {
            if g.changed {
                METRICS.schema_changes.inc();
                if let Ok(body) = serde_json::to_vec_pretty(&g.schema) {
                    changed_schemas.push((schema_key(&g.table, &g.event_type), Bytes::from(body)));
                }
                tracing::info!(table = %g.table, event_type = %g.event_type, fields = g.schema.fields().len(), "schema created or widened");
            }
            self.schemas
                .insert((g.table.clone(), g.event_type.clone()), g.schema);
            for f in g.files {
                for d in f.dead {
                    let tp = Tp {
                        topic: d.topic.as_str().into(),
                        partition: d.partition,
                    };
                    dead.entry(tp).or_default().push(d);
                }
                let Some(pq) = f.parquet else { continue };
                let start = ranges.get(&f.key.tp).map_or(0, |r| r.first);
                let key = commit::data_key(
                    &f.key.table,
                    f.key.date,
                    &f.key.event_type,
                    &f.key.tp,
                    start,
                    &self.tag,
                );
                let key = commit::shared_name(key, f.parts.len(), cycle);
                if f.parts.len() > 1 {
                    shared.insert(key.clone(), f.parts.iter().map(|p| p.0.clone()).collect());
                }
                rows_written += f.rows as u64;
                for (tp, n) in &f.parts {
                    self.per_topic.entry(tp.topic.clone()).or_default()[1] += *n as u64;
                    per_tp.entry(tp.clone()).or_default().push(key.clone());
                }
                dir_rows.push((
                    format!(
                        "{}/date={}/event_type={}",
                        f.key.table, f.key.date, f.key.event_type
                    ),
                    f.rows as u64,
                ));
                objects.push((key, pq));
            }
        }

        // Dead letters: one file per table, named like the data files.
        let mut dead_files: BTreeMap<Arc<str>, Vec<DeadLetter>> = BTreeMap::new();
        let mut dead_names: BTreeMap<Arc<str>, (Tp, usize)> = BTreeMap::new();
        for (tp, dls) in dead.iter().filter(|(_, d)| !d.is_empty()) {
            let table = self.table_of(tp);
            dead_names
                .entry(table.clone())
                .or_insert_with(|| (tp.clone(), 0))
                .1 += 1;
            dead_files
                .entry(table)
                .or_default()
                .extend(dls.iter().cloned());
        }
        let dead_keys: BTreeMap<Arc<str>, String> = dead_names
            .into_iter()
            .map(|(table, (tp, parts))| {
                let start = ranges.get(&tp).map_or(0, |r| r.first);
                let key = commit::dead_letter_key(&table, &tp, start, &self.tag);
                (table, commit::shared_name(key, parts, cycle))
            })
            .collect();
        if let Some(sink) = &self.dlq {
            let all: Vec<DeadLetter> = dead_files.values().flatten().cloned().collect();
            if !all.is_empty() {
                let lake_key = |d: &DeadLetter| {
                    let tp = Tp {
                        topic: d.topic.as_str().into(),
                        partition: d.partition,
                    };
                    dead_keys
                        .get(&self.table_of(&tp))
                        .cloned()
                        .unwrap_or_default()
                };
                let cut = sink.send_all(&all, lake_key, &self.drain)?;
                METRICS.dead_letters_truncated.add(cut);
            }
        }
        let mut dead_count = 0u64;
        let mut dead_kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (tp, dls) in &dead {
            self.per_topic.entry(tp.topic.clone()).or_default()[2] += dls.len() as u64;
            if let Some(key) = dead_keys
                .get(&self.table_of(tp))
                .filter(|_| !dls.is_empty())
            {
                per_tp.entry(tp.clone()).or_default().push(key.clone());
            }
        }
        for (table, mut dls) in dead_files {
            dls.sort_by(|a, b| {
                (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
            });
            dead_count += dls.len() as u64;
            for d in &dls {
                *dead_kinds
                    .entry(deadletter::reason_kind(&d.reason))
                    .or_default() += 1;
            }
            if let Some(key) = dead_keys.get(&table) {
                let mut tps: Vec<Tp> = dls
                    .iter()
                    .map(|d| Tp {
                        topic: d.topic.as_str().into(),
                        partition: d.partition,
                    })
                    .collect();
                tps.dedup();
                if tps.len() > 1 {
                    shared.insert(key.clone(), tps);
                }
                objects.push((key.clone(), Bytes::from(deadletter::to_ndjson(&dls))));
            }
        }

        // 1. Recovery records, 2. schemas, 3. files.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let records: Vec<(String, Bytes)> = ranges
            .iter()
            .map(|(tp, r)| {
                let rec = RecoveryRecord {
                    version: 1,
                    group: self.cfg.group.clone(),
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    start: r.first,
                    end: r.next,
                    files: per_tp.get(tp).cloned().unwrap_or_default(),
                    writer: self.writer.clone(),
                    created_ms: now_ms,
                    committed_before: self.assigned.get(tp).and_then(|p| p.committed),
                    shares: shares_of(tp, per_tp.get(tp), &shared, &ranges),
                };
                (
                    commit::record_key(&self.cfg.group, tp, r.first, &self.tag),
                    Bytes::from(serde_json::to_vec(&rec).unwrap_or_default()),
                )
            })
            .collect();
        let bytes_out: u64 = objects
            .iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .map(|(_, b)| b.len() as u64)
            .sum();
        let n_files = objects
            .iter()
            .filter(|(k, _)| k.ends_with(".parquet"))
            .count() as u64;
        self.rt
            .block_on(put_all(&self.lake, &self.drain, records.clone()))?;
        fault::point("after_records", cycle);
        self.rt
            .block_on(put_all(&self.lake, &self.drain, changed_schemas))?;
        let mut objects = objects;
        let second_half = objects.split_off(objects.len() / 2);
        self.rt
            .block_on(put_all(&self.lake, &self.drain, objects))?;
        fault::point("mid_upload", cycle);
        self.rt
            .block_on(put_all(&self.lake, &self.drain, second_half))?;
        fault::point("after_upload", cycle);

        // 4. Commit, then 5. forget the records.
        let offsets: Vec<(Tp, i64)> = ranges.iter().map(|(tp, r)| (tp.clone(), r.next)).collect();
        let mut committed = false;
        // A backfill commits only while its lease is fresh: a run that stalled past
        // it may have been replaced, and the new run rolls back what it finds.
        let lease_lost = self
            .backfill
            .as_ref()
            .and_then(|b| b.lease.as_ref())
            .and_then(|l| self.rt.block_on(l.verify()).err());
        let mut fenced = lease_lost.is_some() || self.taken_over(consumer, &ranges);
        let mut commit_error = None;
        for attempt in 1..=3 {
            if fenced {
                break;
            }
            match source::commit(consumer, &offsets) {
                Ok(()) => {
                    committed = true;
                    break;
                }
                Err(e) if source::is_unauthorized(&e) => {
                    // Retrying within the cycle cannot help; the next cycles try again
                    // until --give-up-after, not ready meanwhile.
                    METRICS.commit_failures.inc();
                    health::set_permanent_error(true);
                    let since = *self.commit_refused_since.get_or_insert_with(Instant::now);
                    tracing::error!(error = %e, refused_for_s = since.elapsed().as_secs(), "the group refuses this member's commits (authorization); not ready");
                    // The final flush has no later cycle to try again in.
                    if since.elapsed() >= self.drain.give_up_after || reason == "shutdown" {
                        return Err(Error::Permanent(format!(
                            "offset commit refused for {:?}: {e}",
                            since.elapsed()
                        )));
                    }
                    break;
                }
                Err(e) => {
                    METRICS.commit_failures.inc();
                    commit_error = Some(e.to_string());
                    fenced = source::is_fenced(&e);
                    tracing::warn!(error = %e, attempt, fenced, "offset commit failed");
                    if fenced {
                        break; // refused for good: retrying cannot help
                    }
                    std::thread::sleep(Duration::from_millis(200 * attempt));
                }
            }
        }
        // A failed commit leaves its outcome open. Files of one partition can wait for
        // the next commit or owner to settle it; files several partitions share cannot,
        // since those partitions may go to different owners: settle it now.
        let mut not_landed = false;
        if !committed && !fenced && !shared.is_empty() {
            match settle(consumer, &ranges, &offsets) {
                Ok(true) => committed = true,
                Ok(false) => not_landed = true,
                Err(e) => {
                    return Err(Error::Uncommitted(format!(
                        "{}; then {e}",
                        commit_error.unwrap_or_else(|| "no answer".into())
                    )))
                }
            }
        }
        if committed {
            if self.commit_refused_since.take().is_some() {
                health::set_permanent_error(false);
            }
            fault::point("after_commit", cycle);
            METRICS.commits.inc();
            METRICS
                .last_commit_unix_ms
                .set(chrono::Utc::now().timestamp_millis() as u64);
            // This cycle's records become the partitions' checkpoints; the ones they
            // supersede go (as many deletes as records: the same cost as before).
            let mut old = Vec::new();
            for ((tp, r), (key, _)) in ranges.iter().zip(records) {
                match self.assigned.get_mut(tp) {
                    Some(p) => {
                        p.committed = Some(r.next);
                        old.append(&mut p.superseded);
                        p.superseded.push(key);
                    }
                    None => old.push(key),
                }
            }
            self.rt.block_on(delete_all(&self.lake, &self.drain, old))?;
            for (tp, o) in &offsets {
                self.summary
                    .committed
                    .insert(format!("{}/{}", tp.topic, tp.partition), *o);
            }
        } else if fenced || not_landed {
            // The group gave these partitions to another member, which re-reads them from
            // the committed offset: this cycle's objects would be duplicates. They carry
            // this writer's tag, so removing them cannot touch the new owner's. (Or the
            // commit did not land: the same removal, and the range is read again.)
            // A shared file is listed under each of its partitions: remove it once.
            let files: Vec<String> = per_tp
                .into_values()
                .flatten()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let keys: Vec<String> = records.into_iter().map(|(k, _)| k).collect();
            self.rt
                .block_on(commit::abandon(&self.lake, &self.drain, &files, &keys))?;
            // Should a partition stay ours after the rebalance, re-read the range too.
            for (tp, r) in &ranges {
                if let Some(p) = self.assigned.get_mut(tp) {
                    p.pos = r.first;
                    self.sought.push(tp.clone());
                    let _ = consumer.seek(
                        &tp.topic,
                        tp.partition,
                        rdkafka::Offset::Offset(r.first),
                        KAFKA_TIMEOUT,
                    );
                }
            }
            if fenced {
                tracing::warn!(
                    partitions = offsets.len(),
                    files = files.len(),
                    "this member was fenced out of the group: its uncommitted flush was removed"
                );
            } else {
                tracing::warn!(
                    partitions = offsets.len(),
                    files = files.len(),
                    "the offset commit did not land: the flush was removed and its range is read again"
                );
            }
            if let Some(e) = lease_lost {
                return Err(e.into());
            }
            if not_landed && reason == "shutdown" {
                return Err(Error::Uncommitted(
                    commit_error.unwrap_or_else(|| "no answer".into()),
                ));
            }
        } else {
            // Unknown outcome (e.g. a timeout: the commit may have landed). The files stay
            // with their recovery record; whoever owns these partitions next keeps them if
            // the committed offset covers them and rolls them back otherwise.
            tracing::error!(
                partitions = offsets.len(),
                "offsets not committed; the flush will be resolved on the next assignment"
            );
            for ((tp, _), (key, _)) in ranges.iter().zip(records) {
                if let Some(p) = self.assigned.get_mut(tp) {
                    p.superseded.push(key);
                }
            }
            // A run that ends here must not report success: nothing after it commits.
            if reason == "shutdown" {
                return Err(Error::Uncommitted(
                    commit_error.unwrap_or_else(|| "no answer".into()),
                ));
            }
        }

        let elapsed = started.elapsed();
        METRICS.flushes.inc();
        METRICS.flush_micros_total.add(elapsed.as_micros() as u64);
        METRICS.flush_duration.observe(elapsed);
        if committed {
            METRICS.events_written.add(rows_written);
            METRICS.dead_letters.add(dead_count);
            if let Ok(mut l) = METRICS.labeled.lock() {
                for (k, n) in dead_kinds {
                    *l.dead_reasons.entry(k).or_default() += n;
                }
            }
            METRICS.files_written.add(n_files);
            METRICS.bytes_written.add(bytes_out);
            self.summary.rows_written += rows_written;
            self.summary.dead_letters += dead_count;
            self.summary.files += n_files;
            self.summary.bytes_out += bytes_out;
            self.summary.flushes += 1;
            for (d, n) in dir_rows {
                *self.summary.rows_per_dir.entry(d).or_default() += n;
            }
        }
        tracing::info!(
            reason,
            rows = rows_written,
            dead_letters = dead_count,
            files = n_files,
            bytes = bytes_out,
            partitions = offsets.len(),
            ms = elapsed.as_millis() as u64,
            committed,
            "flush"
        );
        Ok(())
    }
}

fn schema_key(table: &str, event_type: &str) -> String {
    format!("_lakewriter/schemas/{table}/{event_type}.json")
}

async fn put_all(
    lake: &Lake,
    drain: &Drain,
    objects: Vec<(String, Bytes)>,
) -> Result<(), UploadError> {
    stream::iter(
        objects
            .into_iter()
            .map(|(k, b)| async move { retry("upload", drain, || lake.put(&k, b.clone())).await }),
    )
    .buffer_unordered(UPLOAD_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

async fn delete_all(lake: &Lake, drain: &Drain, keys: Vec<String>) -> Result<(), UploadError> {
    stream::iter(
        keys.into_iter()
            .map(|k| async move { retry("delete", drain, || lake.delete(&k)).await }),
    )
    .buffer_unordered(UPLOAD_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

struct FileOut {
    key: FileKey,
    parquet: Option<Bytes>,
    rows: usize,
    /// The partitions whose rows the file holds, with how many of each.
    parts: Vec<(Tp, usize)>,
    dead: Vec<DeadLetter>,
}

/// Whether a commit that reported failure landed after all: `true` when the group
/// holds every offset of it; `false` when it holds none; a commit that landed for
/// some partitions only is made whole by committing again.
fn settle(
    consumer: &Source,
    ranges: &BTreeMap<Tp, Range>,
    offsets: &[(Tp, i64)],
) -> Result<bool, rdkafka::error::KafkaError> {
    let tps: Vec<Tp> = ranges.keys().cloned().collect();
    let cs = source::committed(consumer, &tps, KAFKA_TIMEOUT)?;
    let landed = ranges
        .values()
        .zip(&cs)
        .filter(|(r, c)| c.is_some_and(|c| c >= r.next))
        .count();
    if landed == 0 {
        return Ok(false);
    }
    if landed < ranges.len() {
        tracing::warn!(
            landed,
            partitions = ranges.len(),
            "the offset commit landed for some partitions only; committing again"
        );
        source::commit(consumer, offsets)?;
    }
    Ok(true)
}

/// The other partitions that have rows in `tp`'s files, with their cycle ends.
fn shares_of(
    tp: &Tp,
    files: Option<&Vec<String>>,
    shared: &BTreeMap<String, Vec<Tp>>,
    ranges: &BTreeMap<Tp, Range>,
) -> Vec<commit::Share> {
    let mut out: Vec<commit::Share> = files
        .into_iter()
        .flatten()
        .filter_map(|f| shared.get(f))
        .flatten()
        .filter(|other| *other != tp)
        .filter_map(|other| {
            ranges.get(other).map(|r| commit::Share {
                topic: other.topic.to_string(),
                partition: other.partition,
                end: r.next,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Rows written per partition: each partition's rows less its dead letters.
/// Every partition of the buffer is listed, even with no row left: the file's
/// name and records depend on the partitions it was cut from.
fn rows_per_part(
    key: &FileKey,
    buf: &Buffer,
    rows: usize,
    dead: &[(usize, String)],
) -> Vec<(Tp, usize)> {
    if buf.parts.len() <= 1 {
        return vec![(key.tp.clone(), rows)];
    }
    let mut out: Vec<(Tp, usize)> = buf
        .parts
        .iter()
        .enumerate()
        .map(|(k, (tp, first))| {
            let end = buf.parts.get(k + 1).map_or(buf.rows(), |p| p.1);
            (tp.clone(), end - first)
        })
        .collect();
    for (i, _) in dead {
        let k = buf.parts.partition_point(|(_, first)| first <= i) - 1;
        out[k].1 -= 1;
    }
    out
}

struct GroupOut {
    table: Arc<str>,
    event_type: String,
    schema: Schema,
    changed: bool,
    files: Vec<FileOut>,
}

/// (table, event type): the files of one group share and evolve one schema.
type GroupKey = (Arc<str>, String);
type Group = (Option<Schema>, GroupKey, Vec<(FileKey, Buffer)>);

/// Encoder threads (CPU-bound work, never on the async runtime), started once
/// and kept for the pipeline's life: a thread keeps its allocator arena and its
/// zstd contexts, so each cycle encodes in memory the last one used. Threads
/// started per cycle landed in whichever arena came next and faulted their
/// working set in afresh (tens of MiB a cycle).
struct Encoders {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    work: EncodeFn,
}

type EncodeFn = fn(Group, EncodeOptions, i64) -> GroupOut;

type Job = (
    Group,
    EncodeOptions,
    i64,
    mpsc::Sender<std::thread::Result<GroupOut>>,
);

impl Encoders {
    fn new(threads: usize) -> Self {
        Self::with(threads, encode_group)
    }

    fn with(threads: usize, work: EncodeFn) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .filter_map(|i| {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("lw-encode-{i}"))
                    .spawn(move || loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((group, opts, ingested, out)) = job else {
                            break;
                        };
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            work(group, opts, ingested)
                        }));
                        let _ = out.send(r);
                    });
                match spawned {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start an encoder thread");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        Self {
            jobs: (!threads.is_empty()).then_some(tx),
            threads,
            work,
        }
    }

    /// Encode every group; results in no particular order.
    fn encode(&self, groups: Vec<Group>, opts: &EncodeOptions, ingested: i64) -> Vec<GroupOut> {
        let Some(jobs) = &self.jobs else {
            // No thread could be started: encode here rather than not at all.
            return groups
                .into_iter()
                .map(|g| (self.work)(g, opts.clone(), ingested))
                .collect();
        };
        let n = groups.len();
        let (tx, rx) = mpsc::channel();
        for g in groups {
            if let Err(mpsc::SendError((g, opts, ..))) =
                jobs.send((g, opts.clone(), ingested, tx.clone()))
            {
                // Unreachable while `self` holds the receivers' threads; stay correct anyway.
                let _ = tx.send(Ok((self.work)(g, opts, ingested)));
            }
        }
        drop(tx);
        let mut out = Vec::with_capacity(n);
        for r in rx.iter().take(n) {
            match r {
                Ok(g) => out.push(g),
                // An encoder panicked: the same as when encoding ran on a scoped thread.
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    }
}

impl Drop for Encoders {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn encode_group(
    (known, (table, event_type), files): Group,
    opts: EncodeOptions,
    ingested: i64,
) -> GroupOut {
    let mut schema = known.clone();
    let mut changed = false;
    let mut outs = Vec::with_capacity(files.len());
    for (key, buf) in files {
        let dead_of = |idx: usize, reason: String| {
            let tp = buf.tp_of(idx, &key.tp);
            DeadLetter::new(
                &tp.topic,
                tp.partition,
                buf.meta[idx].offset,
                buf.meta[idx].timestamp_ms,
                buf.key(idx),
                buf.row(idx),
                reason,
            )
        };
        match encode::encode(&key, &buf, schema.as_ref(), &opts, ingested) {
            Ok(e) => {
                changed |= e.schema_changed;
                let parts = rows_per_part(&key, &buf, e.rows, &e.dead);
                let dead = e.dead.into_iter().map(|(i, r)| dead_of(i, r)).collect();
                schema = Some(e.schema);
                outs.push(FileOut {
                    key,
                    parquet: e.parquet,
                    rows: e.rows,
                    parts,
                    dead,
                });
            }
            Err(err) => {
                // Not expected for validated JSON; never let it stop the pipeline or lose rows.
                tracing::error!(error = %err, rows = buf.rows(), "encoding failed; dead-lettering the buffer");
                let dead = (0..buf.rows())
                    .map(|i| dead_of(i, format!("cannot encode: {err}")))
                    .collect();
                outs.push(FileOut {
                    key,
                    parquet: None,
                    rows: 0,
                    parts: Vec::new(),
                    dead,
                });
            }
        }
    }
    GroupOut {
        table,
        event_type,
        schema: schema.unwrap_or_else(Schema::empty),
        changed,
        files: outs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;

    fn group(i: usize) -> Group {
        (None, (Arc::from("t"), format!("et{i}")), Vec::new())
    }

    fn opts() -> EncodeOptions {
        EncodeOptions {
            compression: Compression::Zstd(1),
            row_group_rows: 1000,
            event_type_path: None,
        }
    }

    /// Names the thread that encoded the group; group "et3" panics.
    fn by_thread(g: Group, _: EncodeOptions, _: i64) -> GroupOut {
        let (_, (table, event_type), _) = g;
        assert_ne!(event_type, "et3", "encoder failure");
        let t = std::thread::current();
        let name = format!("{}/{:?}", t.name().unwrap_or(""), t.id());
        GroupOut {
            table,
            event_type: format!("{event_type}@{name}"),
            schema: Schema::empty(),
            changed: false,
            files: Vec::new(),
        }
    }

    #[test]
    fn encoders_are_started_once_and_return_every_group() {
        let enc = Encoders::with(2, by_thread);
        let wanted: Vec<String> = (0..20)
            .filter(|i| *i != 3)
            .map(|i| format!("et{i}"))
            .collect();
        let mut threads = std::collections::BTreeSet::new();
        for cycle in 0..3 {
            let groups: Vec<Group> = (0..20).filter(|i| *i != 3).map(group).collect();
            let mut got = Vec::new();
            for g in enc.encode(groups, &opts(), 0) {
                let (et, thread) = g.event_type.split_once('@').unwrap_or_default();
                got.push(et.to_string());
                threads.insert(thread.to_string());
            }
            got.sort_by_key(|e| e[2..].parse::<usize>().unwrap_or(usize::MAX));
            assert_eq!(got, wanted, "cycle {cycle}");
        }
        // The same threads (at most two, by id) served all three cycles.
        assert!(
            (1..=2).contains(&threads.len()) && threads.iter().all(|t| t.starts_with("lw-encode-")),
            "{threads:?}"
        );
    }

    #[test]
    fn an_encoder_panic_reaches_the_pipeline_and_the_encoders_keep_working() {
        let enc = Encoders::with(2, by_thread);
        let groups: Vec<Group> = (0..6).map(group).collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            enc.encode(groups, &opts(), 0)
        }));
        let msg = r.err().and_then(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        });
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains("encoder failure")),
            "{msg:?}"
        );
        let again = enc.encode(vec![group(7), group(8)], &opts(), 0);
        assert_eq!(again.len(), 2);
    }
}
