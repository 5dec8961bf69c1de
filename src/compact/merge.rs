//! Merge: Parquet files of one directory → files of about a target size, rows
//! sorted by one column.
//!
//! The writer's files are already sorted by `_event_time` (and the merged
//! files by their `lakewriter.sorted_by` column), so this is a k-way merge that
//! streams: each input holds one decoded batch at a time, and the output is
//! written row group by row group. Memory is bounded by the number of inputs
//! times the batch size, whatever the directory's size. An input that is not
//! known to be sorted on the column is read whole and sorted first.
//!
//! The merge takes runs, not rows: while one input's next key is not above
//! every other input's, its rows are copied as one slice. Inputs of successive
//! flushes barely overlap in time, so most of a merge is long runs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::schema::{self, SchemaError};
use crate::config::Compression;

/// Footer key naming the column a file's rows are sorted by.
pub const SORTED_BY: &str = "lakewriter.sorted_by";

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An input that cannot be read as Parquet (corrupt or truncated): it is
    /// left in place and reported, never merged.
    #[error("input {index} is unreadable: {msg}")]
    BadInput { index: usize, msg: String },
    #[error("the inputs' schemas cannot be merged: {0}")]
    Schema(#[from] SchemaError),
    #[error("sort column {0:?}: {1}")]
    SortColumn(String, String),
    #[error("merging: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("writing: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{rows_out} rows written for {rows_in} read")]
    Count { rows_in: u64, rows_out: u64 },
    #[error("stopped")]
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub sort_by: String,
    pub target_bytes: u64,
    pub row_group_rows: usize,
    pub compression: Compression,
}

/// One merged file, in the work directory.
#[derive(Debug, Clone)]
pub struct Output {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    /// (topic, partition) → (first offset, last offset, rows)
    pub ranges: BTreeMap<(String, i32), (i64, i64, u64)>,
}

#[derive(Debug)]
pub struct Merged {
    pub outputs: Vec<Output>,
    pub rows: u64,
}

/// Rows per write to the output.
const BATCH_ROWS: usize = 4096;

/// Rows decoded per input at a time. Every open input holds a batch, so this
/// times the fan-in bounds what the decoded rows take (4,096 made the string
/// columns' buffers 40% of a 32-input merge's peak heap).
const INPUT_BATCH_ROWS: usize = 1024;

/// One input's position: its current batch (in the merged schema) and keys.
struct Cursor {
    batches: Box<dyn Iterator<Item = Result<RecordBatch, MergeError>>>,
    batch: RecordBatch,
    keys: Vec<i64>,
    pos: usize,
    last: i64,
    index: usize,
}

impl Cursor {
    /// Load the next non-empty batch; `false` when the input is exhausted.
    fn advance(&mut self, sort_by: &str) -> Result<bool, MergeError> {
        for b in self.batches.by_ref() {
            let b = b?;
            if b.num_rows() == 0 {
                continue;
            }
            self.keys = sort_keys(&b, sort_by)?;
            self.batch = b;
            self.pos = 0;
            return Ok(true);
        }
        // Exhausted: let go of the reader's page buffers and the last batch
        // now rather than when the whole merge ends.
        self.batches = Box::new(std::iter::empty());
        self.batch = RecordBatch::new_empty(self.batch.schema());
        self.keys = Vec::new();
        Ok(false)
    }
}

/// The sort column as i64 (timestamps and integers; NULL first).
fn sort_keys(b: &RecordBatch, sort_by: &str) -> Result<Vec<i64>, MergeError> {
    let col = b
        .column_by_name(sort_by)
        .ok_or_else(|| MergeError::SortColumn(sort_by.into(), "missing from an input".into()))?;
    let as_i64 = match col.data_type() {
        DataType::Int64 => col.clone(),
        DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => arrow::compute::cast(col, &DataType::Int64)?,
        t => {
            return Err(MergeError::SortColumn(
                sort_by.into(),
                format!("type {t} is not an integer or a time"),
            ))
        }
    };
    let a = as_i64.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_null(i) { i64::MIN } else { a.value(i) })
        .collect())
}

