//! Compact: merge a directory's small files into few large ones sorted by
//! event time, so that readers open a handful of files instead of thousands.
//!
//! A merge follows an intent record, the way a flush cycle follows its
//! recovery record (docs/compaction.md):
//! 1. the inputs are downloaded and merged in the work directory; nothing in
//!    the lake has changed yet;
//! 2. an intent `_lakewriter/compaction/intents/<id>.json` names the inputs and
//!    the outputs about to be uploaded;
//! 3. the outputs are uploaded (`compacted-<id>-NNN.parquet`, a name no writer
//!    uses);
//! 4. the intent is marked done: the commit point. From here the outputs hold
//!    the inputs' rows and the inputs are superseded;
//! 5. `--grace` later, the inputs are removed, then the intent.
//!
//! A run that finds an intent not marked done removes the outputs it names
//! (back); one marked done has its inputs removed once past the grace
//! (forward). Only one compactor works on a lake at a time: it holds the lease
//! `_lakewriter/compaction/lease.json` (see [`crate::lease`]), renewed while
//! it runs and checked before each commit point.
//!
//! Beside running writers: a file named in any recovery record (a cycle in
//! flight, or the checkpoint of a partition's last commit) is never an input,
//! and neither is a file younger than `--min-age`. The data files are listed
//! before the records, so a file of a cycle that starts meanwhile is either
//! absent from the listing or named by a record read after it.

pub mod merge;
pub mod schema;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::CompactConfig;
use crate::lease::{Lease, LeaseError};
use crate::metrics::METRICS;
use crate::upload::{Lake, ObjectInfo, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Lake(#[from] UploadError),
    #[error(
        "another compactor holds the lake ({holder}, lease expires {expires}); one runs at a time"
    )]
    Held { holder: String, expires: String },
    #[error("lost the compaction lease (renewal failed or another compactor took it over)")]
    Lost,
    #[error(transparent)]
    Lease(LeaseError),
    #[error("intent {key} is unreadable: {msg}")]
    BadIntent { key: String, msg: String },
    #[error("work directory {path}: {source}")]
    WorkDir {
        path: String,
        source: std::io::Error,
    },
    #[error("merge of {dir}: {source}")]
    Merge {
        dir: String,
        source: merge::MergeError,
    },
    #[error("merge thread failed: {0}")]
    Join(String),
}

impl From<LeaseError> for CompactError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Held {
                holder, expires, ..
            } => CompactError::Held { holder, expires },
            LeaseError::Lost(_) => CompactError::Lost,
            other => CompactError::Lease(other),
        }
    }
}

pub const INTENT_DIR: &str = "_lakewriter/compaction/intents/";
pub const LEASE_KEY: &str = "_lakewriter/compaction/lease.json";
const RECOVERY_DIR: &str = "_lakewriter/recovery/";

/// Most inputs of one merge, however small.
pub const MAX_INPUTS: usize = 128;

/// What the inputs of one merge may take, each estimated by
/// [`input_memory`]: about 25 of the writer's 3–4 MB files, 128 small ones.
/// A directory of small files is then one merge: a fan-in of 32 merged such
/// directories in tiers, reading 1.7× the lake's bytes.
const MERGE_MEMORY: u64 = 160 << 20;

/// A small input is decoded whole (merge::DECODE_WHOLE_BYTES): its rows take
/// up to ~8 times its size. A larger one stays open: a page and a zstd
/// decompression context per column (~2.5 MB for the clickstream's columns)
/// and a batch of rows, and its bytes if they are in memory.
fn input_memory(size: u64) -> u64 {
    if size <= merge::DECODE_WHOLE_BYTES {
        (64 << 10) + size * 8
    } else {
        (3 << 20) + size.min(5 << 20)
    }
}

/// Name prefix of a merge's scratch directory in `--work-dir` (and, with
/// `.lock`, of the file its run holds locked).
const SCRATCH: &str = "lakewriter-compact-";

