//! Encode: one buffer of JSON rows → one Parquet file with typed columns.
//!
//! The schema per (table, event_type) is inferred from the data: nested
//! objects stay structs (ClickHouse reads them as named Tuples), new fields
//! widen it, an integer field that meets a float widens to Float64 (unless
//! it has held an integer a double cannot hold exactly: then the float is
//! dead-lettered), and a row whose value conflicts with a column's type is
//! dead-lettered instead of corrupting the column. No value is ever stored
//! inexactly.
//!
//! Fast path: [`json::decode`] decodes the whole buffer in one go against
//! the known schema, strictly (an unknown field, a fraction in an integer
//! column or a string in a number column is a mismatch, never silently
//! dropped or bent). Only when that fails do we parse rows one by one to
//! widen the schema or find the offending rows. arrow-json remains for
//! schemas with types our decoder does not build.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use arrow::json::ReaderBuilder;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use serde_json::Value;

use crate::buffer::{Buffer, FileKey};
use crate::config::Compression;
use crate::offsets::Tp;

pub mod json;

/// Rows used to guess the schema of a type seen for the first time before
/// trying the bulk decoder.
const SAMPLE_ROWS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// Settings of the Parquet writer.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub compression: Compression,
    pub row_group_rows: usize,
    /// Object keys leading to the event type: that column holds text (see [`TEXT`]).
    pub event_type_path: Option<Arc<[String]>>,
}

/// The result of encoding one buffer.
#[derive(Debug)]
pub struct Encoded {
    /// `None` when no row survived (all dead-lettered).
    pub parquet: Option<Bytes>,
    pub rows: usize,
    /// (row index in the buffer, reason)
    pub dead: Vec<(usize, String)>,
    /// The (possibly widened) schema of the event columns.
    pub schema: Schema,
    pub schema_changed: bool,
}

/// Metadata columns appended to every row.
pub fn meta_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        Field::new("_topic", DataType::Utf8, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_timestamp", ts.clone(), true),
        Field::new("_key", DataType::Binary, true),
        Field::new("_event_time", ts.clone(), false),
        Field::new("_ingested_at", ts, false),
    ]
}

/// Field metadata marking a column that has held an integer a double cannot
/// represent exactly (beyond ±2^53): it must never widen to Float64, or every
/// such value written before and after would read back rounded.
pub const EXACT_INT: &str = "lakewriter.exact_integer";

fn exact(f: &Field) -> bool {
    f.metadata().contains_key(EXACT_INT)
}

/// Field metadata marking a Utf8 column that takes any JSON scalar as its
/// literal text: the event-type column. Events route by the literal (`5`,
/// `"5"` → `event_type=5`; `7.250` stays `7.250`), so the column holds the
/// same text as the directory, and a number and a string of the same type
/// share one file instead of dead-lettering each other.
pub const TEXT: &str = "lakewriter.scalar_text";

fn text(f: &Field) -> bool {
    f.metadata().contains_key(TEXT)
}

fn mark_text(f: Field) -> Field {
    let mut m = f.metadata().clone();
    m.insert(TEXT.to_string(), "true".to_string());
    f.with_data_type(DataType::Utf8).with_metadata(m)
}

fn scalar(t: &DataType) -> bool {
    use DataType::*;
    matches!(t, Null | Boolean | Int64 | UInt64 | Float64 | Utf8)
}

/// Make the field at `path` (object keys) a text column. A new schema gets
/// it whatever the sample inferred; a stored one only where the column is
/// still text or unknown (a table whose numeric event-type column predates
/// the rule keeps its type). A path through an array is left alone. Returns
/// whether the schema changed.
fn type_as_text(logical: &mut Schema, path: &[String], new: bool) -> bool {
    fn walk(fields: &Fields, path: &[String], new: bool) -> Option<Fields> {
        let (name, rest) = path.split_first()?;
        let (pos, f) = fields.find(name)?;
        let next = if rest.is_empty() {
            let convertible = new || matches!(f.data_type(), DataType::Utf8 | DataType::Null);
            if text(f) || !convertible || !scalar(f.data_type()) {
                return None;
            }
            mark_text(f.as_ref().clone())
        } else {
            let DataType::Struct(kids) = f.data_type() else {
                return None;
            };
            let kids = walk(kids, rest, new)?;
            f.as_ref().clone().with_data_type(DataType::Struct(kids))
        };
        let mut out: Vec<Field> = fields.iter().map(|f| f.as_ref().clone()).collect();
        out[pos] = next;
        Some(Fields::from(out))
    }
    match walk(logical.fields(), path, new) {
        Some(fields) => {
            *logical = Schema::new_with_metadata(fields, logical.metadata().clone());
            true
        }
        None => false,
    }
}

/// `f` with the exactness mark set (only integer columns carry it).
fn mark_exact(f: Field, on: bool) -> Field {
    let integer = matches!(f.data_type(), DataType::Int64 | DataType::UInt64);
    let mut m = f.metadata().clone();
    if on && integer {
        m.insert(EXACT_INT.to_string(), "true".to_string());
    } else {
        m.remove(EXACT_INT);
    }
    f.with_metadata(m)
}

/// Infer the logical type of a JSON value (`Null` stands for "unknown yet").
/// Integers are Int64, or UInt64 above `i64::MAX`; numbers with a fraction or
/// an exponent are Float64.
pub fn infer(v: &Value, path: &str) -> Result<DataType, String> {
    Ok(infer_field("", v, path)?.data_type().clone())
}

fn infer_field(name: &str, v: &Value, path: &str) -> Result<Field, String> {
    let (t, big) = match v {
        Value::Null => (DataType::Null, false),
        Value::Bool(_) => (DataType::Boolean, false),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => (
                DataType::Int64,
                i.unsigned_abs() as u128 > json::MAX_EXACT_INT,
            ),
            (None, Some(_)) => (DataType::UInt64, true),
            (None, None) => (DataType::Float64, false),
        },
        Value::String(_) => (DataType::Utf8, false),
        Value::Array(items) => {
            let item_path = format!("{path}[]");
            let mut item = Field::new_list_field(DataType::Null, true);
            for v in items {
                item = merge_field(&item, &infer_field("item", v, &item_path)?, &item_path)?;
            }
            (DataType::List(Arc::new(item)), false)
        }
        Value::Object(m) => {
            let mut fields = Vec::with_capacity(m.len());
            for (k, v) in m {
                fields.push(infer_field(k, v, &format!("{path}.{k}"))?);
            }
            (DataType::Struct(Fields::from(fields)), false)
        }
    };
    Ok(mark_exact(Field::new(name, t, true), big))
}