/// An input of a merge: downloaded to the work directory, or (a small file)
/// held in memory.
#[derive(Debug, Clone)]
pub enum Input {
    File(PathBuf),
    Mem(bytes::Bytes),
}

/// What a reader reads: a file or bytes, one type for every reader of a merge.
enum Chunks {
    File(File),
    Mem(bytes::Bytes),
}

impl parquet::file::reader::Length for Chunks {
    fn len(&self) -> u64 {
        match self {
            Chunks::File(f) => f.len(),
            Chunks::Mem(b) => b.len() as u64,
        }
    }
}

impl parquet::file::reader::ChunkReader for Chunks {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Chunks::File(f) => Box::new(f.get_read(start)?),
            Chunks::Mem(b) => Box::new(b.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            Chunks::File(f) => f.get_bytes(start, length),
            Chunks::Mem(b) => b.get_bytes(start, length),
        }
    }
}

/// Inputs up to this size are decoded whole when the merge starts and their
/// readers dropped: an open reader holds a zstd decompression context per
/// column (~2.5 MB for the clickstream), more than such a file's rows take
/// decoded, and a merge of a hundred small files kept a hundred readers.
pub const DECODE_WHOLE_BYTES: u64 = 256 << 10;

/// The reader of one input, and the input's size.
fn open(
    input: &Input,
    index: usize,
) -> Result<(ParquetRecordBatchReaderBuilder<Chunks>, u64), MergeError> {
    use parquet::file::reader::Length;
    let bad = |msg: String| MergeError::BadInput { index, msg };
    let chunks = match input {
        Input::File(path) => Chunks::File(File::open(path).map_err(|e| bad(e.to_string()))?),
        Input::Mem(b) => Chunks::Mem(b.clone()),
    };
    let len = chunks.len();
    let b = ParquetRecordBatchReaderBuilder::try_new(chunks).map_err(|e| bad(e.to_string()))?;
    Ok((b, len))
}

/// Whether the file says (or, for the writer's own files, is known) to be
/// sorted on `sort_by`.
fn sorted_on(b: &ParquetRecordBatchReaderBuilder<Chunks>, sort_by: &str) -> bool {
    let kv = b.metadata().file_metadata().key_value_metadata();
    let has = |k: &str| kv.is_some_and(|kv| kv.iter().any(|e| e.key == k));
    let value = |k: &str| {
        kv.and_then(|kv| kv.iter().find(|e| e.key == k))
            .and_then(|e| e.value.clone())
    };
    match value(SORTED_BY) {
        Some(col) => col == sort_by,
        // The writer orders every file by event time (encode::time_order).
        None => sort_by == "_event_time" && (has("lakewriter.topic") || has("lakewriter.ranges")),
    }
}

/// The input's schema as the writer meant it: a field it only ever saw as
/// null is stored as an all-null Utf8 column, which would conflict with the
/// type a later file gives the field. Such leaves (every row group's null count
/// equal to its row count) are Null here, so that [`schema::union_all`] takes
/// the other files' type; [`schema::conform`] turns the all-null column into
/// nulls of that type.
fn logical_schema(b: &ParquetRecordBatchReaderBuilder<Chunks>) -> arrow::datatypes::Schema {
    let meta = b.metadata();
    let mut all_null: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for rg in meta.row_groups() {
        for c in rg.columns() {
            let nulls = c.statistics().and_then(|s| s.null_count_opt());
            let whole = nulls == Some(rg.num_rows().max(0) as u64);
            let e = all_null.entry(c.column_path().string()).or_insert(true);
            *e = *e && whole;
        }
    }
    fn walk(
        fields: &arrow::datatypes::Fields,
        parent: &str,
        all_null: &std::collections::HashMap<String, bool>,
    ) -> arrow::datatypes::Fields {
        fields
            .iter()
            .map(|f| {
                let path = if parent.is_empty() {
                    f.name().clone()
                } else {
                    format!("{parent}.{}", f.name())
                };
                match f.data_type() {
                    DataType::Utf8 if all_null.get(&path) == Some(&true) => Arc::new(
                        f.as_ref()
                            .clone()
                            .with_data_type(DataType::Null)
                            .with_nullable(true),
                    ),
                    DataType::Struct(kids) => Arc::new(
                        f.as_ref()
                            .clone()
                            .with_data_type(DataType::Struct(walk(kids, &path, all_null))),
                    ),
                    _ => f.clone(),
                }
            })
            .collect()
    }
    let s = b.schema();
    arrow::datatypes::Schema::new_with_metadata(
        walk(s.fields(), "", &all_null),
        s.metadata().clone(),
    )
}

