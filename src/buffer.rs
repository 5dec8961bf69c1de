//! Buffer: events held in memory per output file until a flush cycle.
//!
//! One buffer per (table, date, event_type, topic, partition): a file never
//! mixes Kafka partitions, so each file covers offsets of exactly one
//! partition and can be rolled back on its own. A flush cycle takes *every*
//! buffer at once, so after it each partition's consumed range
//! `[first, next)` is fully in the lake and its offset can be committed to
//! `next` — offsets never run ahead of what is durable.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
// hashbrown for lookups by a borrowed key (no `FileKey` built per event) and its
// foldhash hasher (randomly seeded, several times cheaper than SipHash here).
use hashbrown::hash_map::RawEntryMut;
use hashbrown::{Equivalent, HashMap};

use crate::config::FlushPolicy;
use crate::deadletter::DeadLetter;
use crate::offsets::Tp;

/// Identifies one output file of a flush cycle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub table: Arc<str>,
    pub date: NaiveDate,
    /// Already escaped.
    pub event_type: String,
    pub tp: Tp,
}

impl FileKey {
    pub fn dest(&self) -> Dest<'_> {
        Dest {
            table: &self.table,
            date: self.date,
            event_type: &self.event_type,
            tp: &self.tp,
        }
    }
}

/// A `FileKey` by reference: what routing produces for each event.
#[derive(Debug, Clone, Copy)]
pub struct Dest<'a> {
    pub table: &'a Arc<str>,
    pub date: NaiveDate,
    /// Already escaped.
    pub event_type: &'a str,
    pub tp: &'a Tp,
}

// Hashes exactly like the derived `Hash` of `FileKey` (same fields, same order, `str` hashing).
impl Hash for Dest<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (**self.table).hash(h);
        self.date.hash(h);
        self.event_type.hash(h);
        self.tp.hash(h);
    }
}

impl Equivalent<FileKey> for Dest<'_> {
    fn equivalent(&self, k: &FileKey) -> bool {
        k.date == self.date
            && k.event_type == self.event_type
            && k.tp == *self.tp
            && *k.table == **self.table
    }
}

impl Dest<'_> {
    fn to_key(self) -> FileKey {
        FileKey {
            table: self.table.clone(),
            date: self.date,
            event_type: self.event_type.to_string(),
            tp: self.tp.clone(),
        }
    }
}

/// Kafka metadata of one buffered row.
#[derive(Debug, Clone)]
pub struct RowMeta {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub event_time_us: i64,
    /// Range in `Buffer::keys`, if the message had a key.
    pub key: Option<(u32, u32)>,
}

/// Rows of one output file: their JSON plus metadata.
#[derive(Debug, Default)]
pub struct Buffer {
    /// The rows' JSON, each followed by a newline, in chunks that never move once
    /// written: growing one `Vec` reallocates, which copies every byte again and
    /// touches twice the memory (13% of the consumer thread end to end).
    chunks: Vec<Vec<u8>>,
    /// Where the chunks go back when the buffer is dropped (after encoding).
    pool: Option<Arc<ChunkPool>>,
    /// Offset of each chunk's first byte in the concatenation of all chunks.
    bases: Vec<u32>,
    /// End offset in that concatenation of each row (exclusive, without the newline).
    ends: Vec<u32>,
    json_len: usize,
    /// Capacity of the chunks: what they occupy, whether filled or not.
    chunk_bytes: usize,
    pub meta: Vec<RowMeta>,
    pub keys: Vec<u8>,
    /// The partitions whose rows the buffer holds, each with the index of its
    /// first row, in row order: one for a partition's buffer, several once
    /// buffers of one directory are joined into one file ([`Buffer::append`]).
    pub parts: Vec<(Tp, usize)>,
}

/// JSON chunk sizes: a file's first chunk is small (most files of a cycle hold
/// a few rows), the rest are all one size, so a chunk freed by any file of one
/// cycle fits any file of the next. A row longer than a chunk gets a chunk of
/// its own, which is not pooled.
const SMALL_CHUNK: usize = 4 << 10;
const CHUNK: usize = 64 << 10;