/// Merge two logical types, widening where that loses nothing a reader
/// would care about; anything else is a conflict naming the field.
pub fn merge(a: &DataType, b: &DataType, path: &str) -> Result<DataType, String> {
    merge_types(a, b, false, path)
}

/// Merge two fields of the same name; the exactness and text marks are kept once set.
fn merge_field(a: &Field, b: &Field, path: &str) -> Result<Field, String> {
    if text(a) || text(b) {
        let (t, other) = if text(a) { (a, b) } else { (b, a) };
        if !scalar(other.data_type()) {
            return Err(format!(
                "field {} holds the event type (a string, number or boolean) but {} in this event",
                display_path(path),
                other.data_type()
            ));
        }
        return Ok(t.clone().with_nullable(true));
    }
    let big = exact(a) || exact(b);
    let t = merge_types(a.data_type(), b.data_type(), big, path)?;
    Ok(mark_exact(Field::new(a.name(), t, true), big))
}

/// `big`: the column has held an integer beyond ±2^53 (see [`EXACT_INT`]).
fn merge_types(a: &DataType, b: &DataType, big: bool, path: &str) -> Result<DataType, String> {
    use DataType::*;
    let rounded = || {
        format!(
            "field {} holds integers beyond 2^53 that Float64 cannot hold exactly; a fractional value cannot join it",
            display_path(path)
        )
    };
    Ok(match (a, b) {
        (x, y) if x == y => x.clone(),
        (Null, y) => y.clone(),
        (x, Null) => x.clone(),
        (Int64, Float64) | (Float64, Int64) if big => return Err(rounded()),
        (Int64, Float64) | (Float64, Int64) => Float64,
        (UInt64, Float64) | (Float64, UInt64) => return Err(rounded()),
        // A negative value in a UInt64 column is refused by the decoder, row by row.
        (Int64, UInt64) | (UInt64, Int64) => UInt64,
        (List(x), List(y)) => List(Arc::new(merge_field(x, y, &format!("{path}[]"))?)),
        (Struct(x), Struct(y)) => Struct(merge_fields(x, y, path)?),
        (x, y) => {
            return Err(format!(
                "field {} is {} in the table schema but {} in this event",
                display_path(path),
                x,
                y
            ))
        }
    })
}

fn display_path(p: &str) -> &str {
    p.strip_prefix('.').unwrap_or(p)
}

fn merge_fields(a: &Fields, b: &Fields, path: &str) -> Result<Fields, String> {
    let mut out: Vec<Field> = Vec::with_capacity(a.len().max(b.len()));
    for f in a.iter() {
        let m = match b.find(f.name()) {
            Some((_, g)) => merge_field(f, g, &format!("{path}.{}", f.name()))?,
            None => f.as_ref().clone().with_nullable(true),
        };
        out.push(m);
    }
    for g in b.iter() {
        if a.find(g.name()).is_none() {
            out.push(g.as_ref().clone().with_nullable(true));
        }
    }
    Ok(Fields::from(out))
}

/// Set the exactness mark on every Int64 field of `logical` whose column in
/// `batch` holds a value beyond ±2^53 (the bulk decoder takes such values
/// without inferring them). Returns whether a mark was added.
fn mark_big_integers(logical: &mut Schema, batch: &RecordBatch) -> bool {
    fn walk(f: &Field, col: &ArrayRef, changed: &mut bool) -> Field {
        use arrow::array::AsArray;
        match f.data_type() {
            DataType::Int64 if !exact(f) => {
                let Some(a) = col.as_primitive_opt::<arrow::datatypes::Int64Type>() else {
                    return f.clone();
                };
                let lim = json::MAX_EXACT_INT as i64;
                let big = arrow::compute::min(a).is_some_and(|v| v < -lim)
                    || arrow::compute::max(a).is_some_and(|v| v > lim);
                *changed |= big;
                mark_exact(f.clone(), big)
            }
            DataType::Struct(fs) => {
                // An empty struct is stored as a string column (see `physical`).
                let Some(s) = col.as_struct_opt() else {
                    return f.clone();
                };
                let kids: Vec<Field> = fs
                    .iter()
                    .zip(s.columns())
                    .map(|(g, c)| walk(g, c, changed))
                    .collect();
                f.clone().with_data_type(DataType::Struct(kids.into()))
            }
            DataType::List(item) => {
                let Some(l) = col.as_list_opt::<i32>() else {
                    return f.clone();
                };
                let item = walk(item, l.values(), changed);
                f.clone().with_data_type(DataType::List(Arc::new(item)))
            }
            _ => f.clone(),
        }
    }
    let mut changed = false;
    let fields: Vec<Field> = logical
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| walk(f, c, &mut changed))
        .collect();
    if changed {
        *logical = Schema::new_with_metadata(fields, logical.metadata().clone());
    }
    changed
}

/// What the Parquet file can hold: types still unknown (only nulls seen)
/// become strings, which every reader accepts for an all-null column.
fn physical(t: &DataType) -> DataType {
    match t {
        DataType::Null => DataType::Utf8,
        DataType::List(f) => DataType::List(Arc::new(Field::new_list_field(
            physical(f.data_type()),
            true,
        ))),
        DataType::Struct(fs) if fs.is_empty() => DataType::Utf8,
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(physical_field).collect()),
        other => other.clone(),
    }
}

/// The decoder reads the text mark from the field, so it stays; the other
/// marks are the stored schema's business.
fn physical_field(f: &FieldRef) -> Field {
    let p = Field::new(f.name(), physical(f.data_type()), true);
    if text(f) {
        mark_text(p)
    } else {
        p
    }
}

fn physical_schema(logical: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        logical
            .fields()
            .iter()
            .map(physical_field)
            .collect::<Vec<_>>(),
    ))
}

fn as_struct(s: &Schema) -> DataType {
    DataType::Struct(s.fields().clone())
}

fn from_struct(t: DataType) -> Schema {
    match t {
        DataType::Struct(fs) => Schema::new(fs),
        _ => Schema::empty(),
    }
}

