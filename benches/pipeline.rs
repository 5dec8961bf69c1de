//! In-memory benchmark of the writer's hot path: no broker, no S3 (figures and
//! how to compare two builds in BENCHMARKS.md).
//!
//! 200,000 generated clickstream events (a music app's, ~320 bytes
//! each), spread over 8 Kafka partitions as `lakewriter produce` does, go
//! through the same library calls as the stream loop:
//!
//! - `route`: `route::route` alone (scan for event type + time);
//! - `buffer`: route + `Buffers::push` + `take` (the consumer thread's share);
//! - `decode`: lakewriter's JSON → Arrow decoder (`encode::json`) alone, on
//!   the same rows grouped per event type, against the known schema;
//! - `decode_arrow_json`: arrow-json's decoder on the same rows (what
//!   `encode` used before, and still uses for types ours does not build);
//! - `encode`: `encode::encode` (decode + metadata columns + sort + Parquet
//!   zstd(1)) of the already-buffered files;
//! - `pipeline`: route + `Buffers::push` + `take` + `encode` of every file, one
//!   core: the in-memory end-to-end figure (target ≥ 500,000 events/s, i.e.
//!   ≤ 2 µs per event).
//!
//! Schemas are warmed first, as in a running writer that has seen the types
//! before (the first flush of a new type also samples 1,000 rows to infer it).
//! Criterion reports `thrpt` in elements (events) per second, single-threaded.
//!
//! Run: `cargo bench --bench pipeline` (about a minute). `BENCH_EVENTS=N`
//! changes the number of events, `BENCH_ZSTD=N` the zstd level.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::Schema;
use arrow::json::ReaderBuilder;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lakewriter::buffer::{Buffer, Buffers, Dest, FileKey};
use lakewriter::config::{Compression, FlushPolicy};
use lakewriter::demo::clickstream_route;
use lakewriter::encode::{encode, json, EncodeOptions};
use lakewriter::offsets::Tp;
use lakewriter::produce::Generator;
use lakewriter::route::{route, RouteConfig};

const PARTITIONS: i32 = 8;
/// 2024-05-18T00:00:00Z; events span two days like `lakewriter produce`.
const START_MS: i64 = 1_716_000_000_000;
/// The writer's defaults; `BENCH_ZSTD=N` tries another zstd level.
fn opts() -> EncodeOptions {
    static LEVEL: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    let level = *LEVEL.get_or_init(|| {
        std::env::var("BENCH_ZSTD")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    });
    EncodeOptions {
        compression: Compression::Zstd(level),
        row_group_rows: 262_144,
        event_type_path: Some(vec!["event_params".to_string(), "event_type".to_string()].into()),
    }
}

struct Msg {
    payload: Vec<u8>,
    key: Vec<u8>,
    partition: i32,
    offset: i64,
    ts_ms: i64,
}

fn events() -> usize {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn generate(n: usize) -> Vec<Msg> {
    let mut g = Generator::new(42, n as u64, START_MS, 2, 0.0);
    let mut offsets = [0i64; PARTITIONS as usize];
    (0..n)
        .map(|i| {
            let m = g.next_message();
            let partition = (i % PARTITIONS as usize) as i32;
            let offset = offsets[partition as usize];
            offsets[partition as usize] += 1;
            Msg {
                payload: m.payload.expect("no malformed ratio"),
                key: m.key.into_bytes(),
                partition,
                offset,
                ts_ms: START_MS + i as i64,
            }
        })
        .collect()
}

/// Default limits (1M rows / 128 MiB per file, 128 MiB in total), as `run`;
/// the bench takes all its events as one cycle whatever they add up to.
fn policy() -> FlushPolicy {
    FlushPolicy {
        rows: 1_000_000,
        bytes: 128 << 20,
        interval: Duration::from_secs(60),
        max_buffer_bytes: 128 << 20,
    }
}

/// Route and buffer every message; the files of one flush cycle.
fn buffer_all(
    cfg: &RouteConfig,
    msgs: &[Msg],
    topic: &Arc<str>,
    table: &Arc<str>,
) -> BTreeMap<FileKey, Buffer> {
    let mut bufs = Buffers::new(policy());
    let now = Instant::now();
    for m in msgs {
        let r = route(cfg, &m.payload, Some(m.ts_ms)).expect("generated events route");
        let tp = Tp {
            topic: topic.clone(),
            partition: m.partition,
        };
        let dest = Dest {
            table,
            date: r.date,
            event_type: &r.event_type,
            tp: &tp,
        };
        bufs.push(
            dest,
            &m.payload,
            Some(&m.key),
            m.offset,
            Some(m.ts_ms),
            r.event_time_us,
            now,
        )
        .expect("no event-type limit in the bench");
    }
    bufs.take("bench").files
}

/// Encode every file with the schema known per event type; returns bytes out.
fn encode_all(files: &BTreeMap<FileKey, Buffer>, schemas: &mut HashMap<String, Schema>) -> usize {
    let mut out = 0;
    for (k, b) in files {
        let e = encode(
            k,
            b,
            schemas.get(&k.event_type),
            &opts(),
            1_716_200_000_000_000,
        )
        .expect("encode");
        assert_eq!(e.rows, b.rows());
        out += e.parquet.map_or(0, |p| p.len());
        if e.schema_changed || !schemas.contains_key(&k.event_type) {
            schemas.insert(k.event_type.clone(), e.schema);
        }
    }
    out
}

/// arrow-json decode of newline-separated rows, as `encode` does in bulk.
fn decode_rows(schema: &Arc<Schema>, data: &[u8], rows: usize) -> usize {
    let mut dec = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.max(1))
        .with_strict_mode(true)
        .build_decoder()
        .expect("decoder");
    let mut pos = 0;
    let mut decoded = 0;
    while pos < data.len() {
        let n = dec.decode(&data[pos..]).expect("decode");
        pos += n;
        if n == 0 {
            decoded += dec.flush().expect("flush").map_or(0, |b| b.num_rows());
        }
    }
    decoded += dec.flush().expect("flush").map_or(0, |b| b.num_rows());
    decoded
}

