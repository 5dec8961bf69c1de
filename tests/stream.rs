//! Stream mode end to end on the real broker (tansu) and S3 server (s3s-fs).

mod helpers;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;

use helpers::*;
use lakewriter::produce::{self, ProduceOptions};

const START_MS: i64 = 1_716_000_000_000; // 2024-05-18T02:40:00Z

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickstream_lands_exactly_once_and_restarts_resume_exactly() {
    let topic = unique("clicks");
    let prefix = unique("stream");
    let opts = ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 100_000,
        partitions: 4,
        malformed_ratio: 0.01,
        seed: 1,
        start_ms: Some(START_MS),
        days: 3,
        ..ProduceOptions::default()
    };
    let tally = produce::produce(&opts).await.expect("produce");
    assert!(
        tally.malformed > 500,
        "about 1% malformed: {}",
        tally.malformed
    );

    let s = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!(s.events_in, 100_000);
    assert_eq!(s.rows_written, tally.good);
    assert_eq!(s.dead_letters, tally.malformed);

    let lake = lake(&prefix).await;
    let rows = read_rows(&lake, &topic, Some(("event_params", "event_type"))).await;
    assert_eq!(
        rows.len() as u64,
        tally.good,
        "every good event exactly once"
    );
    let mut seen = HashSet::new();
    let mut per_dir: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        assert!(
            seen.insert((r.partition, r.offset)),
            "duplicate {}/{}",
            r.partition,
            r.offset
        );
        let date = chrono::DateTime::from_timestamp_micros(r.event_time_us)
            .unwrap()
            .date_naive()
            .to_string();
        assert_eq!(
            r.date, date,
            "row in the date its event time demands ({})",
            r.key
        );
        assert_eq!(
            r.event_type_field.as_deref(),
            Some(r.event_type_dir.as_str()),
            "row in its type's directory"
        );
        *per_dir
            .entry(format!("{}|{}", r.date, r.event_type_dir))
            .or_default() += 1;
    }
    assert_eq!(
        per_dir, tally.by_partition,
        "per (date, type) counts equal the producer's tally"
    );

    // Dead letters: exactly the malformed ones, each with a reason, none of them also a row.
    let dead = read_dead_letters(&lake, &topic).await;
    assert_eq!(dead.len() as u64, tally.malformed);
    for d in &dead {
        assert!(!d.reason.is_empty());
        assert!(
            !seen.contains(&(d.partition, d.offset)),
            "dead letter {}/{} is also a row",
            d.partition,
            d.offset
        );
    }
    let reasons: HashSet<&str> = dead
        .iter()
        .map(|d| d.reason.split(':').next().unwrap_or(""))
        .collect();
    assert!(
        reasons.len() >= 5,
        "the broken kinds get distinct reasons: {reasons:?}"
    );
    assert_eq!(
        seen.len() + dead.len(),
        100_000,
        "every offset accounted for"
    );

    // Committed offsets equal the end offsets.
    let ends = end_offsets(&topic, 4);
    assert_eq!(committed(&format!("{topic}-group"), &topic, 4), ends);
    let pending = pending_records(&lake, &format!("{topic}-group"), &topic, 4).await;
    assert!(
        pending.is_empty(),
        "no uncommitted recovery record left: {pending:?}"
    );

    // A restart on a caught-up group writes nothing.
    let files_before = lake.list(&format!("{topic}/")).await.unwrap();
    let s2 = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!((s2.events_in, s2.rows_written, s2.files), (0, 0, 0));
    assert_eq!(lake.list(&format!("{topic}/")).await.unwrap(), files_before);

    // Produce more, restart: continues exactly where it stopped.
    let more = produce::produce(&ProduceOptions {
        events: 10_000,
        seed: 2,
        malformed_ratio: 0.0,
        ..opts.clone()
    })
    .await
    .unwrap();
    let s3 = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!(s3.events_in, 10_000);
    let rows = read_rows(&lake, &topic, None).await;
    assert_eq!(rows.len() as u64, tally.good + more.good);
    let uniq: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(uniq.len(), rows.len(), "no duplicates after the restart");
    assert_eq!(
        committed(&format!("{topic}-group"), &topic, 4),
        end_offsets(&topic, 4)
    );
}