/// Null columns back to the writer's all-null Utf8 (what ClickHouse reads).
fn null_as_utf8(s: &arrow::datatypes::Schema) -> arrow::datatypes::Schema {
    fn walk(fields: &arrow::datatypes::Fields) -> arrow::datatypes::Fields {
        fields
            .iter()
            .map(|f| match f.data_type() {
                DataType::Null => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8)),
                DataType::Struct(kids) => Arc::new(
                    f.as_ref()
                        .clone()
                        .with_data_type(DataType::Struct(walk(kids))),
                ),
                _ => f.clone(),
            })
            .collect()
    }
    arrow::datatypes::Schema::new_with_metadata(walk(s.fields()), s.metadata().clone())
}

/// Merge `inputs` into files `<out_dir>/<stem>-NNN.parquet`. `cancelled` is
/// polled between batches.
pub fn merge(
    inputs: &[Input],
    out_dir: &Path,
    stem: &str,
    opts: &MergeOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<Merged, MergeError> {
    let mut builders = Vec::with_capacity(inputs.len());
    let mut rows_in = 0u64;
    let mut sizes = Vec::with_capacity(inputs.len());
    for (i, p) in inputs.iter().enumerate() {
        let (b, len) = open(p, i)?;
        rows_in += b.metadata().file_metadata().num_rows().max(0) as u64;
        builders.push(b);
        sizes.push(len);
    }
    let logical: Vec<arrow::datatypes::Schema> = builders.iter().map(logical_schema).collect();
    let target: SchemaRef = Arc::new(null_as_utf8(&schema::union_all(logical.iter())?));
    if target.field_with_name(&opts.sort_by).is_err() {
        return Err(MergeError::SortColumn(
            opts.sort_by.clone(),
            "no input has it".into(),
        ));
    }
    let mut cursors = Vec::with_capacity(builders.len());
    for (index, b) in builders.into_iter().enumerate() {
        let sorted = sorted_on(&b, &opts.sort_by);
        let bad = move |e: &dyn std::fmt::Display| MergeError::BadInput {
            index,
            msg: e.to_string(),
        };
        let reader: ParquetRecordBatchReader = b
            .with_batch_size(INPUT_BATCH_ROWS)
            .build()
            .map_err(|e| bad(&e))?;
        let conform = {
            let target = target.clone();
            move |b: Result<RecordBatch, arrow::error::ArrowError>| -> Result<RecordBatch, MergeError> {
                let b = b.map_err(|e| bad(&e))?;
                Ok(schema::conform(&b, &target)?)
            }
        };
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, MergeError>>> =
            if sorted && sizes[index] > DECODE_WHOLE_BYTES {
                Box::new(reader.map(conform))
            } else if sorted {
                let all = reader.map(conform).collect::<Result<Vec<_>, _>>()?;
                Box::new(all.into_iter().map(Ok))
            } else {
                let all = reader.map(conform).collect::<Result<Vec<_>, _>>()?;
                let all = concat_batches(&target, &all)?;
                let keys = sort_keys(&all, &opts.sort_by)?;
                let keys = arrow::array::Int64Array::from(keys);
                let order = sort_to_indices(&keys, None, None)?;
                Box::new(std::iter::once(Ok(take_record_batch(&all, &order)?)))
            };
        let mut c = Cursor {
            batches,
            batch: RecordBatch::new_empty(target.clone()),
            keys: Vec::new(),
            pos: 0,
            last: i64::MIN,
            index,
        };
        if c.advance(&opts.sort_by)? {
            cursors.push(c);
        }
    }

    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = cursors
        .iter()
        .enumerate()
        .map(|(slot, c)| Reverse((c.keys[0], slot)))
        .collect();
    let mut out = OutputWriter::new(out_dir, stem, target.clone(), opts);
    // The next output batch's rows as (source batch, row): one gather per
    // output batch rather than a slice per run of rows and a concat. Runs are
    // a few rows long where partitions' events interleave in time, and the
    // per-run slicing of every column was a third of the merge's CPU.
    let mut sources: Vec<RecordBatch> = Vec::new();
    let mut source_of: Vec<Option<usize>> = vec![None; cursors.len()];
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(BATCH_ROWS);
    while let Some(Reverse((_, slot))) = heap.pop() {
        let bound = heap.peek().map_or(i64::MAX, |Reverse((k, _))| *k);
        let c = &mut cursors[slot];
        let start = c.pos;
        let room = BATCH_ROWS.saturating_sub(picks.len()).max(1);
        let mut end = start;
        while end < c.keys.len() && end - start < room && c.keys[end] <= bound {
            if c.keys[end] < c.last {
                return Err(MergeError::BadInput {
                    index: c.index,
                    msg: format!("rows are not sorted by {}", opts.sort_by),
                });
            }
            c.last = c.keys[end];
            end += 1;
        }
        let src = *source_of[slot].get_or_insert_with(|| {
            sources.push(c.batch.clone());
            sources.len() - 1
        });
        picks.extend((start..end).map(|row| (src, row)));
        c.pos = end;
        if c.pos == c.keys.len() {
            // The next batch is another source; this one stays in `sources`.
            source_of[slot] = None;
        }
        let more = c.pos < c.keys.len() || c.advance(&opts.sort_by)?;
        if more {
            heap.push(Reverse((c.keys[c.pos], slot)));
        }
        if picks.len() >= BATCH_ROWS {
            if cancelled() {
                return Err(MergeError::Cancelled);
            }
            out.write(&gather(&sources, &picks)?)?;
            sources.clear();
            source_of.fill(None);
            picks.clear();
        }
    }
    if !picks.is_empty() {
        out.write(&gather(&sources, &picks)?)?;
    }
    let outputs = out.finish()?;
    let rows_out: u64 = outputs.iter().map(|o| o.rows).sum();
    if rows_out != rows_in {
        return Err(MergeError::Count { rows_in, rows_out });
    }
    Ok(Merged {
        outputs,
        rows: rows_out,
    })
}

/// Writes merged rows, starting a new file once one reaches the target size.
struct OutputWriter<'a> {
    dir: &'a Path,
    stem: &'a str,
    schema: SchemaRef,
    opts: &'a MergeOptions,
    current: Option<(ArrowWriter<File>, Output)>,
    done: Vec<Output>,
}

