//! The stream loop: source → route → buffer, and the flush cycle
//! encode → upload → commit. Runs on its own thread; S3 calls are driven on
//! the tokio runtime through a handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::Schema;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use tokio::runtime::Handle;

use crate::buffer::{Buffer, Buffers, Cycle, FileKey, Tp};
use crate::commit::{self, RecoveryRecord};
use crate::config::Config;
use crate::deadletter::{self, DeadLetter};
use crate::encode::{self, EncodeOptions};
use crate::metrics::METRICS;
use crate::route;
use crate::shutdown::Drain;
use crate::source::{self, RebalanceEvent, Source};
use crate::upload::{retry, Lake, UploadError};
use crate::Error;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);
const UPLOAD_CONCURRENCY: usize = 8;

/// What a run did, for the final report and for tests.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events_in: u64,
    pub bytes_in: u64,
    pub rows_written: u64,
    pub dead_letters: u64,
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
    /// High watermark at assignment (for `--until-caught-up`).
    end: i64,
}

struct State {
    cfg: Arc<Config>,
    lake: Lake,
    rt: Handle,
    drain: Drain,
    buffers: Buffers,
    schemas: HashMap<(Arc<str>, String), Schema>,
    assigned: HashMap<Tp, PartState>,
    topics: HashMap<String, (Arc<str>, Arc<str>)>,
    writer: String,
    summary: Summary,
    errors_logged: u64,
}

pub fn run_blocking(cfg: Config, lake: Lake, rt: Handle, drain: Drain) -> Result<Summary, Error> {
    let started = Instant::now();
    let consumer = source::consumer(&cfg)?;
    source::check(&consumer, &cfg.brokers, &cfg.topics, KAFKA_TIMEOUT)?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(source::SourceError::from)?;
    let topic_map = cfg
        .topics
        .iter()
        .map(|t| {
            let table: Arc<str> = cfg.table.clone().unwrap_or_else(|| t.clone()).into();
            (t.clone(), (Arc::<str>::from(t.as_str()), table))
        })
        .collect();
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
        summary: Summary::default(),
        errors_logged: 0,
    };
    tracing::info!(topics = ?st.cfg.topics, group = %st.cfg.group, lake = %st.cfg.lake, "consuming");
    let result = st.run_loop(&consumer);
    // Leave the group promptly so partitions move without waiting for the session timeout.
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(50));
    st.summary.elapsed = started.elapsed();
    result.map(|()| st.summary)
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "lakewriter".into())
}