/// Decode the rows `idx` of `buf` against `schema`: our decoder, or
/// arrow-json for types it does not build. The error is a dead-letter reason.
fn decode_rows(schema: &SchemaRef, buf: &Buffer, idx: &[usize]) -> Result<RecordBatch, String> {
    match json::decode(schema, buf.rows_at(idx), idx.len(), buf.json_bytes()) {
        Ok(b) => Ok(b),
        Err(json::Fail::Mismatch(reason)) => Err(reason),
        Err(json::Fail::Unsupported) => {
            decode_arrow(schema, &join_rows(buf, idx), idx.len()).map_err(|e| e.to_string())
        }
    }
}

/// Decode newline-separated JSON rows against `schema` with arrow-json (strict).
fn decode_arrow(
    schema: &SchemaRef,
    data: &[u8],
    rows: usize,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut dec = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.max(1))
        .with_strict_mode(true)
        .build_decoder()?;
    let mut pos = 0;
    let mut batches = Vec::new();
    while pos < data.len() {
        let n = dec.decode(&data[pos..])?;
        pos += n;
        if n == 0 {
            // The batch is full: take it and keep going.
            match dec.flush()? {
                Some(b) => batches.push(b),
                None => break,
            }
        }
    }
    if let Some(b) = dec.flush()? {
        batches.push(b);
    }
    let b = arrow::compute::concat_batches(schema, &batches)?;
    if b.num_rows() != rows {
        return Err(arrow::error::ArrowError::JsonError(format!(
            "decoded {} rows, expected {rows}",
            b.num_rows()
        )));
    }
    Ok(b)
}

fn join_rows(buf: &Buffer, idx: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(idx.iter().map(|&i| buf.row(i).len() + 1).sum());
    for (n, &i) in idx.iter().enumerate() {
        if n > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(buf.row(i));
    }
    out
}

/// Encode one buffer. `known` is the table schema for this event type (if
/// any); the returned schema is what it should be afterwards.
pub fn encode(
    key: &FileKey,
    buf: &Buffer,
    known: Option<&Schema>,
    opts: &EncodeOptions,
    ingested_at_us: i64,
) -> Result<Encoded, EncodeError> {
    let rows = buf.rows();
    let mut dead: Vec<(usize, String)> = Vec::new();
    let mut logical = known.cloned().unwrap_or_else(Schema::empty);
    let mut changed = known.is_none();

    // 1. Fast path with the known schema (or one guessed from a sample).
    if known.is_none() {
        let mut t = DataType::Struct(Fields::empty());
        for i in 0..rows.min(SAMPLE_ROWS) {
            if let Ok(v) = serde_json::from_slice::<Value>(buf.row(i)) {
                if let Ok(m) = infer(&v, "").and_then(|vt| merge(&t, &vt, "")) {
                    t = m;
                }
            }
        }
        logical = from_struct(t);
    }
    if let Some(path) = &opts.event_type_path {
        changed |= type_as_text(&mut logical, path, known.is_none());
    }
    // Rows go out in event-time order, which makes row-group statistics
    // selective for time filters. Sorting the row indices before decoding
    // spares a copy of every column after it.
    let mut good = time_order(buf);
    let batch = match decode_rows(&physical_schema(&logical), buf, &good) {
        Ok(b) => b,
        Err(_) => {
            // 2. Slow path: widen the schema row by row, dead-letter conflicts.
            let mut t = as_struct(&logical);
            let order = std::mem::take(&mut good);
            for &i in &order {
                let v = match serde_json::from_slice::<Value>(buf.row(i)) {
                    Ok(v) => v,
                    Err(e) => {
                        dead.push((i, format!("invalid JSON: {e}")));
                        continue;
                    }
                };
                match infer(&v, "").and_then(|vt| merge(&t, &vt, "")) {
                    Ok(m) => {
                        if m != t {
                            changed = true;
                        }
                        t = m;
                        good.push(i);
                    }
                    Err(e) => dead.push((i, format!("type conflict: {e}"))),
                }
            }
            logical = from_struct(t);
            let schema = physical_schema(&logical);
            match decode_rows(&schema, buf, &good) {
                Ok(b) => b,
                Err(_) => {
                    // 3. Rows the decoder still refuses (e.g. empty objects, a
                    // field twice) go to dead letters.
                    let mut ok = Vec::with_capacity(good.len());
                    for &i in &good {
                        match decode_rows(&schema, buf, &[i]) {
                            Ok(_) => ok.push(i),
                            Err(e) => dead.push((i, format!("cannot encode: {e}"))),
                        }
                    }
                    good = ok;
                    decode_rows(&schema, buf, &good)
                        .map_err(|e| EncodeError::Arrow(arrow::error::ArrowError::JsonError(e)))?
                }
            }
        }
    };
    dead.sort_by_key(|d| d.0);
    if !good.is_empty() && mark_big_integers(&mut logical, &batch) {
        changed = true;
    }

    if good.is_empty() {
        return Ok(Encoded {
            parquet: None,
            rows: 0,
            dead,
            schema: logical,
            schema_changed: changed,
        });
    }
    let batch = with_meta(key, buf, &good, batch, ingested_at_us)?;
    let parquet = write_parquet(key, buf, &good, &batch, opts)?;
    Ok(Encoded {
        parquet: Some(parquet),
        rows: good.len(),
        dead,
        schema: logical,
        schema_changed: changed,
    })
}