/// Remove the scratch directories of runs that ended without cleaning up
/// (killed): those whose lock file no live process holds. Other compactors,
/// of other lakes, may share the directory; their scratch stays.
pub fn sweep_work_dir(work_dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(SCRATCH) || name.ends_with(".lock") {
            continue;
        }
        let dir = e.path();
        let lock_path = dir.with_extension("lock");
        let Ok(lock) = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        else {
            continue;
        };
        if lock.try_lock().is_ok() && std::fs::remove_dir_all(&dir).is_ok() {
            let _ = std::fs::remove_file(&lock_path);
            removed += 1;
        }
    }
    removed
}

/// Inputs downloaded at once.
const DOWNLOADS: usize = 8;

/// Inputs up to this size are merged from memory instead of the work
/// directory (within [`MERGE_MEMORY`], which counts their bytes).
const IN_MEMORY_INPUT: u64 = 1 << 20;

/// A file at least this share of the target size is left as it is.
const BIG_ENOUGH: (u64, u64) = (3, 4);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// The record of one merge (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub version: u32,
    pub id: String,
    /// The directory, `<table>/date=…/event_type=…/`.
    pub dir: String,
    pub inputs: Vec<FileRef>,
    pub outputs: Vec<FileRef>,
    pub rows: u64,
    pub holder: String,
    pub created_ms: i64,
    /// Set at the commit point: the outputs are complete, the inputs superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_ms: Option<i64>,
}

pub fn intent_key(id: &str) -> String {
    format!("{INTENT_DIR}{id}.json")
}

/// Keys readers can skip while merges are in progress: the outputs of a merge
/// before its commit point, the inputs of one after it. An unreadable intent
/// hides nothing.
pub async fn hidden_keys(lake: &Lake) -> Result<HashSet<String>, UploadError> {
    let mut out = HashSet::new();
    for key in lake.list(INTENT_DIR).await? {
        let Some(body) = lake.get(&key).await? else {
            continue;
        };
        if let Ok(i) = serde_json::from_slice::<Intent>(&body) {
            let files = if i.done_ms.is_some() {
                i.inputs
            } else {
                i.outputs
            };
            out.extend(files.into_iter().map(|f| f.key));
        }
    }
    Ok(out)
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub merges: u64,
    pub files_in: u64,
    pub files_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rows: u64,
    pub inputs_removed: u64,
    pub rolled_back: u64,
    pub bad_inputs: Vec<String>,
    pub skipped_dirs: Vec<String>,
}

/// A data file's directory when `key` is `<table>/date=…/event_type=…/<name>.parquet`.
pub fn data_dir(key: &str) -> Option<&str> {
    if key.starts_with('_') || !key.ends_with(".parquet") || key.contains(".tmp-") {
        return None;
    }
    let parts: Vec<&str> = key.split('/').collect();
    match parts[..] {
        [_, d, t, _] if d.starts_with("date=") && t.starts_with("event_type=") => {
            Some(&key[..key.rfind('/')? + 1])
        }
        _ => None,
    }
}