impl State {
    fn run_loop(&mut self, consumer: &Source) -> Result<(), Error> {
        loop {
            if self.drain.is_draining() {
                tracing::info!(buffered_bytes = self.buffers.bytes(), "draining: final flush");
                break;
            }
            let now = Instant::now();
            let timeout = self.buffers.time_to_interval(now).map_or(Duration::from_millis(100), |d| d.min(Duration::from_millis(100)));
            let msg = consumer.poll(timeout);
            let events = consumer.context().take_events();
            if !events.is_empty() {
                self.rebalance(consumer, events)?;
            }
            match msg {
                Some(Ok(m)) => self.ingest(&m),
                Some(Err(e)) => {
                    self.errors_logged += 1;
                    if self.errors_logged <= 10 || self.errors_logged % 1000 == 0 {
                        tracing::warn!(error = %e, count = self.errors_logged, "Kafka consumer error");
                    }
                }
                None => {}
            }
            if let Some(reason) = self.buffers.flush_due(Instant::now()) {
                self.flush(consumer, reason)?;
            }
            if self.cfg.until_caught_up && self.caught_up() {
                for (tp, p) in &self.assigned {
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, pos = p.pos, end = p.end, "caught up");
                }
                tracing::info!("caught up with the end offsets seen at assignment");
                break;
            }
        }
        if !self.buffers.is_empty() {
            self.flush(consumer, "shutdown")?;
        }
        Ok(())
    }

    fn caught_up(&self) -> bool {
        !self.assigned.is_empty() && self.assigned.values().all(|p| p.pos >= p.end)
    }

    fn rebalance(&mut self, consumer: &Source, events: Vec<RebalanceEvent>) -> Result<(), Error> {
        for ev in events {
            match ev {
                RebalanceEvent::Revoked(tps) => {
                    tracing::info!(partitions = tps.len(), "partitions revoked; dropping their unflushed events (the next owner re-reads them)");
                    self.buffers.drop_partitions(&tps);
                    for tp in &tps {
                        self.assigned.remove(tp);
                    }
                }
                RebalanceEvent::Assigned(tps) => {
                    let committed = source::committed(consumer, &tps, KAFKA_TIMEOUT).map_err(source::SourceError::from)?;
                    let mut rolled = 0;
                    for (tp, c) in tps.iter().zip(&committed) {
                        let s = self.rt.block_on(commit::rollback(&self.lake, &self.drain, &self.cfg.group, tp, *c))?;
                        rolled += s.records_rolled_back;
                        let (low, high) = consumer.fetch_watermarks(&tp.topic, tp.partition, KAFKA_TIMEOUT).map_err(source::SourceError::from)?;
                        tracing::debug!(topic = %tp.topic, partition = tp.partition, committed = ?c, low, high, "assigned");
                        self.assigned.insert(tp.clone(), PartState { pos: c.unwrap_or(low).max(low), end: high });
                    }
                    tracing::info!(partitions = tps.len(), rolled_back = rolled, "partitions assigned");
                }
            }
        }
        Ok(())
    }

    fn ingest<M: Message>(&mut self, m: &M) {
        let Some((topic, table)) = self.topics.get(m.topic()) else { return };
        let tp = Tp { topic: topic.clone(), partition: m.partition() };
        let Some(part) = self.assigned.get_mut(&tp) else { return };
        let offset = m.offset();
        part.pos = part.pos.max(offset + 1);
        let payload = m.payload().unwrap_or(&[]);
        METRICS.events_in.inc();
        METRICS.bytes_in.add(payload.len() as u64);
        self.summary.events_in += 1;
        self.summary.bytes_in += payload.len() as u64;
        let ts = m.timestamp().to_millis();
        let now = Instant::now();
        match route::route(&self.cfg.route, payload, ts) {
            Ok(r) => {
                let key = FileKey { table: table.clone(), date: r.date, event_type: r.event_type, tp };
                self.buffers.push(key, payload, m.key(), offset, ts, r.event_time_us, now);
            }
            Err(e) => {
                let dl = DeadLetter::new(m.topic(), m.partition(), offset, ts, m.key(), payload, e.to_string());
                self.buffers.push_dead(&tp, dl, now);
            }
        }
        METRICS.buffered_bytes.set(self.buffers.bytes() as u64);
    }

    fn load_schema(&mut self, table: &Arc<str>, event_type: &str) -> Result<(), Error> {
        let k = (table.clone(), event_type.to_string());
        if self.schemas.contains_key(&k) {
            return Ok(());
        }
        let key = schema_key(table, event_type);
        if let Some(body) = self.rt.block_on(retry("read schema", &self.drain, || self.lake.get(&key)))? {
            match serde_json::from_slice::<Schema>(&body) {
                Ok(s) => {
                    self.schemas.insert(k, s);
                }
                Err(e) => tracing::warn!(key = %key, error = %e, "ignoring an unreadable stored schema"),
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
        let Cycle { files, ranges, mut dead, .. } = cycle;

        // Encode: group files by (table, event_type) so one schema evolves in order.
        let mut groups: BTreeMap<(Arc<str>, String), Vec<(FileKey, Buffer)>> = BTreeMap::new();
        for (k, b) in files {
            groups.entry((k.table.clone(), k.event_type.clone())).or_default().push((k, b));
        }
        for (table, et) in groups.keys().cloned().collect::<Vec<_>>() {
            self.load_schema(&table, &et)?;
        }
        let opts = EncodeOptions { compression: self.cfg.compression, row_group_rows: self.cfg.row_group_rows };
        let ingested = chrono::Utc::now().timestamp_micros();
        let groups: Vec<_> = groups.into_iter().map(|(k, v)| (self.schemas.get(&k).cloned(), k, v)).collect();
        let results = encode_groups(groups, opts, ingested);

        // Assemble the cycle's objects per partition.
        let mut objects: Vec<(String, Bytes)> = Vec::new();
        let mut per_tp: BTreeMap<Tp, Vec<String>> = BTreeMap::new();
        let mut changed_schemas: Vec<(String, Bytes)> = Vec::new();
        let mut rows_written = 0u64;
        let mut dir_rows: Vec<(String, u64)> = Vec::new();
        for g in results {
            if g.changed {
                METRICS.schema_changes.inc();
                if let Ok(body) = serde_json::to_vec_pretty(&g.schema) {
                    changed_schemas.push((schema_key(&g.table, &g.event_type), Bytes::from(body)));
                }
                tracing::info!(table = %g.table, event_type = %g.event_type, fields = g.schema.fields().len(), "schema created or widened");
            }
            self.schemas.insert((g.table.clone(), g.event_type.clone()), g.schema);
            for f in g.files {
                let start = ranges.get(&f.key.tp).map_or(0, |r| r.first);
                for d in f.dead {
                    dead.entry(f.key.tp.clone()).or_default().push(d);
                }
                if let Some(pq) = f.parquet {
                    let key = commit::data_key(&f.key.table, f.key.date, &f.key.event_type, &f.key.tp, start);
                    rows_written += f.rows as u64;
                    dir_rows.push((format!("{}/date={}/event_type={}", f.key.table, f.key.date, f.key.event_type), f.rows as u64));
                    per_tp.entry(f.key.tp.clone()).or_default().push(key.clone());
                    objects.push((key, pq));
                }
            }
        }
        let mut dead_count = 0u64;
        for (tp, mut dls) in dead {
            if dls.is_empty() {
                continue;
            }
            dls.sort_by_key(|d| d.offset);
            dead_count += dls.len() as u64;
            let table = self.topics.get(tp.topic.as_ref()).map_or_else(|| tp.topic.clone(), |(_, t)| t.clone());
            let start = ranges.get(&tp).map_or(0, |r| r.first);
            let key = commit::dead_letter_key(&table, &tp, start);
            per_tp.entry(tp.clone()).or_default().push(key.clone());
            objects.push((key, Bytes::from(deadletter::to_ndjson(&dls))));
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
                };
                (commit::record_key(&self.cfg.group, tp, r.first), Bytes::from(serde_json::to_vec(&rec).unwrap_or_default()))
            })
            .collect();
        let bytes_out: u64 = objects.iter().filter(|(k, _)| k.ends_with(".parquet")).map(|(_, b)| b.len() as u64).sum();
        let n_files = objects.iter().filter(|(k, _)| k.ends_with(".parquet")).count() as u64;
        self.rt.block_on(put_all(&self.lake, &self.drain, records.clone()))?;
        self.rt.block_on(put_all(&self.lake, &self.drain, changed_schemas))?;
        self.rt.block_on(put_all(&self.lake, &self.drain, objects))?;

        // 4. Commit, then 5. forget the records.
        let offsets: Vec<(Tp, i64)> = ranges.iter().map(|(tp, r)| (tp.clone(), r.next)).collect();
        let mut committed = false;
        for attempt in 1..=3 {
            match source::commit(consumer, &offsets) {
                Ok(()) => {
                    committed = true;
                    break;
                }
                Err(e) => {
                    METRICS.commit_failures.inc();
                    tracing::warn!(error = %e, attempt, "offset commit failed");
                    std::thread::sleep(Duration::from_millis(200 * attempt));
                }
            }
        }
        if committed {
            METRICS.commits.inc();
            METRICS.last_commit_unix_ms.set(chrono::Utc::now().timestamp_millis() as u64);
            let keys: Vec<String> = records.into_iter().map(|(k, _)| k).collect();
            self.rt.block_on(delete_all(&self.lake, &self.drain, keys))?;
            for (tp, o) in &offsets {
                self.summary.committed.insert(format!("{}/{}", tp.topic, tp.partition), *o);
            }
        } else {
            // The files stay with their recovery record: whoever owns these partitions
            // next rolls them back before re-reading from the committed offset.
            tracing::error!(partitions = offsets.len(), "offsets not committed; the flush will be rolled back on the next assignment");
        }

        let elapsed = started.elapsed();
        METRICS.flushes.inc();
        METRICS.flush_micros_total.add(elapsed.as_micros() as u64);
        METRICS.events_written.add(rows_written);
        METRICS.dead_letters.add(dead_count);
        METRICS.files_written.add(n_files);
        METRICS.bytes_written.add(bytes_out);
        if committed {
            self.summary.rows_written += rows_written;
            self.summary.dead_letters += dead_count;
            self.summary.files += n_files;
            self.summary.bytes_out += bytes_out;
            self.summary.flushes += 1;
            for (d, n) in dir_rows {
                *self.summary.rows_per_dir.entry(d).or_default() += n;
            }
        }
        tracing::info!(reason, rows = rows_written, dead_letters = dead_count, files = n_files, bytes = bytes_out,
            partitions = offsets.len(), ms = elapsed.as_millis() as u64, committed, "flush");
        Ok(())
    }
}