fn with_meta(
    key: &FileKey,
    buf: &Buffer,
    good: &[usize],
    batch: RecordBatch,
    ingested_at_us: i64,
) -> Result<RecordBatch, EncodeError> {
    let n = good.len();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    let mut keys = BinaryBuilder::with_capacity(n, 0);
    for &i in good {
        match buf.key(i) {
            Some(k) => keys.append_value(k),
            None => keys.append_null(),
        }
    }
    if buf.parts.len() <= 1 {
        cols.push(Arc::new(StringArray::new_repeated(&*key.tp.topic, n)));
        cols.push(Arc::new(Int32Array::from(vec![key.tp.partition; n])));
    } else {
        // A file of several partitions (rows in event-time order, not by partition).
        let tp = |i: usize| buf.tp_of(i, &key.tp);
        cols.push(Arc::new(StringArray::from_iter_values(
            good.iter().map(|&i| &*tp(i).topic),
        )));
        cols.push(Arc::new(Int32Array::from_iter_values(
            good.iter().map(|&i| tp(i).partition),
        )));
    }
    cols.push(Arc::new(Int64Array::from_iter_values(
        good.iter().map(|&i| buf.meta[i].offset),
    )));
    cols.push(Arc::new(
        TimestampMicrosecondArray::from(
            good.iter()
                .map(|&i| buf.meta[i].timestamp_ms.map(|t| t.saturating_mul(1000)))
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    ));
    cols.push(Arc::new(keys.finish()));
    cols.push(Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            good.iter().map(|&i| buf.meta[i].event_time_us),
        )
        .with_timezone("UTC"),
    ));
    cols.push(Arc::new(
        TimestampMicrosecondArray::from(vec![ingested_at_us; n]).with_timezone("UTC"),
    ));
    fields.extend(meta_fields());
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The buffer's rows by event time; ties keep their offset order (a stable
/// sort). Producers are usually close to sorted, so check first.
fn time_order(buf: &Buffer) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..buf.rows()).collect();
    if !buf
        .meta
        .windows(2)
        .all(|w| w[0].event_time_us <= w[1].event_time_us)
    {
        idx.sort_by_key(|&i| buf.meta[i].event_time_us);
    }
    idx
}

/// parquet-rs's defaults, which lakewriter keeps: a data page closes at this
/// many rows or once its encoded values reach this size.
const PAGE_ROWS: usize = 20_000;
const PAGE_BYTES: usize = 1 << 20;

/// Page-level statistics (the page index) only where a column chunk can span
/// several pages. A file whose columns are one page each gets chunk statistics
/// alone: its page index would only repeat them, and building it cost 7% of
/// encoding at ~1,500 rows per file. Each column's Arrow memory bounds its
/// leaves' encoded page size from above.
fn statistics_level(batch: &RecordBatch) -> EnabledStatistics {
    let one_page = batch.num_rows() <= PAGE_ROWS
        && batch
            .columns()
            .iter()
            .all(|c| c.get_array_memory_size() < PAGE_BYTES);
    if one_page {
        EnabledStatistics::Chunk
    } else {
        EnabledStatistics::Page
    }
}

fn write_parquet(
    key: &FileKey,
    buf: &Buffer,
    good: &[usize],
    batch: &RecordBatch,
    opts: &EncodeOptions,
) -> Result<Bytes, EncodeError> {
    let compression = match opts.compression {
        Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l)?),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    let ranges = offset_ranges(key, buf, good);
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_statistics_enabled(statistics_level(batch))
        .set_max_row_group_row_count(Some(opts.row_group_rows));
    let props = with_leaf_choices(props, batch)
        .set_created_by(format!("lakewriter {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(match &ranges[..] {
            [(tp, first, last)] => vec![
                KeyValue::new("lakewriter.topic".into(), tp.topic.to_string()),
                KeyValue::new("lakewriter.partition".into(), tp.partition.to_string()),
                KeyValue::new("lakewriter.first_offset".into(), first.to_string()),
                KeyValue::new("lakewriter.last_offset".into(), last.to_string()),
            ],
            _ => vec![KeyValue::new(
                "lakewriter.ranges".into(),
                serde_json::Value::from(
                    ranges
                        .iter()
                        .map(|(tp, first, last)| {
                            serde_json::json!({"topic": &*tp.topic, "partition": tp.partition,
                                "first_offset": first, "last_offset": last})
                        })
                        .collect::<Vec<_>>(),
                )
                .to_string(),
            )],
        }))
        .build();
    let mut out = Vec::with_capacity(buf.json_bytes() / 8);
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(out))
}

