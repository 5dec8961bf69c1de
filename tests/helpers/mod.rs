//! Shared helpers of the integration tests: they talk to the real broker
//! and S3 server started by `scripts/stack.sh up` (see `.stack/env`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use lakewriter::config::{Config, FlushPolicy, LakeUrl};
use lakewriter::deadletter::{self, DeadLetter};
use lakewriter::upload::Lake;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test.sh (or `scripts/stack.sh up && source .stack/env`)"))
}

pub fn brokers() -> String {
    env("LAKEWRITER_TEST_BROKERS")
}

pub fn bucket() -> String {
    env("LAKEWRITER_TEST_BUCKET")
}

/// A short name no other test (or earlier run) uses. Short, because s3s-fs
/// keeps per-object metadata in a file named after the base64 of the whole
/// key, which caps keys at ~150 bytes there (real S3 allows 1024).
pub fn unique(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 0x1000_0000;
    format!("{base}{}{t:x}", N.fetch_add(1, Ordering::Relaxed))
}

/// A pipeline config for the clickstream on the local stack, lake in its own prefix.
pub fn config(topic: &str, prefix: &str) -> Config {
    Config {
        brokers: brokers(),
        topics: vec![topic.to_string()],
        group: format!("{topic}-group"),
        lake: LakeUrl::S3 {
            bucket: bucket(),
            prefix: prefix.to_string(),
        },
        route: lakewriter::demo::clickstream_route(),
        flush: FlushPolicy {
            rows: 1_000_000,
            bytes: 128 << 20,
            interval: Duration::from_secs(30),
            max_buffer_bytes: 256 << 20,
        },
        s3_path_style: true,
        until_caught_up: true,
        kafka_opts: vec![("session.timeout.ms".into(), "6000".into())],
        ..Config::default()
    }
}

pub async fn lake(prefix: &str) -> Lake {
    Lake::connect(
        &LakeUrl::S3 {
            bucket: bucket(),
            prefix: prefix.to_string(),
        },
        true,
    )
    .await
}

/// One row read back from the lake.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub date: String,
    pub event_type_dir: String,
    pub partition: i32,
    pub offset: i64,
    pub event_time_us: i64,
    pub event_type_field: Option<String>,
}

pub fn read_parquet(bytes: bytes::Bytes) -> RecordBatch {
    let r = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = r.map(|b| b.expect("batch")).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

/// Every row of every Parquet file of `table` in the lake.
pub async fn read_rows(
    lake: &Lake,
    table: &str,
    type_pointer_in_struct: Option<(&str, &str)>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for key in lake.list(&format!("{table}/")).await.expect("list") {
        assert!(
            key.ends_with(".parquet"),
            "only Parquet files under the table: {key}"
        );
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 4, "table/date=/event_type=/file: {key}");
        let date = parts[1].strip_prefix("date=").expect("date=").to_string();
        let et = parts[2]
            .strip_prefix("event_type=")
            .expect("event_type=")
            .to_string();
        let b = read_parquet(lake.get(&key).await.expect("get").expect("exists"));
        let p = b
            .column_by_name("_partition")
            .expect("_partition")
            .as_primitive::<Int32Type>()
            .clone();
        let o = b
            .column_by_name("_offset")
            .expect("_offset")
            .as_primitive::<Int64Type>()
            .clone();
        let t = b
            .column_by_name("_event_time")
            .expect("_event_time")
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let types = type_pointer_in_struct.map(|(s, f)| {
            let st = b.column_by_name(s).expect("struct col").as_struct().clone();
            st.column_by_name(f)
                .expect("field")
                .as_string::<i32>()
                .clone()
        });
        for i in 0..b.num_rows() {
            rows.push(Row {
                key: key.clone(),
                date: date.clone(),
                event_type_dir: et.clone(),
                partition: p.value(i),
                offset: o.value(i),
                event_time_us: t.value(i),
                event_type_field: types.as_ref().map(|a| a.value(i).to_string()),
            });
        }
    }
    rows
}

pub async fn read_dead_letters(lake: &Lake, table: &str) -> Vec<DeadLetter> {
    let mut out = Vec::new();
    for key in lake
        .list(&format!("_lakewriter/dead_letters/{table}/"))
        .await
        .expect("list")
    {
        let body = lake.get(&key).await.expect("get").expect("exists");
        out.extend(deadletter::from_ndjson(&body).expect("ndjson"));
    }
    out
}

fn admin_consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// Committed offset per partition for `group` (-1 when none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c = admin_consumer(group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(15))
        .expect("committed");
    (0..partitions)
        .map(|p| {
            let o = match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            (p, o)
        })
        .collect()
}