fn schema_key(table: &str, event_type: &str) -> String {
    format!("_lakewriter/schemas/{table}/{event_type}.json")
}

async fn put_all(lake: &Lake, drain: &Drain, objects: Vec<(String, Bytes)>) -> Result<(), UploadError> {
    stream::iter(objects.into_iter().map(|(k, b)| async move { retry("upload", drain, || lake.put(&k, b.clone())).await }))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn delete_all(lake: &Lake, drain: &Drain, keys: Vec<String>) -> Result<(), UploadError> {
    stream::iter(keys.into_iter().map(|k| async move { retry("delete", drain, || lake.delete(&k)).await }))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

struct FileOut {
    key: FileKey,
    parquet: Option<Bytes>,
    rows: usize,
    dead: Vec<DeadLetter>,
}

struct GroupOut {
    table: Arc<str>,
    event_type: String,
    schema: Schema,
    changed: bool,
    files: Vec<FileOut>,
}

type Group = (Option<Schema>, (Arc<str>, String), Vec<(FileKey, Buffer)>);

/// Encode on worker threads (CPU-bound; never on the async runtime).
fn encode_groups(groups: Vec<Group>, opts: EncodeOptions, ingested: i64) -> Vec<GroupOut> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(groups.len()).max(1);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Group>>> = groups.into_iter().map(|g| Mutex::new(Some(g))).collect();
    let out: Mutex<Vec<GroupOut>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = slots.get(i) else { break };
                let Some(g) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() else { continue };
                let r = encode_group(g, opts, ingested);
                out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn encode_group((known, (table, event_type), files): Group, opts: EncodeOptions, ingested: i64) -> GroupOut {
    let mut schema = known.clone();
    let mut changed = false;
    let mut outs = Vec::with_capacity(files.len());
    for (key, buf) in files {
        let dead_of = |idx: usize, reason: String| {
            DeadLetter::new(&key.tp.topic, key.tp.partition, buf.meta[idx].offset, buf.meta[idx].timestamp_ms, buf.key(idx), buf.row(idx), reason)
        };
        match encode::encode(&key, &buf, schema.as_ref(), opts, ingested) {
            Ok(e) => {
                changed |= e.schema_changed;
                let dead = e.dead.into_iter().map(|(i, r)| dead_of(i, r)).collect();
                schema = Some(e.schema);
                outs.push(FileOut { key, parquet: e.parquet, rows: e.rows, dead });
            }
            Err(err) => {
                // Not expected for validated JSON; never let it stop the pipeline or lose rows.
                tracing::error!(error = %err, rows = buf.rows(), "encoding failed; dead-lettering the buffer");
                let dead = (0..buf.rows()).map(|i| dead_of(i, format!("cannot encode: {err}"))).collect();
                outs.push(FileOut { key, parquet: None, rows: 0, dead });
            }
        }
    }
    GroupOut { table, event_type, schema: schema.unwrap_or_else(Schema::empty), changed, files: outs }
}