/// Each partition's first and last offset among the rows written, by partition.
fn offset_ranges<'a>(key: &'a FileKey, buf: &'a Buffer, good: &[usize]) -> Vec<(&'a Tp, i64, i64)> {
    let span = |rows: &mut dyn Iterator<Item = usize>| {
        rows.map(|i| buf.meta[i].offset)
            .fold(None, |r: Option<(i64, i64)>, o| {
                Some(r.map_or((o, o), |(a, b)| (a.min(o), b.max(o))))
            })
    };
    if buf.parts.len() <= 1 {
        let (first, last) = span(&mut good.iter().copied()).unwrap_or((0, 0));
        return vec![(&key.tp, first, last)];
    }
    let mut written = vec![false; buf.rows()];
    for &i in good {
        written[i] = true;
    }
    let mut out: Vec<(&Tp, i64, i64)> = Vec::with_capacity(buf.parts.len());
    for (k, (tp, first)) in buf.parts.iter().enumerate() {
        let end = buf.parts.get(k + 1).map_or(buf.rows(), |p| p.1);
        if let Some((a, b)) = span(&mut (*first..end).filter(|&i| written[i])) {
            out.push((tp, a, b));
        }
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// Values sampled per column to decide whether a dictionary pays.
const DICT_SAMPLE: usize = 64;

/// At most this many distinct values in the sample: written uncompressed.
const SMALL_DICT: usize = 16;

/// How one leaf column is written, decided from an even sample of its values.
struct Leaf {
    path: ColumnPath,
    /// Mostly distinct values (ids, tokens, exact times): no dictionary. It
    /// would cost a hash and a compare per value plus a dictionary page as
    /// large as the data, and save nothing.
    plain: bool,
    /// For `plain` columns. Integers and times: DELTA_BINARY_PACKED (offsets,
    /// timestamps and ids that grow shrink to a few bits per value), and not
    /// zstd-compressed either: what delta encoding leaves is close to its
    /// entropy (zstd saved 1.6–2.0% of the clickstream's file size on these
    /// columns for 10% of `encode`'s CPU). Strings and binaries:
    /// DELTA_LENGTH_BYTE_ARRAY (the lengths delta-packed apart from the bytes),
    /// so zstd reads the values back to back instead of interleaved with
    /// 4-byte lengths: 3% smaller files, 10–15% less `encode` CPU.
    encoding: Option<Encoding>,
    /// A handful of distinct values (constants, flags, small enums), or none:
    /// the dictionary indices take a few bits per row, close to their entropy,
    /// so zstd gains almost nothing on them (files were 0.1% smaller without
    /// it) and would still cost a compression pass per chunk.
    uncompressed: bool,
}

/// Each leaf column's encoding and compression, chosen from a sample of
/// `batch`'s values; the compactor's merge writes its files the same way.
pub(crate) fn with_leaf_choices(
    mut props: WriterPropertiesBuilder,
    batch: &RecordBatch,
) -> WriterPropertiesBuilder {
    for col in leaf_choices(batch) {
        if col.plain {
            props = props.set_column_dictionary_enabled(col.path.clone(), false);
        }
        if let Some(e) = col.encoding {
            props = props.set_column_encoding(col.path.clone(), e);
        }
        if col.uncompressed {
            props = props.set_column_compression(col.path, PqCompression::UNCOMPRESSED);
        }
    }
    props
}

/// The leaf columns that are not written with the defaults (dictionary, zstd).
fn leaf_choices(batch: &RecordBatch) -> Vec<Leaf> {
    let mut out = Vec::new();
    for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
        collect_leaves(vec![f.name().clone()], col, &mut out);
    }
    out
}

fn collect_leaves(path: Vec<String>, col: &ArrayRef, out: &mut Vec<Leaf>) {
    use arrow::array::{Array, AsArray};
    let sample = match col.data_type() {
        DataType::Struct(fields) => {
            for (f, c) in fields.iter().zip(col.as_struct().columns()) {
                let mut p = path.clone();
                p.push(f.name().clone());
                collect_leaves(p, c, out);
            }
            return;
        }
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            sample_distinct(a.len(), |i| a.is_valid(i).then(|| a.value(i).as_bytes()))
        }
        DataType::Binary => {
            let a = col.as_binary::<i32>();
            sample_distinct(a.len(), |i| a.is_valid(i).then(|| a.value(i)))
        }
        DataType::Boolean => {
            let a = col.as_boolean();
            sample_distinct(a.len(), |i| {
                a.is_valid(i)
                    .then(|| if a.value(i) { &[1u8][..] } else { &[0u8][..] })
            })
        }
        dt if dt.is_primitive() => {
            let (Some(w), data) = (dt.primitive_width(), col.to_data()) else {
                return;
            };
            let Some(values) = data.buffers().first() else {
                return;
            };
            let bytes = values.as_slice();
            sample_distinct(col.len(), |i| {
                let at = (i + data.offset()) * w;
                (col.is_valid(i) && at + w <= bytes.len()).then(|| &bytes[at..at + w])
            })
        }
        _ => return,
    };
    let Some((distinct, non_null)) = sample else {
        return;
    };
    let plain = non_null >= 16 && distinct * 4 > non_null * 3;
    let uncompressed = non_null == 0 || (non_null >= 16 && distinct <= SMALL_DICT);
    if !plain && !uncompressed {
        return;
    }
    use DataType::*;
    let encoding = match col.data_type() {
        _ if !plain => None,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Timestamp(..)
        | Date32 | Date64 | Time32(_) | Time64(_) => Some(Encoding::DELTA_BINARY_PACKED),
        Utf8 | Binary => Some(Encoding::DELTA_LENGTH_BYTE_ARRAY),
        _ => None,
    };
    let delta = encoding == Some(Encoding::DELTA_BINARY_PACKED);
    out.push(Leaf {
        path: ColumnPath::new(path),
        plain,
        encoding,
        uncompressed: uncompressed || delta,
    });
}