fn event(ty: &serde_json::Value, ts_ms: i64) -> Vec<u8> {
    serde_json::json!({"event_params": {"event_type": ty, "user_id": "u"}, "event_timestamp_ms": {"ts_ms": ts_ms}})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_types_stay_inside_their_table() {
    let topic = unique("hostile");
    let prefix = unique("hostile");
    let hostile = [
        "../x",
        "a/b",
        "%2F",
        "=",
        "",
        "..",
        "\u{1}\n\t",
        "ünïcødé ✓",
        "x?y#z*",
        &"L".repeat(10_240),
    ];
    let msgs: Vec<Vec<u8>> = hostile
        .iter()
        .map(|t| event(&serde_json::json!(t), START_MS))
        .collect();
    produce_raw(&topic, 2, msgs).await;
    let s = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!(s.rows_written + s.dead_letters, hostile.len() as u64);
    assert_eq!(s.dead_letters, 1, "only the 10 KB type is refused");

    let lake = lake(&prefix).await;
    // Nothing outside the table and the internal prefix.
    for key in lake.list("").await.unwrap() {
        assert!(
            key.starts_with(&format!("{topic}/")) || key.starts_with("_lakewriter/"),
            "escaped its table: {key}"
        );
    }
    let rows = read_rows(&lake, &topic, Some(("event_params", "event_type"))).await;
    assert_eq!(rows.len(), hostile.len() - 1);
    for r in &rows {
        let raw = r.event_type_field.clone().unwrap();
        assert_eq!(
            lakewriter::route::unescape_partition_value(&r.event_type_dir),
            raw,
            "directory round-trips to the value"
        );
        assert!(!matches!(r.event_type_dir.as_str(), "." | ".." | ""));
    }
    let dead = read_dead_letters(&lake, &topic).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("too long"), "{}", dead[0].reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn midnight_splits_dates() {
    let topic = unique("midnight");
    let prefix = unique("midnight");
    // 2024-05-18T23:59:59.999Z and 2024-05-19T00:00:00.000Z
    produce_raw(
        &topic,
        1,
        vec![
            event(&"a".into(), 1_716_076_799_999),
            event(&"a".into(), 1_716_076_800_000),
        ],
    )
    .await;
    run_until_caught_up(config(&topic, &prefix)).await;
    let rows = read_rows(&lake(&prefix).await, &topic, None).await;
    let mut dates: Vec<(i64, String)> = rows.iter().map(|r| (r.offset, r.date.clone())).collect();
    dates.sort();
    assert_eq!(
        dates,
        [(0, "2024-05-18".to_string()), (1, "2024-05-19".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_also_go_to_the_dlq_topic() {
    let topic = unique("dlq");
    let prefix = unique("dlq");
    let dlq = unique("dlqt");
    lakewriter::produce::ensure_topic(&brokers(), &[], &dlq, 1)
        .await
        .unwrap();
    produce_raw(
        &topic,
        1,
        vec![
            event(&"a".into(), START_MS),
            b"{not json".to_vec(),
            event(&"b".into(), START_MS),
        ],
    )
    .await;
    let mut cfg = config(&topic, &prefix);
    cfg.dlq_topic = Some(dlq.clone());
    let s = run_until_caught_up(cfg).await;
    assert_eq!((s.rows_written, s.dead_letters), (2, 1));
    let got = consume_all(&dlq, 1, 1).await;
    let d: lakewriter::deadletter::DeadLetter = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(
        (d.topic.as_str(), d.offset, d.payload.as_str()),
        (topic.as_str(), 1, "{not json")
    );
    assert!(d.reason.starts_with("invalid JSON"), "{}", d.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_skipped_and_a_byte_order_mark_is_not_an_error() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = unique("tomb");
    let prefix = unique("tomb");
    produce_raw(&topic, 1, vec![event(&"a".into(), START_MS)]).await;
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    // A tombstone has no value at all (not an empty one).
    let tomb: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(&topic).key(b"k".as_slice()).partition(0);
    p.send(tomb, std::time::Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(event(&"b".into(), START_MS));
    produce_raw(&topic, 1, vec![bom, Vec::new()]).await;
    let s = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!(
        (s.rows_written, s.tombstones, s.dead_letters),
        (2, 1, 1),
        "two events, one tombstone, one empty message: {s:?}"
    );
    let dead = read_dead_letters(&lake(&prefix).await, &topic).await;
    assert_eq!(dead[0].reason, "empty message");
    assert_eq!(committed(&config(&topic, &prefix).group, &topic, 1)[&0], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_big_for_the_dlq_topic_is_sent_cut_and_kept_whole_in_the_lake() {
    let topic = unique("dlqbig");
    let prefix = unique("dlqbig");
    let dlq = unique("dlqbigt");
    lakewriter::produce::ensure_topic(&brokers(), &[], &dlq, 1)
        .await
        .unwrap();
    // 900 KB that is not UTF-8: stored as base64 (1.2 MB), over the producer's 1 MB limit.
    let mut big = vec![b'x'; 900_000];
    big[0] = 0xff;
    let mut msgs: Vec<Vec<u8>> = (0..100)
        .map(|i| event(&format!("t{}", i % 3).into(), START_MS))
        .collect();
    msgs.insert(50, big.clone());
    produce_raw(&topic, 1, msgs).await;
    let mut cfg = config(&topic, &prefix);
    cfg.dlq_topic = Some(dlq.clone());
    let s = run_until_caught_up(cfg).await;
    assert_eq!((s.rows_written, s.dead_letters), (100, 1));
    let got = consume_all(&dlq, 1, 1).await;
    assert!(got[0].len() < 1_000_000, "{}", got[0].len());
    let d: lakewriter::deadletter::DeadLetter = serde_json::from_slice(&got[0]).unwrap();
    let cut = d.truncated.expect("marked as cut");
    assert_eq!(d.offset, 50);
    let whole = lake(&prefix)
        .await
        .get(&cut.lake_key)
        .await
        .unwrap()
        .expect("kept whole");
    let whole = lakewriter::deadletter::from_ndjson(&whole).unwrap();
    assert_eq!(whole[0].original(), big);
    assert_eq!(cut.payload_bytes, whole[0].payload.len());
}

/// Run one query with ClickHouse's engine (chdb) and return its TSV output.
fn clickhouse(query: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import chdb, sys; print(chdb.query(sys.argv[1], 'TSV'), end='')",
            query,
        ])
        .output()
        .expect("python3 with chdb (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_ids_read_back_exact_in_clickhouse_when_a_fraction_appears_among_them() {
    let topic = unique("bigid");
    let prefix = unique("bigid");
    let ids: Vec<i64> = (0..2000).map(|i| (1i64 << 60) + 7 * i + 1).collect();
    let mut msgs: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| format!(r#"{{"event_params":{{"event_type":"play","big_id":{id}}},"event_timestamp_ms":{{"ts_ms":{START_MS}}}}}"#).into_bytes())
        .collect();
    msgs.insert(1000, format!(r#"{{"event_params":{{"event_type":"play","big_id":1.5}},"event_timestamp_ms":{{"ts_ms":{START_MS}}}}}"#).into_bytes());
    produce_raw(&topic, 2, msgs).await;
    let s = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!((s.rows_written, s.dead_letters), (2000, 1), "{s:?}");
    let dead = read_dead_letters(&lake(&prefix).await, &topic).await;
    assert!(
        dead[0]
            .reason
            .contains("event_params.big_id holds integers beyond 2^53"),
        "{}",
        dead[0].reason
    );
    let url = format!(
        "{}/{}/{prefix}/{topic}/date=*/event_type=*/*.parquet",
        env("LAKEWRITER_TEST_S3_ENDPOINT"),
        bucket()
    );
    let got = clickhouse(&format!(
        "SELECT toTypeName(event_params.big_id), event_params.big_id FROM s3('{url}', '{}', '{}', 'Parquet') ORDER BY 2",
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY")
    ));
    let want: String = ids
        .iter()
        .map(|id| format!("Nullable(Int64)\t{id}\n"))
        .collect();
    assert!(
        got == want,
        "ClickHouse read {} lines; first: {:?}",
        got.lines().count(),
        got.lines().next()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_and_string_event_types_share_a_directory_whose_name_the_column_holds() {
    let topic = unique("numtype");
    let prefix = unique("numtype");
    // The same type as a number and as a string, a float written two ways, and a boolean.
    let types = ["5", r#""5""#, "7.25", "7.250", "true", r#""true""#];
    let msgs: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            let t = types[i % types.len()];
            format!(r#"{{"event_params":{{"event_type":{t},"n":{i}}},"event_timestamp_ms":{{"ts_ms":{START_MS}}}}}"#).into_bytes()
        })
        .collect();
    produce_raw(&topic, 2, msgs).await;
    let s = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!((s.rows_written, s.dead_letters), (600, 0), "{s:?}");
    let url = format!(
        "{}/{}/{prefix}/{topic}/date=*/event_type=*/*.parquet",
        env("LAKEWRITER_TEST_S3_ENDPOINT"),
        bucket()
    );
    // Every row's directory is the text its column holds: the literal as written.
    let got = clickhouse(&format!(
        "SELECT _path LIKE concat('%/event_type=', event_params.event_type, '/%') AS same, event_params.event_type, count() \
         FROM s3('{url}', '{}', '{}', 'Parquet') GROUP BY 1, 2 ORDER BY 2",
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY")
    ));
    assert_eq!(
        got,
        "1\t5\t200\n1\t7.25\t100\n1\t7.250\t100\n1\ttrue\t200\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_past_the_log_end_stops_the_writer_naming_both_offsets() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let topic = unique("ahead");
    let prefix = unique("ahead");
    produce_raw(
        &topic,
        1,
        (0..10)
            .map(|i| event(&format!("t{i}").into(), START_MS))
            .collect(),
    )
    .await;
    let cfg = config(&topic, &prefix);
    // What a deleted and recreated topic (or an offset reset past the end) leaves behind.
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &cfg.group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(1000))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
    assert_eq!(committed(&cfg.group, &topic, 1)[&0], 1000);
    let run = lakewriter::run(cfg, tokio_util::sync::CancellationToken::new());
    let res = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the writer stops instead of looping");
    match res {
        Err(lakewriter::Error::OffsetAhead(m)) => {
            assert!(
                m.contains(&format!("{topic}/0")) && m.contains("1000") && m.contains("end 10"),
                "{m}"
            )
        }
        other => panic!("expected OffsetAhead, got {other:?}"),
    }
    assert!(
        lake(&prefix).await.list("").await.unwrap().is_empty(),
        "nothing written"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process stopped when the test ends, however it ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An S3 server of the test's own (s3s-fs, as scripts/stack.sh runs it).
fn s3_server(port: u16, secret: &str, root: &std::path::Path) -> Stopped {
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "lakewriter", "--secret-key", secret])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("s3s-fs (scripts/stack.sh install)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Stopped(child)
}

/// The body of GET `path` on the admin server (empty when it does not answer).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refusing_the_writers_key_mid_run_makes_it_unready_then_exit_6() {
    let topic = unique("perm");
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("lake")).unwrap();
    let (s3_port, admin_port) = (free_port(), free_port());
    let s3 = s3_server(s3_port, "right", root.path());
    produce_raw(
        &topic,
        1,
        (0..5)
            .map(|i| event(&format!("t{i}").into(), START_MS))
            .collect(),
    )
    .await;
    let group = format!("{topic}-group");
    let mut writer = Stopped(
        Command::new(bin())
            .args([
                "run",
                "--brokers",
                &brokers(),
                "--topics",
                &topic,
                "--group",
                &group,
            ])
            .args(["--lake", "s3://lake/p", "--s3-path-style"])
            .args(["--event-type-pointer", "/event_params/event_type"])
            .args(["--flush-interval", "1s", "--give-up-after", "3s"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3_port}"))
            .env("AWS_ACCESS_KEY_ID", "lakewriter")
            .env("AWS_SECRET_ACCESS_KEY", "right")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    eventually(60, "the first flush committed", || {
        committed(&group, &topic, 1).get(&0) == Some(&5)
    })
    .await;
    // The same server now refuses the writer's key (a rotated secret, a revoked policy).
    drop(s3);
    let _s3 = s3_server(s3_port, "rotated", root.path());
    produce_raw(
        &topic,
        1,
        (5..10)
            .map(|i| event(&format!("t{i}").into(), START_MS))
            .collect(),
    )
    .await;
    eventually(60, "readiness to drop on the permanent error", || {
        http_get(admin_port, "/readyz").contains("permanent")
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = writer.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer gives up instead of retrying forever"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(writer.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(6), "{err}");
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("403"),
        "{err}"
    );
    assert_eq!(
        committed(&group, &topic, 1)[&0],
        5,
        "nothing committed past the files in S3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_offsets_expired_resumes_from_the_lakes_checkpoint() {
    let topic = unique("expired");
    let prefix = unique("expired");
    let first: Vec<Vec<u8>> = (0..300)
        .map(|i| event(&format!("t{}", i % 3).into(), START_MS))
        .collect();
    produce_raw(&topic, 2, first).await;
    let s = run_until_caught_up(config(&topic, &prefix)).await;
    assert_eq!(s.rows_written, 300);
    // A group without offsets but with the lake's records: what a group whose offsets
    // expired (offsets.retention.minutes) or were deleted finds.
    let old = format!("{topic}-group");
    let fresh = unique("expired-g");
    let lake = lake(&prefix).await;
    let records = lake
        .list(&format!("_lakewriter/recovery/{old}/"))
        .await
        .unwrap();
    assert_eq!(
        records.len(),
        2,
        "one checkpoint per partition: {records:?}"
    );
    for key in records {
        let mut rec: lakewriter::commit::RecoveryRecord =
            serde_json::from_slice(&lake.get(&key).await.unwrap().unwrap()).unwrap();
        rec.group = fresh.clone();
        let to = key.replace(&format!("/recovery/{old}/"), &format!("/recovery/{fresh}/"));
        lake.put(&to, serde_json::to_vec(&rec).unwrap().into())
            .await
            .unwrap();
    }
    assert_eq!(
        committed(&fresh, &topic, 2),
        BTreeMap::from([(0, -1), (1, -1)])
    );
    produce_raw(
        &topic,
        2,
        (0..100)
            .map(|i| event(&format!("u{}", i % 2).into(), START_MS))
            .collect(),
    )
    .await;
    let mut cfg = config(&topic, &prefix);
    cfg.group = fresh.clone();
    let s = run_until_caught_up(cfg).await;
    assert_eq!(s.rows_written, 100, "only the new events: {s:?}");
    let rows = read_rows(&lake, &topic, None).await;
    let uniq: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!((rows.len(), uniq.len()), (400, 400));
    assert_eq!(committed(&fresh, &topic, 2), end_offsets(&topic, 2));
}

/// First and last offset per (topic, partition).
type Ranges = BTreeMap<(String, i32), (i64, i64)>;

/// The footer's offset ranges of a Parquet file, per (topic, partition).
fn footer_ranges(bytes: bytes::Bytes) -> Ranges {
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet");
    let kv: BTreeMap<String, String> = r
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect();
    if let Some(ranges) = kv.get("lakewriter.ranges") {
        let v: Vec<serde_json::Value> = serde_json::from_str(ranges).expect("ranges json");
        return v
            .iter()
            .map(|r| {
                (
                    (
                        r["topic"].as_str().unwrap().to_string(),
                        r["partition"].as_i64().unwrap() as i32,
                    ),
                    (
                        r["first_offset"].as_i64().unwrap(),
                        r["last_offset"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
    }
    let n = |k: &str| kv[k].parse::<i64>().expect(k);
    BTreeMap::from([(
        (
            kv["lakewriter.topic"].clone(),
            n("lakewriter.partition") as i32,
        ),
        (n("lakewriter.first_offset"), n("lakewriter.last_offset")),
    )])
}

/// Whether a lake key names a file cut from several partitions' rows.
fn is_shared(key: &str) -> bool {
    let stem = key.rsplit_once('.').map_or(key, |(s, _)| s);
    stem.rsplit('-').next().is_some_and(|last| {
        last.len() > 1 && last.starts_with('c') && last[1..].bytes().all(|b| b.is_ascii_digit())
    })
}

/// A member of eight partitions writes one file per (date, type) directory per
/// flush and one dead-letter file per flush, each holding rows of several
/// partitions, with every partition's offset range in the footer; audit proves
/// the lake exact from the rows. A member of one partition names and describes
/// its files as it always did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_writes_one_file_per_directory_whatever_the_number_of_partitions() {
    for partitions in [8, 1] {
        let topic = unique("spread");
        let prefix = unique("spread");
        let opts = ProduceOptions {
            brokers: brokers(),
            topic: topic.clone(),
            events: 20_000,
            partitions,
            malformed_ratio: 0.01,
            seed: 7,
            start_ms: Some(START_MS),
            days: 2,
            ..ProduceOptions::default()
        };
        let tally = produce::produce(&opts).await.expect("produce");
        let cfg = config(&topic, &prefix);
        let s = run_until_caught_up(cfg.clone()).await;
        assert_eq!(
            (s.rows_written, s.dead_letters),
            (tally.good, tally.malformed)
        );

        let lake = lake(&prefix).await;
        let rows = read_rows(&lake, &topic, None).await;
        let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut file_rows: BTreeMap<String, Ranges> = BTreeMap::new();
        for r in &rows {
            let e = file_rows
                .entry(r.key.clone())
                .or_default()
                .entry((topic.clone(), r.partition))
                .or_insert((r.offset, r.offset));
            *e = (e.0.min(r.offset), e.1.max(r.offset));
        }
        for key in file_rows.keys() {
            let dir = key.rsplit_once('/').unwrap().0.to_string();
            files.entry(dir).or_default().push(key.clone());
        }
        println!(
            "{partitions} partitions: {} rows in {} files over {} directories, {} flushes",
            rows.len(),
            file_rows.len(),
            files.len(),
            s.flushes
        );
        assert_eq!(s.files as usize, file_rows.len());
        for (dir, fs) in &files {
            assert!(
                fs.len() as u64 <= s.flushes,
                "{dir}: at most one file per flush, found {fs:?}"
            );
        }
        for (key, ranges) in &file_rows {
            let footer = footer_ranges(lake.get(key).await.unwrap().unwrap());
            assert_eq!(&footer, ranges, "{key}: footer ranges are the rows' ranges");
            assert_eq!(is_shared(key), ranges.len() > 1, "{key}");
            if partitions == 8 {
                assert!(ranges.len() > 1, "{key} holds rows of several partitions");
            }
        }
        let dead_files = lake
            .list(&format!("_lakewriter/dead_letters/{topic}/"))
            .await
            .unwrap();
        assert!(
            !dead_files.is_empty() && dead_files.len() as u64 <= s.flushes,
            "one dead-letter file per flush: {dead_files:?}"
        );
        assert_eq!(
            dead_files.iter().any(|k| is_shared(k)),
            partitions > 1,
            "{dead_files:?}"
        );
        let report = lakewriter::audit::audit(&cfg, &lake).await.expect("audit");
        assert!(report.clean(), "audit:\n{}", report.render());
        let audited: u64 = report.partitions.values().map(|p| p.rows).sum();
        let dead: u64 = report.partitions.values().map(|p| p.dead_letters).sum();
        assert_eq!((audited, dead), (tally.good, tally.malformed));
        assert_eq!(report.partitions.len(), partitions as usize);
    }
}