/// JSON chunks handed back by encoded buffers and taken by the next cycle's.
///
/// Memory the process has not touched yet costs a page fault and a zeroing per
/// 4 KiB page on its first write (2–12 µs each on this VM, which hands freed memory
/// back to its host). Left to the allocator, a cycle's freed chunks were reused
/// only in part (other allocations fragment the heap): each cycle faulted in tens
/// of MiB afresh. Keeps at most one buffer budget's worth.
#[derive(Debug)]
pub struct ChunkPool {
    free: Mutex<PoolLists>,
    keep_bytes: usize,
}

#[derive(Debug, Default)]
struct PoolLists {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
}

impl PoolLists {
    /// Only chunks of exactly these two sizes are kept.
    fn bytes(&self) -> usize {
        self.small.len() * SMALL_CHUNK + self.large.len() * CHUNK
    }
}

impl ChunkPool {
    pub fn new(keep_bytes: usize) -> Self {
        Self {
            free: Mutex::new(PoolLists::default()),
            keep_bytes,
        }
    }
    fn lists(&self) -> std::sync::MutexGuard<'_, PoolLists> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn take(&self, size: usize) -> Vec<u8> {
        let mut l = self.lists();
        let c = match size {
            SMALL_CHUNK => l.small.pop(),
            CHUNK => l.large.pop(),
            _ => None,
        };
        c.unwrap_or_else(|| Vec::with_capacity(size))
    }
    fn give(&self, chunks: &mut Vec<Vec<u8>>) {
        let mut l = self.lists();
        for mut c in chunks.drain(..) {
            let cap = c.capacity();
            if l.bytes() + cap > self.keep_bytes {
                continue;
            }
            c.clear();
            match cap {
                SMALL_CHUNK => l.small.push(c),
                CHUNK => l.large.push(c),
                _ => {}
            }
        }
    }
    /// Bytes held for reuse.
    pub fn held(&self) -> usize {
        self.lists().bytes()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(p) = &self.pool {
            p.give(&mut self.chunks);
        }
    }
}