/// The merges worth doing among a directory's eligible files. Files at least
/// 3/4 of the target stay; the others are taken smallest first into groups up
/// to the target size, [`MAX_INPUTS`] and [`MERGE_MEMORY`]. Groups of one
/// file are no merge.
///
/// While the directory still receives files it is size-tiered: a file more
/// than four times what a group holds so far starts the next group, so a large
/// merged file is rewritten only once the small ones beside it add up to a
/// quarter of it (not once per pass for each new flush). A `settled` directory
/// (nothing new for twice `--min-age`) merges all its small files together.
pub fn plan_dir(files: &[ObjectInfo], target: u64, settled: bool) -> Vec<Vec<ObjectInfo>> {
    let mut small: Vec<&ObjectInfo> = files
        .iter()
        .filter(|f| f.size * BIG_ENOUGH.1 < target * BIG_ENOUGH.0)
        .collect();
    small.sort_by(|a, b| a.size.cmp(&b.size).then_with(|| a.key.cmp(&b.key)));
    let mut groups = Vec::new();
    let mut cur: Vec<ObjectInfo> = Vec::new();
    let (mut sum, mut mem) = (0u64, 0u64);
    for f in small {
        let full = sum + f.size > target
            || cur.len() == MAX_INPUTS
            || mem + input_memory(f.size) > MERGE_MEMORY
            || (!settled && f.size > sum * 4);
        if !cur.is_empty() && full {
            if cur.len() >= 2 {
                groups.push(std::mem::take(&mut cur));
            }
            cur.clear();
            (sum, mem) = (0, 0);
        }
        cur.push(f.clone());
        sum += f.size;
        mem += input_memory(f.size);
    }
    if cur.len() >= 2 {
        groups.push(cur);
    }
    groups
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The one thread every merge of a run runs on, one at a time. Not tokio's
/// blocking pool: its threads also serve the downloads' file writes, so
/// successive merges landed on different threads, each with its own pool of
/// zstd contexts (vendor/README.md) and its own allocator arena holding what
/// its last merge had freed: peak RSS grew with the number of threads, to
/// 795 MB on a 2 GB directory.
struct MergeThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl MergeThread {
    fn start() -> Result<Self, CompactError> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("lakewriter-merge".into())
            .spawn(move || {
                // Ends when the compactor (the sender) is dropped.
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| CompactError::Join(e.to_string()))?;
        Ok(MergeThread { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CompactError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| CompactError::Join("the merge thread has ended".into()))?;
        rx.await
            .map_err(|_| CompactError::Join("the merge thread ended without a result".into()))
    }
}

/// The compactor of one lake.
struct Compactor {
    merger: MergeThread,
    cfg: CompactConfig,
    lake: Lake,
    holder: String,
    lease: Option<Lease>,
    shutdown: CancellationToken,
    /// Inputs found unreadable: reported once, never merged or removed.
    bad: HashSet<String>,
    /// Directories whose inputs cannot be merged (schemas, sort column).
    skip_dirs: HashSet<String>,
    summary: Summary,
}

/// One pass's view of the lake.
struct Pass {
    /// Merges to do, by directory.
    merges: Vec<(String, Vec<ObjectInfo>)>,
    /// When the last done intent's grace ends (its inputs may be removed).
    next_due_ms: Option<i64>,
}

impl Compactor {
    /// Roll back intents not marked done; remove the inputs of done ones past
    /// their grace. Returns the keys the remaining intents name and when the
    /// next one falls due.
    async fn resolve_intents(&mut self) -> Result<(HashSet<String>, Option<i64>), CompactError> {
        let mut named = HashSet::new();
        let mut next_due: Option<i64> = None;
        let (mut due_inputs, mut due_intents) = (Vec::new(), Vec::new());
        for key in self.lake.list(INTENT_DIR).await? {
            let Some(body) = self.lake.get(&key).await? else {
                continue;
            };
            let intent: Intent =
                serde_json::from_slice(&body).map_err(|e| CompactError::BadIntent {
                    key: key.clone(),
                    msg: e.to_string(),
                })?;
            match intent.done_ms {
                None => {
                    // Outputs first: the intent is the only list of them.
                    for o in &intent.outputs {
                        self.lake.delete(&o.key).await?;
                    }
                    self.lake.delete(&key).await?;
                    self.summary.rolled_back += 1;
                    METRICS.compact.rollbacks.add(1);
                    tracing::info!(intent = %key, outputs = intent.outputs.len(), "rolled back a merge that had not reached its commit point");
                }
                Some(done) => {
                    let due = done + self.cfg.grace.as_millis() as i64;
                    if now_ms() >= due {
                        due_inputs.extend(intent.inputs.iter().map(|f| f.key.clone()));
                        due_intents.push(key);
                    } else {
                        named.extend(intent.inputs.iter().map(|f| f.key.clone()));
                        named.extend(intent.outputs.iter().map(|f| f.key.clone()));
                        next_due = Some(next_due.map_or(due, |d: i64| d.max(due)));
                    }
                }
            }
        }
        // The inputs of every merge past its grace go at once: a query that
        // listed one just before cannot read it any more, and one batch keeps
        // that moment short (one request per 1,000 keys, not one per file).
        self.lake.delete_many(&due_inputs).await?;
        self.lake.delete_many(&due_intents).await?;
        self.summary.inputs_removed += due_inputs.len() as u64;
        METRICS.compact.inputs_removed.add(due_inputs.len() as u64);
        Ok((named, next_due))
    }

    /// Every file a recovery record names (in flight or a checkpoint); `None`
    /// when a record is unreadable: which files it protects is unknown, so
    /// nothing is merged until it is repaired (the writer stops on it too).
    async fn recorded_files(&self) -> Result<Option<HashSet<String>>, CompactError> {
        let mut out = HashSet::new();
        for key in self.lake.list(RECOVERY_DIR).await? {
            if !key.ends_with(".json") {
                continue;
            }
            let Some(body) = self.lake.get(&key).await? else {
                continue;
            };
            match serde_json::from_slice::<crate::commit::RecoveryRecord>(&body) {
                Ok(r) => out.extend(r.files),
                Err(e) => {
                    tracing::error!(record = %key, error = %e, "unreadable recovery record: nothing is merged while it is there");
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    /// Every key any intent names (a dry run resolves nothing).
    async fn intent_keys(&self) -> Result<HashSet<String>, CompactError> {
        let mut named = HashSet::new();
        for key in self.lake.list(INTENT_DIR).await? {
            if let Some(body) = self.lake.get(&key).await? {
                let i: Intent =
                    serde_json::from_slice(&body).map_err(|e| CompactError::BadIntent {
                        key: key.clone(),
                        msg: e.to_string(),
                    })?;
                named.extend(i.inputs.into_iter().map(|f| f.key));
                named.extend(i.outputs.into_iter().map(|f| f.key));
            }
        }
        Ok(named)
    }

    /// The merges to do now; `resolve` first settles the intents left behind.
    async fn plan(&mut self, resolve: bool) -> Result<Pass, CompactError> {
        // Intents first: a rolled-back merge's outputs must not be listed as
        // inputs. Then data files before records (see the module docs).
        let (named, next_due_ms) = if resolve {
            self.resolve_intents().await?
        } else {
            (self.intent_keys().await?, None)
        };
        let mut data = Vec::new();
        if self.cfg.tables.is_empty() {
            data = self.lake.list_objects("").await?;
        } else {
            for t in &self.cfg.tables {
                data.extend(self.lake.list_objects(&format!("{t}/")).await?);
            }
        }
        let Some(recorded) = self.recorded_files().await? else {
            return Ok(Pass {
                merges: Vec::new(),
                next_due_ms,
            });
        };
        let min_age = self.cfg.min_age.as_millis() as i64;
        let old_enough = now_ms() - min_age;
        let mut dirs: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        for f in data {
            let Some(dir) = data_dir(&f.key) else {
                continue;
            };
            let n = newest.entry(dir.to_string()).or_insert(0);
            *n = (*n).max(f.modified_ms);
            if f.modified_ms > old_enough
                || self.skip_dirs.contains(dir)
                || recorded.contains(&f.key)
                || named.contains(&f.key)
                || self.bad.contains(&f.key)
            {
                continue;
            }
            dirs.entry(dir.to_string()).or_default().push(f);
        }
        let mut merges = Vec::new();
        for (dir, files) in dirs {
            let settled = newest
                .get(&dir)
                .is_some_and(|&n| n <= now_ms() - 2 * min_age);
            for g in plan_dir(&files, self.cfg.target_file_size, settled) {
                merges.push((dir.clone(), g));
            }
        }
        Ok(Pass {
            merges,
            next_due_ms,
        })
    }

    fn lease_ok(&self) -> Result<(), CompactError> {
        match &self.lease {
            Some(l) => Ok(l.check()?),
            None => Ok(()),
        }
    }

    async fn lease_verified(&self) -> Result<(), CompactError> {
        match &self.lease {
            Some(l) => Ok(l.verify().await?),
            None => Ok(()),
        }
    }

    /// One merge, through its commit point.
    async fn merge_one(
        &mut self,
        seq: u64,
        dir: &str,
        inputs: &[ObjectInfo],
    ) -> Result<(), CompactError> {
        let started = std::time::Instant::now();
        let id = format!(
            "{}-{:08x}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
            rand::random::<u32>()
        );
        let work = self.cfg.work_dir.join(format!("{SCRATCH}{id}"));
        let wd = |source| CompactError::WorkDir {
            path: work.display().to_string(),
            source,
        };
        // Locked before the directory exists and until it is gone: a sweep
        // that can take the lock knows no live run uses the directory.
        std::fs::create_dir_all(&self.cfg.work_dir).map_err(wd)?;
        let lock_path = work.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).map_err(wd)?;
        lock.lock().map_err(wd)?;
        std::fs::create_dir_all(&work).map_err(wd)?;
        let result = self.merge_in(seq, dir, inputs, &id, &work).await;
        let _ = std::fs::remove_dir_all(&work);
        let _ = std::fs::remove_file(&lock_path);
        drop(lock);
        if result.is_ok() {
            METRICS
                .compact
                .micros
                .add(started.elapsed().as_micros() as u64);
        }
        result
    }

    async fn merge_in(
        &mut self,
        seq: u64,
        dir: &str,
        inputs: &[ObjectInfo],
        id: &str,
        work: &std::path::Path,
    ) -> Result<(), CompactError> {
        let t0 = std::time::Instant::now();
        // Concurrent GETs: each costs a round trip, and a merge has up to
        // MAX_INPUTS of them.
        use futures::StreamExt;
        let got: Vec<Result<Option<merge::Input>, UploadError>> =
            futures::stream::iter(inputs.iter().enumerate().map(|(i, f)| {
                let p = work.join(format!("in-{i:03}.parquet"));
                let lake = &self.lake;
                async move {
                    // Small files stay in memory: writing and reading back a
                    // file of a few kB cost more (blocking-pool round trips)
                    // than its merge, and MAX_INPUTS of them take little room.
                    if f.size <= IN_MEMORY_INPUT {
                        return Ok(lake.get(&f.key).await?.map(merge::Input::Mem));
                    }
                    let found = lake.get_to_file(&f.key, &p).await?;
                    Ok(found.then_some(merge::Input::File(p)))
                }
            }))
            .buffered(DOWNLOADS)
            .collect()
            .await;
        let mut paths = Vec::with_capacity(inputs.len());
        for (r, f) in got.into_iter().zip(inputs) {
            let Some(input) = r? else {
                tracing::info!(key = %f.key, "an input disappeared before its merge; the directory waits for the next pass");
                return Ok(());
            };
            paths.push(input);
        }
        let opts = merge::MergeOptions {
            sort_by: self.cfg.sort_by.clone(),
            target_bytes: self.cfg.target_file_size,
            row_group_rows: self.cfg.row_group_rows,
            compression: self.cfg.compression,
        };
        let download_ms = t0.elapsed().as_millis() as u64;
        let t1 = std::time::Instant::now();
        let stop = self.shutdown.clone();
        let out_dir = work.to_path_buf();
        let stem = format!("compacted-{id}");
        let merged = self
            .merger
            .run(move || merge::merge(&paths, &out_dir, &stem, &opts, &|| stop.is_cancelled()))
            .await?;
        let merged = match merged {
            Ok(m) => m,
            Err(merge::MergeError::BadInput { index, msg }) => {
                let key = inputs[index].key.clone();
                tracing::error!(key = %key, error = %msg, "unreadable Parquet input: left in place, never merged or removed");
                METRICS.compact.bad_inputs.add(1);
                self.bad.insert(key.clone());
                self.summary.bad_inputs.push(key);
                return Ok(());
            }
            Err(merge::MergeError::Cancelled) => return Ok(()),
            // Inputs that cannot share one file: skip the directory, not the lake.
            Err(e @ (merge::MergeError::Schema(_) | merge::MergeError::SortColumn(..))) => {
                tracing::error!(dir, error = %e, "directory not merged this run");
                METRICS.compact.skipped_dirs.add(1);
                self.skip_dirs.insert(dir.to_string());
                self.summary.skipped_dirs.push(dir.to_string());
                return Ok(());
            }
            Err(source) => {
                return Err(CompactError::Merge {
                    dir: dir.to_string(),
                    source,
                })
            }
        };
        let merge_ms = t1.elapsed().as_millis() as u64;
        let t2 = std::time::Instant::now();
        let mut intent = Intent {
            version: 1,
            id: id.to_string(),
            dir: dir.to_string(),
            inputs: inputs
                .iter()
                .map(|f| FileRef {
                    key: f.key.clone(),
                    size: f.size,
                    rows: None,
                })
                .collect(),
            outputs: merged
                .outputs
                .iter()
                .map(|o| FileRef {
                    key: format!(
                        "{dir}{}",
                        o.path.file_name().unwrap_or_default().to_string_lossy()
                    ),
                    size: o.bytes,
                    rows: Some(o.rows),
                })
                .collect(),
            rows: merged.rows,
            holder: self.holder.clone(),
            created_ms: now_ms(),
            done_ms: None,
        };
        self.lease_ok()?;
        let key = intent_key(id);
        self.lake.put(&key, to_json(&intent)).await?;
        crate::fault::point("compact_after_intent", seq);
        for (o, r) in merged.outputs.iter().zip(&intent.outputs) {
            self.lake.put_file(&r.key, &o.path).await?;
            crate::fault::point("compact_mid_upload", seq);
        }
        // The commit point, only while this run still holds the lake.
        self.lease_verified().await?;
        intent.done_ms = Some(now_ms());
        self.lake.put(&key, to_json(&intent)).await?;
        crate::fault::point("compact_after_done", seq);
        let bytes_in: u64 = inputs.iter().map(|f| f.size).sum();
        let bytes_out: u64 = merged.outputs.iter().map(|o| o.bytes).sum();
        let s = &mut self.summary;
        s.merges += 1;
        s.files_in += inputs.len() as u64;
        s.files_out += merged.outputs.len() as u64;
        s.bytes_in += bytes_in;
        s.bytes_out += bytes_out;
        s.rows += merged.rows;
        METRICS.compact.merges.add(1);
        METRICS.compact.files_in.add(inputs.len() as u64);
        METRICS.compact.files_out.add(merged.outputs.len() as u64);
        METRICS.compact.bytes_in.add(bytes_in);
        METRICS.compact.bytes_out.add(bytes_out);
        METRICS.compact.rows.add(merged.rows);
        tracing::info!(
            dir,
            inputs = inputs.len(),
            outputs = merged.outputs.len(),
            rows = merged.rows,
            bytes_in,
            bytes_out,
            download_ms,
            merge_ms,
            commit_ms = t2.elapsed().as_millis() as u64,
            "merged"
        );
        Ok(())
    }

    /// Merge until nothing is left (or shutdown); returns when the next
    /// intent's grace ends, if one is waiting.
    async fn pass(&mut self, seq: &mut u64) -> Result<Option<i64>, CompactError> {
        loop {
            let plan = self.plan(true).await?;
            if plan.merges.is_empty() || self.shutdown.is_cancelled() {
                return Ok(plan.next_due_ms);
            }
            let (files_in, files_out) = (self.summary.files_in, self.summary.files_out);
            let bar = progress_bar(&plan.merges);
            for (n, (dir, inputs)) in plan.merges.iter().enumerate() {
                if self.shutdown.is_cancelled() {
                    break;
                }
                if let Some(b) = &bar {
                    b.set_message(format!("merge {}/{} {dir}", n + 1, plan.merges.len()));
                }
                *seq += 1;
                self.merge_one(*seq, dir, inputs).await?;
                if let Some(b) = &bar {
                    b.inc(inputs.iter().map(|f| f.size).sum());
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            // Merges that did not reduce the number of files would be planned
            // again and again: what is left waits for more data.
            if self.summary.files_in - files_in <= self.summary.files_out - files_out {
                return Ok(plan.next_due_ms);
            }
        }
    }

    async fn dry_run(&mut self) -> Result<(), CompactError> {
        let plan = self.plan(false).await?;
        for (dir, inputs) in &plan.merges {
            let bytes: u64 = inputs.iter().map(|f| f.size).sum();
            println!(
                "would merge {} files ({:.1} MB) in {dir}",
                inputs.len(),
                bytes as f64 / 1e6
            );
        }
        println!("{} merges planned", plan.merges.len());
        Ok(())
    }
}

/// On a terminal, a pass's progress by input bytes (logs say the same per
/// merge elsewhere).
fn progress_bar(merges: &[(String, Vec<ObjectInfo>)]) -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bytes: u64 = merges.iter().flat_map(|(_, f)| f).map(|f| f.size).sum();
    let b = indicatif::ProgressBar::new(bytes);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.enable_steady_tick(std::time::Duration::from_millis(250));
    Some(b)
}

fn to_json(i: &Intent) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(i).unwrap_or_default())
}

/// Sleep until `until_ms` or shutdown; `false` on shutdown. Waiting is the
/// compactor's loop turning: /readyz and /healthz stay green meanwhile.
async fn sleep_until(until_ms: i64, shutdown: &CancellationToken) -> bool {
    loop {
        crate::health::mark_loop();
        let ms = (until_ms - now_ms()).clamp(0, 30_000) as u64;
        if ms == 0 {
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        }
    }
}

/// `lakewriter compact`: until nothing is left (`--once`) or until `shutdown`.
pub async fn run(cfg: CompactConfig, shutdown: CancellationToken) -> Result<Summary, crate::Error> {
    let lake = Lake::connect(&cfg.lake, cfg.s3_path_style)
        .await
        .with_write_options(cfg.s3_write.clone());
    lake.check()
        .await
        .map_err(|source| crate::Error::LakeUnreachable {
            lake: cfg.lake.to_string(),
            source,
        })?;
    let background = CancellationToken::new();
    if let Some(addr) = cfg.admin_addr {
        crate::admin::serve(addr, background.clone())
            .await
            .map_err(|e| {
                crate::Error::Config(crate::config::ConfigError::Invalid {
                    flag: "admin-addr",
                    msg: format!("cannot listen on {addr}: {e}"),
                })
            })?;
    }
    crate::health::HEALTH
        .s3_ok
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let holder = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "compactor".into()),
        std::process::id(),
        crate::commit::writer_tag()
    );
    let mut c = Compactor {
        merger: MergeThread::start().map_err(crate::Error::Compact)?,
        lake: lake.clone(),
        holder: holder.clone(),
        lease: None,
        shutdown: shutdown.clone(),
        bad: HashSet::new(),
        skip_dirs: HashSet::new(),
        summary: Summary::default(),
        cfg,
    };
    let result = async {
        if c.cfg.dry_run {
            c.dry_run().await?;
            return Ok(());
        }
        let lease = Lease::acquire_at(
            &lake,
            LEASE_KEY.to_string(),
            "compaction",
            &holder,
            c.cfg.lease,
        )
        .await?;
        METRICS.compact.lease_held.set(1);
        tokio::spawn(lease.clone().keep_renewed(background.clone()));
        let swept = sweep_work_dir(&c.cfg.work_dir);
        if swept > 0 {
            tracing::info!(swept, work_dir = %c.cfg.work_dir.display(), "removed the scratch directories of killed runs");
        }
        c.lease = Some(lease.clone());
        crate::health::HEALTH
            .started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut seq = 0u64;
        let outcome = loop {
            crate::health::mark_loop();
            let next_due = match c.pass(&mut seq).await {
                Ok(d) => d,
                Err(e) => break Err(e),
            };
            METRICS.compact.last_success_ms.set(now_ms() as u64);
            if shutdown.is_cancelled() {
                break Ok(());
            }
            // Inputs are removed in one batch per wake-up, not as each grace
            // ends: a query that listed an input fails reading it once it is
            // gone, and few removal moments make few such queries. `--once`
            // waits for the last grace; `--interval` removes what is due at
            // each pass.
            let wake = if c.cfg.once {
                match next_due {
                    None => break Ok(()),
                    Some(due) => due,
                }
            } else {
                now_ms() + c.cfg.interval.as_millis() as i64
            };
            if !sleep_until(wake, &shutdown).await {
                break Ok(());
            }
        };
        let _ = lease.release().await;
        METRICS.compact.lease_held.set(0);
        outcome
    }
    .await;
    background.cancel();
    if result.is_ok() {
        METRICS.compact.runs_ok.inc();
    } else {
        METRICS.compact.runs_error.inc();
    }
    result.map_err(crate::Error::from)?;
    Ok(c.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            modified_ms: 0,
        }
    }

    #[test]
    fn only_data_files_of_partition_directories_are_candidates() {
        let d = "t/date=2026-01-01/event_type=a/";
        assert_eq!(data_dir(&format!("{d}x.parquet")), Some(d));
        assert_eq!(data_dir("_lakewriter/recovery/g/t/0/1.json"), None);
        assert_eq!(data_dir("_lakewriter/dead_letters/t/x.ndjson"), None);
        assert_eq!(data_dir(&format!("{d}x.tmp-12.parquet")), None);
        assert_eq!(data_dir("t/date=2026-01-01/x.parquet"), None);
        assert_eq!(data_dir(&format!("{d}sub/x.parquet")), None);
    }

    #[test]
    fn small_files_merge_up_to_the_target_and_big_ones_stay() {
        let mb = 1 << 20;
        let files: Vec<_> = (0..10).map(|i| f(&format!("s{i}"), 10 * mb)).collect();
        let groups = plan_dir(&files, 45 * mb, false);
        assert_eq!(
            groups.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2],
            "4 × 10 MB fit 45 MB; the two left form a group too"
        );
        // A file near the target is left alone; a single small file is no merge.
        let groups = plan_dir(&[f("big", 40 * mb), f("s", mb)], 45 * mb, true);
        assert!(groups.is_empty());
    }

    #[test]
    fn a_large_merged_file_waits_until_the_small_ones_add_up_to_a_quarter_of_it() {
        let mb = 1 << 20;
        let mut files = vec![f("merged", 100 * mb)];
        files.extend((0..3).map(|i| f(&format!("s{i}"), mb)));
        let groups = plan_dir(&files, 256 * mb, false);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].iter().all(|g| g.key != "merged"));
        // Once the directory has settled, everything small becomes one file.
        let groups = plan_dir(&files, 256 * mb, true);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].len(), 4);
        files.extend((3..30).map(|i| f(&format!("s{i}"), mb)));
        let groups = plan_dir(&files, 256 * mb, false);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].iter().any(|g| g.key == "merged"));
    }

    #[test]
    fn a_killed_runs_scratch_is_swept_and_a_live_ones_kept() {
        let wd = tempfile::tempdir().unwrap();
        let dead = wd.path().join(format!("{SCRATCH}dead"));
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("in-000.parquet"), b"x").unwrap();
        std::fs::write(dead.with_extension("lock"), b"").unwrap();
        let live = wd.path().join(format!("{SCRATCH}live"));
        let held = std::fs::File::create(live.with_extension("lock")).unwrap();
        held.lock().unwrap();
        std::fs::create_dir_all(&live).unwrap();
        let other = wd.path().join("someone-elses");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(sweep_work_dir(wd.path()), 1);
        assert!(!dead.exists() && !dead.with_extension("lock").exists());
        assert!(live.exists() && other.exists());
        drop(held);
        assert_eq!(sweep_work_dir(wd.path()), 1);
        assert!(!live.exists());
    }

    #[test]
    fn a_group_never_exceeds_the_fan_in() {
        let files: Vec<_> = (0..300).map(|i| f(&format!("s{i:03}"), 1000)).collect();
        let groups = plan_dir(&files, 1 << 30, true);
        assert!(groups.iter().all(|g| g.len() <= MAX_INPUTS));
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 300);
    }

    #[test]
    fn small_files_merge_many_at_a_time_and_larger_ones_fewer() {
        // The writer's small files (~70 kB): a directory of 100 is one merge.
        let small: Vec<_> = (0..100).map(|i| f(&format!("s{i:03}"), 70_000)).collect();
        assert_eq!(plan_dir(&small, 256 << 20, true).len(), 1);
        // Files of 3.5 MB: about 25 at a time, as the memory budget allows.
        let larger: Vec<_> = (0..64).map(|i| f(&format!("l{i:03}"), 3_500_000)).collect();
        let groups = plan_dir(&larger, 1 << 30, true);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert!((20..=30).contains(&sizes[0]), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 64);
        for g in &groups {
            assert!(g.iter().map(|f| input_memory(f.size)).sum::<u64>() <= MERGE_MEMORY);
        }
    }
}