fn benches(c: &mut Criterion) {
    let n = events();
    let msgs = generate(n);
    let json_bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    let cfg = clickstream_route();
    let topic: Arc<str> = "clickstream".into();
    let table: Arc<str> = "clickstream".into();

    // Warm the schemas (a running writer knows them after its first flush).
    let files = buffer_all(&cfg, &msgs, &topic, &table);
    let mut schemas = HashMap::new();
    let parquet_bytes = encode_all(&files, &mut schemas);
    // The same rows grouped per event type, for the decoders alone.
    let mut per_type: BTreeMap<String, (Vec<u8>, usize)> = BTreeMap::new();
    for (k, b) in &files {
        let e = per_type.entry(k.event_type.clone()).or_default();
        for i in 0..b.rows() {
            if !e.0.is_empty() {
                e.0.push(b'\n');
            }
            e.0.extend_from_slice(b.row(i));
        }
        e.1 += b.rows();
    }
    let typed: Vec<(Arc<Schema>, Vec<u8>, usize)> = per_type
        .into_iter()
        .map(|(t, (data, rows))| (Arc::new(schemas[&t].clone()), data, rows))
        .collect();
    eprintln!(
        "bench input: {n} events, {json_bytes} JSON bytes ({:.0} B/event), {} files ({} event types × dates × {PARTITIONS} partitions), \
         {parquet_bytes} Parquet bytes ({:.1}× smaller)",
        json_bytes as f64 / n as f64,
        files.len(),
        schemas.len(),
        json_bytes as f64 / parquet_bytes.max(1) as f64
    );

    let mut g = c.benchmark_group("clickstream");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("route", |b| {
        b.iter(|| {
            let mut days = 0i64;
            for m in &msgs {
                let r = route(&cfg, &m.payload, Some(m.ts_ms)).expect("route");
                days += r.event_time_us >> 40;
            }
            black_box(days)
        })
    });

    g.bench_function("buffer", |b| {
        b.iter(|| black_box(buffer_all(&cfg, &msgs, &topic, &table).len()))
    });

    let typed_rows: Vec<(Arc<Schema>, Vec<&[u8]>)> = typed
        .iter()
        .map(|(s, data, _)| (s.clone(), data.split(|&c| c == b'\n').collect()))
        .collect();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let rows: usize = typed_rows
                .iter()
                .map(|(s, rows)| {
                    json::decode(s, rows.iter().copied(), rows.len(), usize::MAX)
                        .expect("decode")
                        .num_rows()
                })
                .sum();
            assert_eq!(rows, n);
            rows
        })
    });

    g.bench_function("decode_arrow_json", |b| {
        b.iter(|| {
            let rows: usize = typed
                .iter()
                .map(|(s, data, rows)| decode_rows(s, data, *rows))
                .sum();
            assert_eq!(rows, n);
            rows
        })
    });

    g.bench_function("encode", |b| {
        let mut schemas = schemas.clone();
        b.iter(|| black_box(encode_all(&files, &mut schemas)))
    });

    g.bench_function("pipeline", |b| {
        b.iter_batched(
            || schemas.clone(),
            |mut schemas| {
                let files = buffer_all(&cfg, &msgs, &topic, &table);
                black_box(encode_all(&files, &mut schemas))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