impl Buffer {
    pub fn rows(&self) -> usize {
        self.ends.len()
    }
    /// Bytes held (for the memory cap): JSON chunks (filled or not), keys and
    /// per-row metadata.
    pub fn bytes(&self) -> usize {
        self.chunk_bytes + self.keys.len() + self.meta.len() * std::mem::size_of::<RowMeta>()
    }
    /// Bytes of JSON (rows plus a newline each).
    pub fn json_bytes(&self) -> usize {
        self.json_len
    }
    pub fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize + 1
        };
        let end = self.ends[i] as usize;
        // Rows never straddle chunks; the last chunk starting at or before the row holds it.
        let k = self.bases.partition_point(|&b| b as usize <= start) - 1;
        let base = self.bases[k] as usize;
        &self.chunks[k][start - base..end - base]
    }
    /// The rows `idx`, in that order. A cursor follows the chunks, so rows taken
    /// in increasing order (the usual case) skip the search `row` does.
    pub fn rows_at<'a>(&'a self, idx: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut k = 0;
        idx.iter().map(move |&i| {
            let start = if i == 0 {
                0
            } else {
                self.ends[i - 1] as usize + 1
            };
            let end = self.ends[i] as usize;
            let holds = |k: usize| {
                self.bases[k] as usize <= start
                    && self.bases.get(k + 1).is_none_or(|&b| start < b as usize)
            };
            if !holds(k) {
                k = if k + 1 < self.bases.len() && holds(k + 1) {
                    k + 1
                } else {
                    self.bases.partition_point(|&b| b as usize <= start) - 1
                };
            }
            let base = self.bases[k] as usize;
            &self.chunks[k][start - base..end - base]
        })
    }
    /// The partition of row `i` (`default` when the buffer does not say).
    pub fn tp_of<'a>(&'a self, i: usize, default: &'a Tp) -> &'a Tp {
        match self.parts.partition_point(|(_, first)| *first <= i) {
            0 => default,
            k => &self.parts[k - 1].0,
        }
    }

    /// Take `other`'s rows after this buffer's, without copying their JSON:
    /// its chunks move over and its positions shift by this buffer's length.
    pub fn append(&mut self, mut other: Buffer) {
        let shift = self.json_len as u32;
        let rows = self.rows();
        let key_shift = self.keys.len() as u32;
        self.bases.extend(other.bases.iter().map(|b| b + shift));
        self.ends.extend(other.ends.iter().map(|e| e + shift));
        self.chunks.append(&mut other.chunks);
        self.json_len += other.json_len;
        self.chunk_bytes += other.chunk_bytes;
        self.keys.extend_from_slice(&other.keys);
        self.meta.extend(other.meta.drain(..).map(|mut m| {
            m.key = m.key.map(|(s, e)| (s + key_shift, e + key_shift));
            m
        }));
        self.parts
            .extend(other.parts.drain(..).map(|(tp, first)| (tp, first + rows)));
        if self.pool.is_none() {
            self.pool = other.pool.take();
        }
    }

    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.meta[i]
            .key
            .map(|(s, e)| &self.keys[s as usize..e as usize])
    }
    fn push(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        offset: i64,
        timestamp_ms: Option<i64>,
        event_time_us: i64,
    ) {
        let need = payload.len() + 1;
        let chunk = match self.chunks.last_mut() {
            Some(c) if c.capacity() - c.len() >= need => c,
            _ => {
                let size = match self.chunks.len() {
                    0 if need <= SMALL_CHUNK => SMALL_CHUNK,
                    _ => need.max(CHUNK),
                };
                let c = match &self.pool {
                    Some(p) => p.take(size),
                    None => Vec::with_capacity(size),
                };
                self.chunk_bytes += c.capacity();
                self.bases.push(self.json_len as u32);
                self.chunks.push(c);
                let last = self.chunks.len() - 1;
                &mut self.chunks[last]
            }
        };
        chunk.extend_from_slice(payload);
        chunk.push(b'\n');
        self.json_len += need;
        self.ends.push((self.json_len - 1) as u32);
        let key = key.map(|k| {
            let s = self.keys.len() as u32;
            self.keys.extend_from_slice(k);
            (s, self.keys.len() as u32)
        });
        self.meta.push(RowMeta {
            offset,
            timestamp_ms,
            event_time_us,
            key,
        });
    }
}

/// Progress of one partition inside the current cycle.
#[derive(Debug, Clone)]
pub struct Range {
    /// First offset consumed in this cycle.
    pub first: i64,
    /// One past the last offset consumed: what gets committed.
    pub next: i64,
}

/// Everything a flush cycle writes.
#[derive(Debug, Default)]
pub struct Cycle {
    pub files: BTreeMap<FileKey, Buffer>,
    pub ranges: BTreeMap<Tp, Range>,
    pub dead: BTreeMap<Tp, Vec<DeadLetter>>,
    pub reason: &'static str,
}

impl Cycle {
    pub fn rows(&self) -> usize {
        self.files.values().map(Buffer::rows).sum()
    }
}

/// Whether `dest`'s event type may have a file in its table.
fn admit(
    types: &mut HashMap<Arc<str>, hashbrown::HashSet<String>>,
    max: usize,
    dest: &Dest<'_>,
) -> bool {
    let set = types.entry(dest.table.clone()).or_default();
    if set.contains(dest.event_type) {
        return true;
    }
    if set.len() >= max {
        return false;
    }
    set.insert(dest.event_type.to_string());
    true
}

/// A new event type over the table's limit (`--max-event-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many distinct event types in the table (limit {0}); raise --max-event-types if this type is real")]
pub struct TooManyTypes(pub usize);

#[derive(Debug)]
pub struct Buffers {
    policy: FlushPolicy,
    pool: Arc<ChunkPool>,
    files: HashMap<FileKey, Buffer>,
    ranges: HashMap<Tp, Range>,
    dead: HashMap<Tp, Vec<DeadLetter>>,
    bytes: usize,
    cycle_started: Option<Instant>,
    due: Option<&'static str>,
    /// Event types admitted per table, and how many a table may have.
    types: HashMap<Arc<str>, hashbrown::HashSet<String>>,
    max_types: usize,
}