/// (distinct, non-null) among an even sample of the values; `None` when empty.
fn sample_distinct<'a>(
    len: usize,
    value: impl Fn(usize) -> Option<&'a [u8]>,
) -> Option<(usize, usize)> {
    let n = len.min(DICT_SAMPLE);
    if n == 0 {
        return None;
    }
    // hashbrown's foldhash: SipHash made this sampling 0.4% of a 1M catch-up.
    let mut seen = hashbrown::HashSet::with_capacity(n);
    let mut non_null = 0;
    for k in 0..n {
        if let Some(v) = value(k * len / n) {
            non_null += 1;
            seen.insert(v);
        }
    }
    Some((seen.len(), non_null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Buffers;
    use crate::config::FlushPolicy;
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::time::{Duration, Instant};

    fn key() -> FileKey {
        FileKey {
            table: "t".into(),
            date: chrono::NaiveDate::from_ymd_opt(2024, 5, 18).unwrap(),
            event_type: "a".into(),
            tp: Tp {
                topic: "clicks".into(),
                partition: 3,
            },
        }
    }

    fn buffer(rows: &[&str]) -> Buffer {
        let mut b = Buffers::new(FlushPolicy {
            rows: 1 << 20,
            bytes: 1 << 30,
            interval: Duration::from_secs(60),
            max_buffer_bytes: 1 << 30,
        });
        let now = Instant::now();
        for (i, r) in rows.iter().enumerate() {
            b.push(
                key().dest(),
                r.as_bytes(),
                Some(b"k"),
                100 + i as i64,
                Some(1_716_000_000_000),
                1_716_000_000_000_000 - i as i64,
                now,
            )
            .unwrap();
        }
        b.take("test").files.remove(&key()).unwrap()
    }

    const OPTS: EncodeOptions = EncodeOptions {
        compression: Compression::Zstd(1),
        row_group_rows: 1024,
        event_type_path: None,
    };

    fn read(pq: &Bytes) -> RecordBatch {
        let r = ParquetRecordBatchReaderBuilder::try_new(pq.clone())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = r.map(|b| b.unwrap()).collect();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn nested_events_become_typed_struct_columns_with_metadata() {
        let buf = buffer(&[
            r#"{"p":{"id":1,"user":"u1"},"ts":{"ms":5}}"#,
            r#"{"p":{"id":2,"user":"u2","extra":true},"ts":{"ms":6}}"#,
        ]);
        let e = encode(&key(), &buf, None, &OPTS, 7).unwrap();
        assert!(e.dead.is_empty() && e.schema_changed && e.rows == 2);
        let b = read(e.parquet.as_ref().unwrap());
        let p = b.column_by_name("p").unwrap().as_struct();
        assert_eq!(
            p.column_by_name("id").unwrap().data_type(),
            &DataType::Int64
        );
        assert!(
            p.column_by_name("extra").unwrap().as_boolean().value(0),
            "sorted: the second event comes first"
        );
        assert_eq!(
            b.column_by_name("_partition")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            3
        );
        // Sorted by event time: the second row has the smaller time.
        let offs = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!((offs.value(0), offs.value(1)), (101, 100));
        assert_eq!(
            b.column_by_name("_event_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            b.column_by_name("_key")
                .unwrap()
                .as_binary::<i32>()
                .value(0),
            b"k"
        );
    }

    #[test]
    fn new_fields_widen_and_conflicts_are_dead_lettered() {
        let buf = buffer(&[r#"{"a":1,"s":"x"}"#]);
        let first = encode(&key(), &buf, None, &OPTS, 0).unwrap();
        let buf = buffer(&[
            r#"{"a":1.5,"s":"y","n":{"z":[1,2]}}"#,
            r#"{"a":2,"s":{"not":"a string"}}"#,
            r#"{"a":3,"s":null}"#,
        ]);
        let e = encode(&key(), &buf, Some(&first.schema), &OPTS, 0).unwrap();
        assert!(e.schema_changed);
        assert_eq!(e.rows, 2);
        assert_eq!(e.dead.len(), 1);
        assert_eq!(e.dead[0].0, 1);
        assert!(e.dead[0].1.contains("field s is Utf8"), "{}", e.dead[0].1);
        assert_eq!(
            e.schema.field_with_name("a").unwrap().data_type(),
            &DataType::Float64
        );
        let b = read(e.parquet.as_ref().unwrap());
        assert_eq!(b.num_rows(), 2);
        assert!(b.column_by_name("n").is_some());
        // Unchanged schema on a clean batch: fast path, not marked changed.
        let buf = buffer(&[r#"{"a":4.0,"s":"z"}"#]);
        let e2 = encode(&key(), &buf, Some(&e.schema), &OPTS, 0).unwrap();
        assert!(!e2.schema_changed && e2.dead.is_empty());
    }

    #[test]
    fn values_that_only_bend_a_known_column_widen_it_or_are_dead_lettered() {
        // No new field here, so only the values can send the buffer off the fast
        // path: arrow-json would have stored 1.5 as 1 and the string "12" as 12.
        let buf = buffer(&[r#"{"a":1,"s":"x"}"#]);
        let first = encode(&key(), &buf, None, &OPTS, 0).unwrap();
        let buf = buffer(&[
            r#"{"a":1.5,"s":"y"}"#,
            r#"{"a":"12","s":"q"}"#,
            r#"{"a":7,"a":8,"s":"twice"}"#,
            r#"{"a":2.25,"s":"frac"}"#,
        ]);
        let e = encode(&key(), &buf, Some(&first.schema), &OPTS, 0).unwrap();
        assert!(e.schema_changed);
        let field_a = e.schema.field_with_name("a").unwrap();
        assert_eq!(field_a.data_type(), &DataType::Float64);
        let reasons: Vec<_> = e.dead.iter().map(|(i, r)| (*i, r.as_str())).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0].0, 1);
        assert!(
            reasons[0].1.contains("but Utf8 in this event"),
            "{reasons:?}"
        );
        assert_eq!(reasons[1].0, 2);
        assert!(reasons[1].1.contains("\"a\" appears twice"), "{reasons:?}");
        let b = read(e.parquet.as_ref().unwrap());
        let a = b.column_by_name("a").unwrap();
        let a = a
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        // Rows come out sorted by event time, which the test buffer makes descending.
        assert_eq!(a.values().to_vec(), vec![2.25, 1.5]);
    }

    #[test]
    fn integers_beyond_2_pow_53_are_never_rounded() {
        // Snowflake-style ids with one fractional value among them, in the
        // middle of the buffer: the ids stay Int64 and exact, the fraction is
        // dead-lettered with the field's path.
        let ids: Vec<i64> = (0..9).map(|i| (1i64 << 60) + 7 * i + 1).collect();
        let mut rows: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"p":{{"big_id":{id}}}}}"#))
            .collect();
        rows.insert(4, r#"{"p":{"big_id":1.5}}"#.to_string());
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let e = encode(&key(), &buffer(&refs), None, &OPTS, 0).unwrap();
        assert_eq!(e.rows, 9);
        assert_eq!(e.dead.len(), 1, "{:?}", e.dead);
        assert_eq!(e.dead[0].0, 4);
        assert!(
            e.dead[0]
                .1
                .contains("field p.big_id holds integers beyond 2^53"),
            "{:?}",
            e.dead
        );
        let b = read(e.parquet.as_ref().unwrap());
        let p = b.column_by_name("p").unwrap().as_struct();
        let got = p
            .column_by_name("big_id")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        let mut want = ids.clone();
        want.reverse(); // event time falls as the buffer goes on
        assert_eq!(got, want);

        // The mark is kept in the schema: a later fraction alone is refused too,
        // on the fast path's mismatch, not widened.
        let e2 = encode(
            &key(),
            &buffer(&[r#"{"p":{"big_id":2.5}}"#, r#"{"p":{"big_id":3}}"#]),
            Some(&e.schema),
            &OPTS,
            0,
        )
        .unwrap();
        assert_eq!(e2.rows, 1);
        assert_eq!(e2.dead.len(), 1);
        let DataType::Struct(fs) = e2.schema.field_with_name("p").unwrap().data_type().clone()
        else {
            panic!("p is a struct")
        };
        assert_eq!(fs[0].data_type(), &DataType::Int64);
        assert!(exact(&fs[0]));
    }

    #[test]
    fn an_int_column_learns_of_big_values_on_the_fast_path_and_then_refuses_fractions() {
        let first = encode(&key(), &buffer(&[r#"{"n":1}"#]), None, &OPTS, 0).unwrap();
        assert!(!exact(first.schema.field_with_name("n").unwrap()));
        // Decoded in bulk against the known Int64 column: no inference runs.
        let e = encode(
            &key(),
            &buffer(&[r#"{"n":-9007199254740993}"#, r#"{"n":5}"#]),
            Some(&first.schema),
            &OPTS,
            0,
        )
        .unwrap();
        assert!(e.schema_changed && e.dead.is_empty());
        assert!(exact(e.schema.field_with_name("n").unwrap()));
        let e2 = encode(
            &key(),
            &buffer(&[r#"{"n":0.5}"#]),
            Some(&e.schema),
            &OPTS,
            0,
        )
        .unwrap();
        assert_eq!((e2.rows, e2.dead.len()), (0, 1));
        assert_eq!(
            e2.schema.field_with_name("n").unwrap().data_type(),
            &DataType::Int64
        );
        // The mark survives the schema's JSON form (schemas are stored in the lake).
        let back: Schema = serde_json::from_slice(&serde_json::to_vec(&e.schema).unwrap()).unwrap();
        assert!(exact(back.field_with_name("n").unwrap()));
    }

    /// The event-type column as text: what each row's column holds.
    fn event_types(e: &Encoded) -> Vec<String> {
        let b = read(e.parquet.as_ref().unwrap());
        let p = b.column_by_name("p").unwrap().as_struct();
        let t = p.column_by_name("t").unwrap().as_string::<i32>();
        // Rows go out in event-time order; compare them as a set.
        let mut v: Vec<String> = t.iter().map(|v| v.unwrap().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn the_event_type_column_holds_numbers_and_strings_as_their_literal_text() {
        let opts = EncodeOptions {
            event_type_path: Some(vec!["p".to_string(), "t".to_string()].into()),
            ..OPTS
        };
        // A number first: a new schema still types the column as text.
        let rows = [r#"{"p":{"t":5}}"#, r#"{"p":{"t":"5"}}"#, r#"{"p":{"t":5}}"#];
        let e = encode(&key(), &buffer(&rows), None, &opts, 0).unwrap();
        assert_eq!((e.rows, e.dead.len()), (3, 0), "{:?}", e.dead);
        assert_eq!(event_types(&e), ["5", "5", "5"]);
        let t = |s: &Schema| {
            let DataType::Struct(fs) = s.field_with_name("p").unwrap().data_type().clone() else {
                panic!("p is a struct")
            };
            fs.find("t").unwrap().1.clone()
        };
        assert!(text(&t(&e.schema)) && t(&e.schema).data_type() == &DataType::Utf8);
        // Against the stored schema: literals kept as written, booleans too; the
        // fast path takes them without widening anything.
        let rows = [
            r#"{"p":{"t":7.250}}"#,
            r#"{"p":{"t":-1e2}}"#,
            r#"{"p":{"t":true}}"#,
        ];
        let e2 = encode(&key(), &buffer(&rows), Some(&e.schema), &opts, 0).unwrap();
        assert_eq!(event_types(&e2), ["-1e2", "7.250", "true"]);
        assert!(!e2.schema_changed);
        // A row that needs the slow path (a new column) keeps the rule, and an
        // object where the type should be is a conflict naming the field.
        let rows = [
            r#"{"p":{"t":18446744073709551616,"n":1}}"#,
            r#"{"p":{"t":{"x":1}}}"#,
        ];
        let e3 = encode(&key(), &buffer(&rows), Some(&e.schema), &opts, 0).unwrap();
        assert_eq!(event_types(&e3), ["18446744073709551616"]);
        assert_eq!(e3.dead.len(), 1);
        assert!(
            e3.dead[0].1.contains("p.t holds the event type"),
            "{}",
            e3.dead[0].1
        );
        // A stored schema whose event-type column is numeric keeps its type.
        let legacy = encode(&key(), &buffer(&[r#"{"p":{"t":5}}"#]), None, &OPTS, 0).unwrap();
        let e4 = encode(
            &key(),
            &buffer(&[r#"{"p":{"t":6}}"#]),
            Some(&legacy.schema),
            &opts,
            0,
        )
        .unwrap();
        assert_eq!(t(&e4.schema).data_type(), &DataType::Int64);
        assert!(!e4.schema_changed);
    }

    #[test]
    fn a_float_column_refuses_integers_it_would_round_but_takes_small_ones() {
        let first = encode(&key(), &buffer(&[r#"{"x":12.5}"#]), None, &OPTS, 0).unwrap();
        let e = encode(
            &key(),
            &buffer(&[
                r#"{"x":1152921504606846983}"#,
                r#"{"x":9007199254740992}"#,
                r#"{"x":3}"#,
            ]),
            Some(&first.schema),
            &OPTS,
            0,
        )
        .unwrap();
        assert_eq!(e.dead.len(), 1, "{:?}", e.dead);
        assert_eq!(e.dead[0].0, 0);
        let b = read(e.parquet.as_ref().unwrap());
        let x = b
            .column_by_name("x")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(x.values().to_vec(), vec![3.0, 9007199254740992.0]);
    }

    #[test]
    fn unsigned_values_above_i64_max_are_uint64_and_exact() {
        let e = encode(
            &key(),
            &buffer(&[
                r#"{"u":18446744073709551615}"#,
                r#"{"u":7}"#,
                r#"{"u":-1}"#,
                r#"{"u":0.5}"#,
            ]),
            None,
            &OPTS,
            0,
        )
        .unwrap();
        assert_eq!(
            e.schema.field_with_name("u").unwrap().data_type(),
            &DataType::UInt64
        );
        assert_eq!(e.rows, 2, "{:?}", e.dead);
        let b = read(e.parquet.as_ref().unwrap());
        let u = b
            .column_by_name("u")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>();
        assert_eq!(u.values().to_vec(), vec![7, u64::MAX]);
    }

    #[test]
    fn rows_are_written_in_event_time_order_with_the_offset_range_in_the_footer() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        // The test buffer's event times fall as its offsets (100..105) rise.
        let rows: Vec<String> = (0..5).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let e = encode(&key(), &buffer(&refs), None, &OPTS, 0).unwrap();
        let pq = e.parquet.unwrap();
        let b = read(&pq);
        let col = |name: &str| {
            b.column_by_name(name)
                .unwrap()
                .to_data()
                .buffers()
                .first()
                .unwrap()
                .typed_data::<i64>()
                .to_vec()
        };
        assert_eq!(col("i"), vec![4, 3, 2, 1, 0]);
        assert_eq!(col("_offset"), vec![104, 103, 102, 101, 100]);
        let t = col("_event_time");
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
        let r = SerializedFileReader::new(pq).unwrap();
        let kv: Vec<(String, String)> = r
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        assert!(kv.contains(&("lakewriter.first_offset".into(), "100".into())));
        assert!(kv.contains(&("lakewriter.last_offset".into(), "104".into())));
    }

    #[test]
    fn all_null_and_empty_object_fields() {
        let buf = buffer(&[r#"{"a":null,"b":1}"#, r#"{"a":null,"b":2,"c":{}}"#]);
        let e = encode(&key(), &buf, None, &OPTS, 0).unwrap();
        // The empty object cannot be a Parquet struct: that row is dead-lettered, the other kept.
        assert_eq!(e.rows, 1, "{:?}", e.dead);
        assert_eq!(e.dead.len(), 1);
        let b = read(e.parquet.as_ref().unwrap());
        assert_eq!(b.column_by_name("a").unwrap().null_count(), 1);
    }

    #[test]
    fn dictionaries_only_where_values_repeat() {
        use arrow::array::StructArray;
        let n = 1000;
        let ids: Vec<String> = (0..n).map(|i| format!("id-{i}")).collect();
        let countries: Vec<&str> = (0..n).map(|i| ["SE", "NO", "FI"][i % 3]).collect();
        let inner = StructArray::from(vec![
            (
                Arc::new(Field::new("user_id", DataType::Utf8, true)),
                Arc::new(StringArray::from(ids.clone())) as ArrayRef,
            ),
            (
                Arc::new(Field::new("country", DataType::Utf8, true)),
                Arc::new(StringArray::from(countries)) as ArrayRef,
            ),
        ]);
        let batch = RecordBatch::try_from_iter(vec![
            ("p", Arc::new(inner) as ArrayRef),
            (
                "_offset",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
            (
                "_partition",
                Arc::new(Int32Array::from(vec![3; n])) as ArrayRef,
            ),
        ])
        .unwrap();
        // (path, plain, encoding, uncompressed) of the columns off the defaults.
        let chosen: Vec<(String, bool, Option<Encoding>, bool)> = leaf_choices(&batch)
            .iter()
            .map(|c| (c.path.string(), c.plain, c.encoding, c.uncompressed))
            .collect();
        let dlba = Some(Encoding::DELTA_LENGTH_BYTE_ARRAY);
        let dbp = Some(Encoding::DELTA_BINARY_PACKED);
        assert_eq!(
            chosen,
            vec![
                ("p.user_id".into(), true, dlba, false),
                ("p.country".into(), false, None, true),
                ("_offset".into(), true, dbp, true),
                ("_partition".into(), false, None, true),
            ]
        );
    }

    #[test]
    fn written_files_use_dictionaries_plain_and_delta_encodings_as_sampled() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let rows: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    r#"{{"user":"id-{i}","c":"{}","n":{}}}"#,
                    ["SE", "NO"][i % 2],
                    i * 7
                )
            })
            .collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let e = encode(&key(), &buffer(&refs), None, &OPTS, 1).unwrap();
        let pq = e.parquet.unwrap();
        let r = SerializedFileReader::new(pq.clone()).unwrap();
        let rg = r.metadata().row_group(0);
        let enc = |name: &str| {
            let c = (0..rg.num_columns())
                .map(|i| rg.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap();
            c.encodings().collect::<Vec<_>>()
        };
        assert!(enc("_offset").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(enc("n").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(enc("_event_time").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(enc("user").contains(&Encoding::DELTA_LENGTH_BYTE_ARRAY));
        assert!(enc("c").contains(&Encoding::RLE_DICTIONARY));
        assert!(enc("_partition").contains(&Encoding::RLE_DICTIONARY));
        // Constant and two-valued columns skip zstd.
        let codec = |name: &str| {
            (0..rg.num_columns())
                .map(|i| rg.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap()
                .compression()
        };
        // Delta-encoded integers and times skip it too; strings with many values use it.
        for name in [
            "c",
            "_partition",
            "_topic",
            "_ingested_at",
            "n",
            "_offset",
            "_event_time",
        ] {
            assert_eq!(codec(name), PqCompression::UNCOMPRESSED, "{name}");
        }
        assert!(matches!(codec("user"), PqCompression::ZSTD(_)));
        // And they read back as written.
        let b = read(&pq);
        let n = b
            .column_by_name("n")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            n.values().iter().sum::<i64>(),
            (0..200).map(|i| i * 7).sum::<i64>()
        );
        let off = b
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(off.value(0) + off.value(199), 100 + 299);
        let mut users: Vec<&str> = b
            .column_by_name("user")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|u| u.unwrap())
            .collect();
        users.sort_unstable();
        let mut want: Vec<String> = (0..200).map(|i| format!("id-{i}")).collect();
        want.sort_unstable();
        assert_eq!(users, want);
    }

    /// zstd contexts are pooled per thread (vendor/zstd-safe): one left behind by a
    /// level-19 file and a read must compress exactly like a fresh one.
    #[test]
    fn reused_zstd_contexts_write_the_same_bytes_as_fresh_ones() {
        let rows: Vec<String> = (0..300)
            .map(|i| format!(r#"{{"user":"user-{:08x}","n":{i}}}"#, i * 2_654_435_761u64))
            .collect();
        let encode_at = |level: i32| {
            let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
            let opts = EncodeOptions {
                compression: Compression::Zstd(level),
                ..OPTS
            };
            encode(&key(), &buffer(&refs), None, &opts, 1)
                .unwrap()
                .parquet
                .unwrap()
        };
        // A new thread starts with an empty pool.
        let fresh = std::thread::scope(|s| s.spawn(|| encode_at(1)).join().unwrap());
        let reused = std::thread::scope(|s| {
            s.spawn(|| {
                let strong = encode_at(19);
                assert_eq!(read(&strong).num_rows(), 300);
                encode_at(1)
            })
            .join()
            .unwrap()
        });
        assert_eq!(fresh, reused);
        assert_eq!(read(&reused).num_rows(), 300);
    }

    /// One page per column: chunk statistics, no page index; more: both.
    #[test]
    fn page_index_only_where_columns_span_several_pages() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let stats = |rows: usize| {
            let rows: Vec<String> = (0..rows)
                .map(|i| format!(r#"{{"user":"u{i}","n":{}}}"#, i % 1000))
                .collect();
            let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
            let opts = EncodeOptions {
                row_group_rows: 1 << 20,
                ..OPTS
            };
            let pq = encode(&key(), &buffer(&refs), None, &opts, 1)
                .unwrap()
                .parquet
                .unwrap();
            let r = SerializedFileReader::new(pq).unwrap();
            let rg = r.metadata().row_group(0);
            let user = (0..rg.num_columns())
                .map(|i| rg.column(i))
                .find(|c| c.column_path().string() == "user")
                .unwrap();
            let s = user.statistics().expect("chunk statistics");
            assert_eq!(s.min_bytes_opt(), Some(&b"u0"[..]));
            user.column_index_offset().is_some()
        };
        assert!(!stats(2_000), "one page per column: no page index");
        assert!(stats(PAGE_ROWS + 1), "two pages: a page index");
    }
}