impl<'a> OutputWriter<'a> {
    fn new(dir: &'a Path, stem: &'a str, schema: SchemaRef, opts: &'a MergeOptions) -> Self {
        OutputWriter {
            dir,
            stem,
            schema,
            opts,
            current: None,
            done: Vec::new(),
        }
    }

    /// Encodings chosen per column from `batch`, the output's first rows, the
    /// way the writer chooses them: no dictionary for mostly distinct values
    /// (building one was 14% of a merge's CPU for nothing), delta-packed
    /// integers and small dictionaries left uncompressed.
    fn props(&self, batch: &RecordBatch) -> Result<WriterProperties, MergeError> {
        let compression = match self.opts.compression {
            Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l)?),
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::None => PqCompression::UNCOMPRESSED,
        };
        let props = WriterProperties::builder().set_compression(compression);
        Ok(crate::encode::with_leaf_choices(props, batch)
            // Page statistics: a time-range query skips pages, not only row groups.
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(self.opts.row_group_rows))
            .set_created_by(format!("lakewriter {}", env!("CARGO_PKG_VERSION")))
            .build())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), MergeError> {
        if self.current.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:03}.parquet", self.stem, self.done.len()));
            let f = File::create(&path).map_err(|source| MergeError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let w = ArrowWriter::try_new(f, self.schema.clone(), Some(self.props(batch)?))?;
            self.current = Some((
                w,
                Output {
                    path,
                    rows: 0,
                    bytes: 0,
                    ranges: BTreeMap::new(),
                },
            ));
        }
        let Some((w, o)) = self.current.as_mut() else {
            return Ok(());
        };
        note_ranges(batch, &mut o.ranges);
        o.rows += batch.num_rows() as u64;
        w.write(batch)?;
        // Only row groups already written count: the open row group's size is
        // an uncompressed estimate, and cutting on it would split a merge of
        // files that fit the target into files that do not reach it (and that
        // the next pass would merge again).
        if w.bytes_written() as u64 >= self.opts.target_bytes {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), MergeError> {
        let Some((mut w, mut o)) = self.current.take() else {
            return Ok(());
        };
        let ranges: Vec<serde_json::Value> = o
            .ranges
            .iter()
            .map(|((t, p), (a, b, n))| {
                serde_json::json!({"topic": t, "partition": p,
                    "first_offset": a, "last_offset": b, "rows": n})
            })
            .collect();
        w.append_key_value_metadata(KeyValue::new(
            "lakewriter.ranges".into(),
            serde_json::Value::from(ranges).to_string(),
        ));
        w.append_key_value_metadata(KeyValue::new(SORTED_BY.into(), self.opts.sort_by.clone()));
        w.append_key_value_metadata(KeyValue::new(
            "lakewriter.compacted".into(),
            "true".to_string(),
        ));
        w.close()?;
        o.bytes = std::fs::metadata(&o.path)
            .map_err(|source| MergeError::Io {
                path: o.path.display().to_string(),
                source,
            })?
            .len();
        self.done.push(o);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Output>, MergeError> {
        self.close()?;
        Ok(self.done)
    }
}