impl Buffers {
    pub fn new(policy: FlushPolicy) -> Self {
        Self {
            pool: Arc::new(ChunkPool::new(policy.max_buffer_bytes)),
            policy,
            files: HashMap::new(),
            ranges: HashMap::new(),
            dead: HashMap::new(),
            bytes: 0,
            cycle_started: None,
            due: None,
            types: HashMap::new(),
            max_types: usize::MAX,
        }
    }

    /// Admit at most `max` distinct event types per table (each one costs a
    /// schema and a file per partition and cycle); `known` are the types the
    /// lake already has, as (table, escaped event type).
    pub fn limit_event_types(
        &mut self,
        max: usize,
        known: impl IntoIterator<Item = (Arc<str>, String)>,
    ) {
        self.max_types = max;
        for (table, t) in known {
            self.types.entry(table).or_default().insert(t);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn advance(&mut self, tp: &Tp, offset: i64, now: Instant) {
        self.cycle_started.get_or_insert(now);
        match self.ranges.get_mut(tp) {
            Some(r) => r.next = r.next.max(offset + 1),
            None => {
                self.ranges.insert(
                    tp.clone(),
                    Range {
                        first: offset,
                        next: offset + 1,
                    },
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        dest: Dest<'_>,
        payload: &[u8],
        msg_key: Option<&[u8]>,
        offset: i64,
        timestamp_ms: Option<i64>,
        event_time_us: i64,
        now: Instant,
    ) -> Result<(), TooManyTypes> {
        self.advance(dest.tp, offset, now);
        let tp_buf = match self.files.raw_entry_mut().from_key(&dest) {
            RawEntryMut::Occupied(o) => o.into_mut(),
            RawEntryMut::Vacant(v) => {
                // The type gate, once per new buffer, not per event.
                if !admit(&mut self.types, self.max_types, &dest) {
                    return Err(TooManyTypes(self.max_types));
                }
                let mut b = Buffer::default();
                b.pool = Some(self.pool.clone());
                b.parts.push((dest.tp.clone(), 0));
                v.insert(dest.to_key(), b).1
            }
        };
        let before = tp_buf.bytes();
        tp_buf.push(payload, msg_key, offset, timestamp_ms, event_time_us);
        let after = tp_buf.bytes();
        self.bytes += after - before;
        if tp_buf.rows() >= self.policy.rows {
            self.due.get_or_insert("rows");
        } else if after >= self.policy.bytes {
            self.due.get_or_insert("bytes");
        }
        if self.bytes >= self.policy.max_buffer_bytes {
            self.due.get_or_insert("memory");
        }
        Ok(())
    }

    /// Cover `offset` in the cycle's range without writing anything for it.
    pub fn skip(&mut self, tp: &Tp, offset: i64, now: Instant) {
        self.advance(tp, offset, now);
    }

    pub fn push_dead(&mut self, tp: &Tp, dl: DeadLetter, now: Instant) {
        self.advance(tp, dl.offset, now);
        self.bytes += dl.payload.len() + dl.reason.len() + 64;
        self.dead.entry(tp.clone()).or_default().push(dl);
        if self.bytes >= self.policy.max_buffer_bytes {
            self.due.get_or_insert("memory");
        }
    }

    /// A size limit (rows, bytes, memory) reached by the last push, if any.
    pub fn limit_reached(&self) -> Option<&'static str> {
        self.due
    }

    /// Why a flush is due now, if it is.
    pub fn flush_due(&self, now: Instant) -> Option<&'static str> {
        if let Some(r) = self.due {
            return Some(r);
        }
        match self.cycle_started {
            Some(t) if now.saturating_duration_since(t) >= self.policy.interval => Some("interval"),
            _ => None,
        }
    }

    /// Time until the age limit fires (for poll timeouts).
    pub fn time_to_interval(&self, now: Instant) -> Option<Duration> {
        self.cycle_started.map(|t| {
            self.policy
                .interval
                .saturating_sub(now.saturating_duration_since(t))
        })
    }

    /// Take everything buffered as one cycle.
    pub fn take(&mut self, reason: &'static str) -> Cycle {
        self.bytes = 0;
        self.cycle_started = None;
        self.due = None;
        Cycle {
            files: self.files.drain().collect(),
            ranges: self.ranges.drain().collect(),
            dead: self.dead.drain().collect(),
            reason,
        }
    }

    /// Forget what was buffered for partitions this member no longer owns:
    /// their next owner re-reads them from the committed offset.
    pub fn drop_partitions(&mut self, tps: &[Tp]) {
        if tps.is_empty() {
            return;
        }
        self.files.retain(|k, _| !tps.contains(&k.tp));
        for tp in tps {
            self.ranges.remove(tp);
            self.dead.remove(tp);
        }
        self.bytes = self.files.values().map(Buffer::bytes).sum::<usize>()
            + self
                .dead
                .values()
                .flatten()
                .map(|d| d.payload.len() + d.reason.len() + 64)
                .sum::<usize>();
        if self.ranges.is_empty() {
            self.cycle_started = None;
            self.due = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_event_types_beyond_the_limit_are_refused_known_ones_kept() {
        let mut b = Buffers::new(FlushPolicy {
            rows: 100,
            bytes: 1 << 20,
            interval: Duration::from_secs(60),
            max_buffer_bytes: 1 << 20,
        });
        b.limit_event_types(2, [(Arc::<str>::from("t"), "a".to_string())]);
        let t0 = Instant::now();
        b.push(key(0, "b").dest(), b"{}", None, 1, None, 0, t0)
            .unwrap();
        assert_eq!(
            b.push(key(0, "c").dest(), b"{}", None, 2, None, 0, t0),
            Err(TooManyTypes(2))
        );
        // Known types go on, in new buffers too (another partition, a later cycle).
        b.push(key(1, "a").dest(), b"{}", None, 3, None, 0, t0)
            .unwrap();
        b.take("test");
        b.push(key(0, "b").dest(), b"{}", None, 4, None, 0, t0)
            .unwrap();
        assert!(b
            .push(key(0, "c").dest(), b"{}", None, 5, None, 0, t0)
            .is_err());
    }

    #[test]
    fn too_many_types_has_its_dead_letter_kind() {
        assert_eq!(
            crate::deadletter::reason_kind(&TooManyTypes(5).to_string()),
            "too_many_types"
        );
    }

    fn policy() -> FlushPolicy {
        FlushPolicy {
            rows: 3,
            bytes: 1 << 20,
            interval: Duration::from_secs(10),
            max_buffer_bytes: 1 << 20,
        }
    }

    fn key(tp: i32, t: &str) -> FileKey {
        FileKey {
            table: "t".into(),
            date: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            event_type: t.into(),
            tp: Tp {
                topic: "x".into(),
                partition: tp,
            },
        }
    }

    #[test]
    fn row_limit_age_limit_and_ranges() {
        let t0 = Instant::now();
        let mut b = Buffers::new(policy());
        b.push(key(0, "a").dest(), b"{}", Some(b"k"), 10, None, 0, t0)
            .unwrap();
        b.push(key(0, "b").dest(), b"{\"x\":1}", None, 11, Some(5), 0, t0)
            .unwrap();
        b.push(key(1, "a").dest(), b"{}", None, 7, None, 0, t0)
            .unwrap();
        assert_eq!(b.flush_due(t0), None);
        assert_eq!(b.flush_due(t0 + Duration::from_secs(10)), Some("interval"));
        assert_eq!(
            b.time_to_interval(t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        b.push(key(0, "a").dest(), b"{}", None, 12, None, 0, t0)
            .unwrap();
        b.push(key(0, "a").dest(), b"{}", None, 13, None, 0, t0)
            .unwrap();
        assert_eq!(b.flush_due(t0), Some("rows"));
        let c = b.take("rows");
        assert!(
            b.is_empty() && b.bytes() == 0 && b.flush_due(t0 + Duration::from_secs(99)).is_none()
        );
        assert_eq!(c.rows(), 5);
        let r0 = &c.ranges[&Tp {
            topic: "x".into(),
            partition: 0,
        }];
        assert_eq!((r0.first, r0.next), (10, 14));
        let a0 = &c.files[&key(0, "a")];
        assert_eq!(a0.row(1), b"{}");
        assert_eq!(a0.key(0), Some(&b"k"[..]));
        assert_eq!(c.files[&key(0, "b")].row(0), b"{\"x\":1}");
    }

    /// Rows of every size, across many chunks (and one larger than a chunk), read
    /// back exactly, in order, and the JSON byte count covers them all.
    #[test]
    fn rows_read_back_across_chunks() {
        let mut b = Buffer::default();
        let mut rows: Vec<Vec<u8>> = Vec::new();
        for i in 0..20_000usize {
            let len = match i {
                15_000 => CHUNK + 5,
                _ => i * 37 % 700,
            };
            rows.push((0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect());
        }
        rows.push(Vec::new());
        for (i, r) in rows.iter().enumerate() {
            b.push(r, None, i as i64, None, 0);
        }
        assert!(b.chunks.len() > 5, "only {} chunks", b.chunks.len());
        assert_eq!(b.rows(), rows.len());
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(b.row(i), &r[..], "row {i}");
        }
        // In order, backwards and scattered, `rows_at` reads what `row` reads.
        let forward: Vec<usize> = (0..rows.len()).collect();
        let backward: Vec<usize> = forward.iter().rev().copied().collect();
        let scattered: Vec<usize> = (0..rows.len()).map(|i| i * 7_919 % rows.len()).collect();
        for idx in [forward, backward, scattered] {
            let got: Vec<&[u8]> = b.rows_at(&idx).collect();
            assert_eq!(got.len(), idx.len());
            for (g, &i) in got.iter().zip(&idx) {
                assert_eq!(*g, &rows[i][..], "row {i}");
            }
        }
        let total: usize = rows.iter().map(|r| r.len() + 1).sum();
        assert_eq!(b.json_bytes(), total);
        assert!(b.chunks.iter().map(Vec::len).sum::<usize>() == total);
    }

    /// Joined buffers read back every row, key and partition of each, in order.
    #[test]
    fn appended_buffers_keep_rows_keys_and_partitions() {
        let t0 = Instant::now();
        let mut b = Buffers::new(policy());
        let big = vec![b'x'; CHUNK + 10];
        b.push(
            key(2, "a").dest(),
            b"{\"p\":2}",
            Some(b"k2"),
            5,
            None,
            0,
            t0,
        )
        .unwrap();
        b.push(key(2, "a").dest(), &big, None, 6, None, 0, t0)
            .unwrap();
        b.push(
            key(0, "a").dest(),
            b"{\"p\":0}",
            Some(b"k0"),
            9,
            None,
            0,
            t0,
        )
        .unwrap();
        b.push(key(1, "a").dest(), b"{\"p\":1}", None, 3, None, 0, t0)
            .unwrap();
        let c = b.take("test");
        let mut files = c.files.into_iter();
        let (k0, mut joined) = files.next().unwrap();
        assert_eq!(k0, key(0, "a"));
        let json = joined.json_bytes();
        for (_, other) in files {
            joined.append(other);
        }
        assert_eq!(joined.rows(), 4);
        assert_eq!(joined.json_bytes(), json + 8 + 8 + big.len() + 1);
        let rows: Vec<&[u8]> = joined.rows_at(&[0, 1, 2, 3]).collect();
        assert_eq!(
            rows,
            [&b"{\"p\":0}"[..], b"{\"p\":1}", b"{\"p\":2}", &big[..]]
        );
        assert_eq!(joined.row(3), &big[..]);
        let keys: Vec<Option<&[u8]>> = (0..4).map(|i| joined.key(i)).collect();
        assert_eq!(keys, [Some(&b"k0"[..]), None, Some(b"k2"), None]);
        let parts: Vec<i32> = (0..4).map(|i| joined.tp_of(i, &k0.tp).partition).collect();
        assert_eq!(parts, [0, 1, 2, 2]);
        let offsets: Vec<i64> = joined.meta.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [9, 3, 5, 6]);
    }

    #[test]
    fn memory_cap_forces_a_flush_and_revoked_partitions_are_dropped() {
        let t0 = Instant::now();
        let mut b = Buffers::new(FlushPolicy {
            max_buffer_bytes: 1000,
            ..policy()
        });
        let big = vec![b'x'; 600];
        b.push(key(0, "a").dest(), &big, None, 1, None, 0, t0)
            .unwrap();
        b.push(key(1, "b").dest(), &big, None, 1, None, 0, t0)
            .unwrap();
        assert_eq!(b.flush_due(t0), Some("memory"));
        b.drop_partitions(&[Tp {
            topic: "x".into(),
            partition: 1,
        }]);
        let c = b.take("memory");
        assert_eq!(c.files.len(), 1);
        assert_eq!(c.ranges.len(), 1);
    }

    /// Chunks of dropped buffers are reused by the next ones (the same memory),
    /// oversized ones are not kept, the pool holds at most its budget, and the
    /// memory cap counts the chunks' capacity.
    #[test]
    fn chunks_of_encoded_buffers_are_reused_and_the_pool_is_bounded() {
        let t0 = Instant::now();
        let mut b = Buffers::new(FlushPolicy {
            max_buffer_bytes: 1 << 20,
            rows: 1 << 30,
            ..policy()
        });
        let row = vec![b'x'; 1000];
        for i in 0..300 {
            b.push(key(0, "a").dest(), &row, None, i, None, 0, t0)
                .unwrap();
        }
        b.push(key(0, "b").dest(), b"{}", None, 300, None, 0, t0)
            .unwrap();
        b.push(
            key(0, "c").dest(),
            &vec![b'y'; CHUNK * 2],
            None,
            301,
            None,
            0,
            t0,
        )
        .unwrap();
        // "a": 300 rows of 1001 bytes, 4 in a 4 KiB chunk, then 65 per 64 KiB one; "b": one
        // 4 KiB chunk; "c": a chunk of its own. The cap counts what the chunks occupy.
        let a_large = (300 - 4usize).div_ceil(65);
        let chunks = 2 * SMALL_CHUNK + a_large * CHUNK + (CHUNK * 2 + 1);
        assert_eq!(b.bytes(), chunks + 302 * std::mem::size_of::<RowMeta>());
        let c = b.take("rows");
        let first: Vec<*const u8> = c.files[&key(0, "a")]
            .chunks
            .iter()
            .map(|c| c.as_ptr())
            .collect();
        drop(c);
        let pool = b.pool.clone();
        assert_eq!(pool.held(), 2 * SMALL_CHUNK + (first.len() - 1) * CHUNK);
        for i in 0..300 {
            b.push(key(1, "a").dest(), &row, None, i, None, 0, t0)
                .unwrap();
        }
        let again: Vec<*const u8> = b.files[&key(1, "a")]
            .chunks
            .iter()
            .map(|c| c.as_ptr())
            .collect();
        // Its 64 KiB chunks are exactly the last buffer's (the 4 KiB one may be "b"'s).
        assert_eq!(again.len(), first.len());
        assert!(
            first[1..].iter().all(|p| again.contains(p)),
            "chunks were not reused"
        );
        drop(b.take("rows"));

        let small = ChunkPool::new(3 * CHUNK);
        let mut chunks: Vec<Vec<u8>> = (0..5).map(|_| Vec::with_capacity(CHUNK)).collect();
        small.give(&mut chunks);
        assert_eq!(small.held(), 3 * CHUNK);
        assert_eq!(small.take(CHUNK).capacity(), CHUNK);
        assert_eq!(small.held(), 2 * CHUNK);
    }
}