/// Recovery records of `group` for `topic` whose cycle is not committed (each
/// partition's newest committed record stays in the lake as its checkpoint).
pub async fn pending_records(
    lake: &Lake,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<String> {
    let committed = committed(group, topic, partitions);
    let mut out = Vec::new();
    for key in lake.list("_lakewriter/recovery/").await.expect("list") {
        let body = lake.get(&key).await.expect("get").expect("exists");
        let rec: lakewriter::commit::RecoveryRecord =
            serde_json::from_slice(&body).expect("record");
        if rec.group == group
            && rec.topic == topic
            && rec.end > committed.get(&rec.partition).copied().unwrap_or(-1)
        {
            out.push(key);
        }
    }
    out
}

/// High watermark per partition.
pub fn end_offsets(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c = admin_consumer("lakewriter-test-watermarks");
    (0..partitions)
        .map(|p| {
            (
                p,
                c.fetch_watermarks(topic, p, Duration::from_secs(15))
                    .expect("watermarks")
                    .1,
            )
        })
        .collect()
}

/// Produce raw messages (payload, optional key) round-robin over partitions.
pub async fn produce_raw(topic: &str, partitions: i32, messages: Vec<Vec<u8>>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    lakewriter::produce::ensure_topic(&brokers(), &[], topic, partitions)
        .await
        .expect("topic");
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    for (i, m) in messages.iter().enumerate() {
        let rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
            .payload(m.as_slice())
            .partition(i as i32 % partitions);
        p.send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// Run the pipeline until caught up (logs go to the test's captured output).
pub async fn run_until_caught_up(cfg: Config) -> lakewriter::Summary {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,librdkafka=warn"))
        .with_test_writer()
        .try_init();
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(lakewriter::run(cfg, token.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut run = run;
    match tokio::time::timeout_at(deadline, &mut run).await {
        Ok(r) => r.expect("pipeline task").expect("pipeline ok"),
        Err(_) => {
            // Stop it (so it leaves the group) before failing.
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
            panic!("pipeline did not catch up within 240 s");
        }
    }
}

/// Produce (payload, Kafka timestamp ms) pairs round-robin over partitions.
pub async fn produce_with_timestamps(topic: &str, partitions: i32, messages: Vec<(Vec<u8>, i64)>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    lakewriter::produce::ensure_topic(&brokers(), &[], topic, partitions)
        .await
        .expect("topic");
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let futs: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, (m, ts))| {
            let rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
                .payload(m.as_slice())
                .partition(i as i32 % partitions)
                .timestamp(*ts);
            p.send(rec, Duration::from_secs(30))
        })
        .collect();
    for f in futs {
        f.await.map_err(|(e, _)| e).expect("delivered");
    }
}

/// Poll `f` until it returns true or `secs` pass.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lakewriter")
}

/// Read `n` messages from the start of `topic`'s partitions (payloads).
pub async fn consume_all(topic: &str, partitions: i32, n: usize) -> Vec<Vec<u8>> {
    use rdkafka::message::Message;
    let c = admin_consumer("lakewriter-test-reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} messages in {topic}",
            out.len()
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// `lakewriter run --mode backfill` over the whole of `topic` into `prefix`
/// (the group derived from these arguments, as an operator would run it).
pub fn backfill_command(topic: &str, prefix: &str, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.args(["run", "--mode", "backfill", "--admin-addr", "off"])
        .args(["--brokers", &brokers(), "--topics", topic])
        .args(lake_args(prefix))
        .args(extra)
        .stdout(std::process::Stdio::null());
    c
}

/// `lakewriter compact` of `prefix` with no minimum age (unless `extra` sets
/// one), a 1 s grace and a 3 s lease; stdout and stderr piped.
pub fn compact_cmd(prefix: &str, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.args(["compact", "--admin-addr", "off", "--s3-path-style"])
        .arg("--lake")
        .arg(format!("s3://{}/{prefix}", bucket()));
    if !extra.contains(&"--min-age") {
        c.args(["--min-age", "0s"]);
    }
    c.args(["--grace", "1s", "--lease", "3s"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// A writer's lake flags for `prefix` on the test S3 server, with the
/// clickstream's event type and time pointers.
pub fn lake_args(prefix: &str) -> Vec<String> {
    [
        "--lake",
        &format!("s3://{}/{prefix}", bucket()),
        "--s3-path-style",
        "--event-type-pointer",
        "/event_params/event_type",
        "--event-time-pointer",
        "/event_timestamp_ms/ts_ms",
    ]
    .map(String::from)
    .to_vec()
}