/// The rows `picks` names, in that order, as one batch.
fn gather(sources: &[RecordBatch], picks: &[(usize, usize)]) -> Result<RecordBatch, MergeError> {
    let refs: Vec<&RecordBatch> = sources.iter().collect();
    Ok(arrow::compute::interleave_record_batch(&refs, picks)?)
}

/// Each (topic, partition)'s offset span and row count among the rows of `b`.
fn note_ranges(b: &RecordBatch, ranges: &mut BTreeMap<(String, i32), (i64, i64, u64)>) {
    let (Some(t), Some(p), Some(o)) = (
        b.column_by_name("_topic"),
        b.column_by_name("_partition"),
        b.column_by_name("_offset"),
    ) else {
        return;
    };
    let (Some(t), Some(p), Some(o)) = (
        t.as_string_opt::<i32>(),
        p.as_primitive_opt::<Int32Type>(),
        o.as_primitive_opt::<Int64Type>(),
    ) else {
        return;
    };
    // Rows of one partition come in runs: one map update per run.
    let mut fold = |(topic, part, a, z, n): (String, i32, i64, i64, u64)| {
        let e = ranges.entry((topic, part)).or_insert((a, z, 0));
        e.0 = e.0.min(a);
        e.1 = e.1.max(z);
        e.2 += n;
    };
    let mut run: Option<(String, i32, i64, i64, u64)> = None;
    for i in 0..b.num_rows() {
        let (topic, part, off) = (t.value(i), p.value(i), o.value(i));
        match &mut run {
            Some((rt, rp, a, z, n)) if rt == topic && *rp == part => {
                *a = (*a).min(off);
                *z = (*z).max(off);
                *n += 1;
            }
            _ => {
                if let Some(r) = run.take() {
                    fold(r);
                }
                run = Some((topic.to_string(), part, off, off, 1));
            }
        }
    }
    if let Some(r) = run {
        fold(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    fn write(path: &Path, x: ArrayRef, times: Vec<i64>, sorted: bool) {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", x.data_type().clone(), true),
            Field::new("_event_time", ts, false),
        ]));
        let t: ArrayRef = Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC"));
        let b = RecordBatch::try_new(schema.clone(), vec![x, t]).unwrap();
        let mut props = WriterProperties::builder();
        if sorted {
            props = props.set_key_value_metadata(Some(vec![KeyValue::new(
                SORTED_BY.into(),
                "_event_time".to_string(),
            )]));
        }
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props.build())).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }

    fn read(path: &Path) -> RecordBatch {
        let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let all: Vec<_> = r.map(|b| b.unwrap()).collect();
        concat_batches(&all[0].schema(), &all).unwrap()
    }

    #[test]
    fn a_field_only_null_in_older_files_takes_the_later_type_and_rows_come_out_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        // The writer's all-null Utf8 for a field it had only seen as null, and
        // not marked sorted (read whole and sorted first).
        write(
            &a,
            Arc::new(StringArray::from(vec![None::<&str>, None])),
            vec![30, 10],
            false,
        );
        write(
            &b,
            Arc::new(Int64Array::from(vec![Some(5), Some(6)])),
            vec![20, 40],
            true,
        );
        let opts = MergeOptions {
            sort_by: "_event_time".into(),
            target_bytes: 1 << 20,
            row_group_rows: 1000,
            compression: Compression::Zstd(3),
        };
        // One input from the work directory, one from memory.
        let b = Input::Mem(std::fs::read(&b).unwrap().into());
        let m = merge(&[Input::File(a), b], dir.path(), "out", &opts, &|| false).unwrap();
        assert_eq!((m.rows, m.outputs.len()), (4, 1));
        let out = read(&m.outputs[0].path);
        let t = out
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(t.values().to_vec(), vec![10, 20, 30, 40]);
        let x = out.column(0).as_primitive::<Int64Type>();
        assert_eq!(
            x.iter().collect::<Vec<_>>(),
            vec![None, Some(5), None, Some(6)]
        );
    }

    #[test]
    fn a_file_that_says_it_is_sorted_but_is_not_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        write(
            &a,
            Arc::new(Int64Array::from(vec![1, 2])),
            vec![30, 10],
            true,
        );
        write(&b, Arc::new(Int64Array::from(vec![3])), vec![20], true);
        let opts = MergeOptions {
            sort_by: "_event_time".into(),
            target_bytes: 1 << 20,
            row_group_rows: 1000,
            compression: Compression::Zstd(3),
        };
        match merge(
            &[Input::File(a), Input::File(b)],
            dir.path(),
            "out",
            &opts,
            &|| false,
        ) {
            Err(MergeError::BadInput { index: 0, msg }) => assert!(msg.contains("not sorted")),
            other => panic!("expected BadInput, got {other:?}"),
        }
    }

    #[test]
    fn a_merge_larger_than_the_target_is_cut_into_several_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for i in 0..4i64 {
            let p = dir.path().join(format!("{i}.parquet"));
            let n = 50_000i64;
            let vals: Vec<i64> = (0..n).map(|k| (k * 7919 + i) * 104_729).collect();
            let times: Vec<i64> = (0..n).map(|k| k * 4 + i).collect();
            write(&p, Arc::new(Int64Array::from(vals)), times, true);
            inputs.push(Input::File(p));
        }
        let opts = MergeOptions {
            sort_by: "_event_time".into(),
            target_bytes: 256 << 10,
            row_group_rows: 10_000,
            compression: Compression::Zstd(3),
        };
        let m = merge(&inputs, dir.path(), "out", &opts, &|| false).unwrap();
        assert_eq!(m.rows, 200_000);
        assert!(m.outputs.len() > 1, "{} outputs", m.outputs.len());
        let mut last = i64::MIN;
        for o in &m.outputs {
            let b = read(&o.path);
            let t = b
                .column(1)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            assert!(t.values().iter().all(|&v| {
                let ok = v >= last;
                last = v;
                ok
            }));
        }
    }
}
