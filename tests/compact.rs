//! `lakewriter compact` against the local stack (tansu + s3s-fs): every row and
//! every value kept exactly once, through crashes at any moment and beside a
//! second compactor; unreadable inputs left in place.

mod helpers;

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use helpers::*;
use lakewriter::compact::{data_dir, INTENT_DIR, LEASE_KEY};
use lakewriter::produce::{self, ProduceOptions, Tally};
use lakewriter::upload::Lake;

/// A lake of small files: `events` clickstream events over 4 partitions,
/// written with small flushes.
async fn small_file_lake(base: &str, events: u64, flush_rows: usize) -> (String, String, Tally) {
    let topic = unique(base);
    let prefix = unique(base);
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events,
        partitions: 4,
        seed: 21,
        malformed_ratio: 0.01,
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&topic, &prefix);
    cfg.flush.rows = flush_rows;
    run_until_caught_up(cfg).await;
    (topic, prefix, tally)
}

/// The stdout of a run that must succeed (its output shown if it did not).
fn succeeded(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The merges a run's summary line reports.
fn merges(stdout: &str) -> u64 {
    stdout
        .split("compaction: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Keys sorted, so that a row reads the same whatever its file's column order.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut kv: Vec<_> = m.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = kv
                .iter()
                .map(|(k, v)| format!("{k:?}:{}", canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

fn json_rows(b: &RecordBatch) -> Vec<String> {
    // Times as their integer values: the JSON writer cannot name the "UTC" zone
    // without chrono-tz, and the integer is the exact value anyway.
    let (fields, columns): (Vec<_>, Vec<_>) = b
        .schema()
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, c)| match f.data_type() {
            arrow::datatypes::DataType::Timestamp(..) => (
                arrow::datatypes::Field::new(f.name(), arrow::datatypes::DataType::Int64, true),
                arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap(),
            ),
            _ => (f.as_ref().clone(), c.clone()),
        })
        .unzip();
    let b = RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .unwrap();
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write_batches(&[&b]).unwrap();
    w.finish().unwrap();
    String::from_utf8(w.into_inner())
        .unwrap()
        .lines()
        // `_ingested_at` says when the writer encoded the row: kept, but
        // compared too (a merge must not rewrite it).
        .map(|l| canonical(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// Every row of every data file with every column, sorted, per directory.
async fn snapshot(lake: &Lake, table: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in lake.list(&format!("{table}/")).await.unwrap() {
        let dir = data_dir(&key).expect("only data files").to_string();
        let b = read_parquet(lake.get(&key).await.unwrap().unwrap());
        out.entry(dir).or_default().extend(json_rows(&b));
    }
    for rows in out.values_mut() {
        rows.sort();
    }
    out
}

/// Files named by recovery records (the writer's checkpoints stay uncompacted).
async fn recorded(lake: &Lake) -> HashSet<String> {
    let mut out = HashSet::new();
    for key in lake.list("_lakewriter/recovery/").await.unwrap() {
        let body = lake.get(&key).await.unwrap().unwrap();
        let r: lakewriter::commit::RecoveryRecord = serde_json::from_slice(&body).unwrap();
        out.extend(r.files);
    }
    out
}

async fn audit_exact(topic: &str, prefix: &str, tally: &Tally) {
    let cfg = config(topic, prefix);
    let report = lakewriter::audit::audit(&cfg, &lake(prefix).await)
        .await
        .expect("audit");
    assert!(report.clean(), "audit:\n{}", report.render());
    let rows: u64 = report.partitions.values().map(|p| p.rows).sum();
    let dead: u64 = report.partitions.values().map(|p| p.dead_letters).sum();
    assert_eq!((rows, dead), (tally.good, tally.malformed));
}

/// Each directory ends as one file (merged, unless it was alone) plus the files
/// recovery records keep, the merged files sorted by event time; no intent is
/// left.
async fn assert_compacted(lake: &Lake, table: &str) -> usize {
    let keep = recorded(lake).await;
    let mut merged_per_dir: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = 0;
    for key in lake.list(&format!("{table}/")).await.unwrap() {
        files += 1;
        let dir = data_dir(&key).unwrap().to_string();
        let name = &key[dir.len()..];
        if keep.contains(&key) {
            continue;
        }
        *merged_per_dir.entry(dir).or_default() += 1;
        if !name.starts_with("compacted-") {
            continue; // alone beside the files records keep: nothing to merge with
        }
        let bytes = lake.get(&key).await.unwrap().unwrap();
        let meta = parquet::file::reader::FileReader::metadata(
            &parquet::file::serialized_reader::SerializedFileReader::new(bytes.clone()).unwrap(),
        )
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
        assert!(meta.iter().any(
            |kv| kv.key == "lakewriter.sorted_by" && kv.value.as_deref() == Some("_event_time")
        ));
        let b = read_parquet(bytes);
        let t = b
            .column_by_name("_event_time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert!(
            t.values().windows(2).all(|w| w[0] <= w[1]),
            "{key} sorted by _event_time"
        );
    }
    assert!(
        merged_per_dir.values().all(|&n| n == 1),
        "one file per directory besides those records keep: {merged_per_dir:?}"
    );
    assert!(
        lake.list(INTENT_DIR).await.unwrap().is_empty(),
        "no intent left"
    );
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_row_and_value_once_in_one_sorted_file_per_directory() {
    let (topic, prefix, tally) = small_file_lake("cp-eo", 30_000, 300).await;
    let lk = lake(&prefix).await;
    let before = snapshot(&lk, &topic).await;
    let files_before = lk.list(&format!("{topic}/")).await.unwrap().len();
    let dead_before = lk.list("_lakewriter/dead_letters/").await.unwrap();
    assert!(
        !dead_before.is_empty(),
        "the clickstream has malformed events"
    );

    let planned = succeeded(compact_cmd(&prefix, &["--dry-run"]).output().unwrap());
    assert!(planned.contains("would merge"), "{planned}");
    assert_eq!(
        lk.list(&format!("{topic}/")).await.unwrap().len(),
        files_before,
        "a dry run changes nothing"
    );

    let stdout = succeeded(compact_cmd(&prefix, &["--once"]).output().unwrap());
    println!("{stdout}");
    assert_eq!(
        snapshot(&lk, &topic).await,
        before,
        "same rows, same values"
    );
    let files_after = assert_compacted(&lk, &topic).await;
    println!("files: {files_before} → {files_after}");
    assert!(
        files_after * 2 < files_before,
        "{files_before} → {files_after}"
    );
    assert_eq!(
        lk.list("_lakewriter/dead_letters/").await.unwrap(),
        dead_before,
        "dead letters untouched"
    );
    let lease: lakewriter::lease::LeaseRecord =
        serde_json::from_slice(&lk.get(LEASE_KEY).await.unwrap().unwrap()).unwrap();
    assert_eq!(lease.expires_ms, 0, "the lease is released");
    audit_exact(&topic, &prefix, &tally).await;

    // Nothing left to merge: a second run changes nothing.
    let again = succeeded(compact_cmd(&prefix, &["--once"]).output().unwrap());
    assert!(again.contains("compaction: 0 merges"), "{again}");
    assert_eq!(snapshot(&lk, &topic).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compactor_killed_at_any_moment_loses_and_duplicates_nothing() {
    let (topic, prefix, tally) = small_file_lake("cp-kill", 120_000, 300).await;
    let lk = lake(&prefix).await;
    let before = snapshot(&lk, &topic).await;
    let files_before = lk.list(&format!("{topic}/")).await.unwrap().len();
    // A small target: many merges, so that kills land among them.
    let small = ["--once", "--target-file-size", "1MiB"];
    // At each step of the protocol: after the intent, between two uploads,
    // after the commit point (before the inputs are removed).
    for fault in [
        "compact_after_intent:1",
        "compact_mid_upload:1",
        "compact_after_done:2",
    ] {
        let out = compact_cmd(&prefix, &small)
            .env("LAKEWRITER_FAULT", fault)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{fault}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("injected fault"));
        // Left mid-merge, the lake has rows twice (inputs and some outputs);
        // audit counts each once, from the intent.
        assert!(!lk.list(INTENT_DIR).await.unwrap().is_empty());
        audit_exact(&topic, &prefix, &tally).await;
    }
    // Then SIGKILLs at random moments of a run.
    let mut rng = rand::random::<u64>();
    let mut killed_with_intent = 0;
    for _ in 0..5 {
        let mut child = compact_cmd(&prefix, &small).spawn().unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Wait until this run holds the lease (the previous holder's expiry
        // comes first), then kill it somewhere in its work.
        let start = std::time::Instant::now();
        let mut holding = false;
        while start.elapsed() < Duration::from_secs(30) {
            // A read that meets a renewal in flight can fail on s3s-fs (its
            // writes are not atomic): look again.
            if let Ok(Some(body)) = lk.get(LEASE_KEY).await {
                let l = serde_json::from_slice::<lakewriter::lease::LeaseRecord>(&body);
                if l.is_ok_and(|l| l.holder.contains(&format!("-{}-", child.id()))) {
                    holding = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(holding, "the run took the lease");
        tokio::time::sleep(Duration::from_millis(rng >> 54)).await; // 0–1 s into its work
        child.kill().unwrap();
        child.wait().unwrap();
        if !lk.list(INTENT_DIR).await.unwrap().is_empty() {
            killed_with_intent += 1;
        }
    }
    println!("{killed_with_intent} of 5 random kills left an intent behind");

    let stdout = succeeded(compact_cmd(&prefix, &small).output().unwrap());
    println!("{stdout}");
    assert!(lk.list(INTENT_DIR).await.unwrap().is_empty());
    assert_eq!(
        snapshot(&lk, &topic).await,
        before,
        "same rows, same values"
    );
    let files_after = lk.list(&format!("{topic}/")).await.unwrap().len();
    println!("files: {files_before} → {files_after}");
    assert!(files_after < files_before);
    audit_exact(&topic, &prefix, &tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactors_started_at_once_never_both_merge() {
    let (topic, prefix, tally) = small_file_lake("cp-pair", 30_000, 300).await;
    let lk = lake(&prefix).await;
    let before = snapshot(&lk, &topic).await;
    let (a, b) = (
        compact_cmd(&prefix, &["--once"]).spawn().unwrap(),
        compact_cmd(&prefix, &["--once"]).spawn().unwrap(),
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    let stderr = format!(
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(codes.contains(&Some(0)), "{codes:?}\n{stderr}");
    assert!(
        codes.iter().all(|c| matches!(c, Some(0) | Some(2))),
        "{codes:?}\n{stderr}"
    );
    if codes.contains(&Some(2)) {
        assert!(
            stderr.contains("another compactor holds the lake")
                || stderr.contains("lost the compaction lease"),
            "{stderr}"
        );
    }
    assert_eq!(snapshot(&lk, &topic).await, before);
    assert_compacted(&lk, &topic).await;
    audit_exact(&topic, &prefix, &tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_input_is_left_in_place_and_the_rest_is_merged() {
    let (topic, prefix, tally) = small_file_lake("cp-bad", 10_000, 300).await;
    let lk = lake(&prefix).await;
    let first = lk.list(&format!("{topic}/")).await.unwrap()[0].clone();
    let dir = data_dir(&first).unwrap().to_string();
    let bad = format!("{dir}truncated.parquet");
    let body = lk.get(&first).await.unwrap().unwrap();
    lk.put(&bad, body.slice(..body.len() / 2)).await.unwrap();
    let out = compact_cmd(&prefix, &["--once"])
        .env("LAKEWRITER_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 unreadable inputs left in place"),
        "{stdout}"
    );
    // JSON logs: one object a line, the bad input's key a field of an error.
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "ERROR" && l["fields"]["key"] == bad.as_str()),
        "the log names the key: {stderr}"
    );
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "merged" && l["fields"]["inputs"].as_u64() > Some(1)),
        "a line per merge: {stderr}"
    );
    assert_eq!(lk.get(&bad).await.unwrap().unwrap().len(), body.len() / 2);
    lk.delete(&bad).await.unwrap();
    assert_compacted(&lk, &topic).await;
    audit_exact(&topic, &prefix, &tally).await;
}

fn sigterm(c: &std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
}

/// A stream writer keeps writing (small flushes every second) while a
/// compactor with no minimum age merges beside it: files of a cycle in flight
/// are never merged, and the lake ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_beside_a_running_writer_loses_and_duplicates_nothing() {
    let topic = unique("cp-live");
    let prefix = unique("cp-live");
    let group = format!("{topic}-group");
    lakewriter::produce::ensure_topic(&brokers(), &[], &topic, 4)
        .await
        .unwrap();
    let opts = ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 60_000,
        rate: 4_000,
        partitions: 4,
        malformed_ratio: 0.01,
        seed: 23,
        ..ProduceOptions::default()
    };
    let producer = tokio::spawn(async move { produce::produce(&opts).await.unwrap() });
    let writer_log = std::env::temp_dir().join(format!("{topic}-writer.log"));
    let mut writer = Command::new(bin())
        .args(["run", "--brokers", &brokers(), "--topics", &topic])
        .args(["--group", &group, "--admin-addr", "off"])
        .args(lake_args(&prefix))
        .args(["--flush-rows", "300", "--flush-interval", "1s"])
        .args(["--kafka-opt", "session.timeout.ms=6000"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&writer_log).unwrap())
        .spawn()
        .unwrap();
    let compactor = compact_cmd(&prefix, &["--interval", "1s"]).spawn().unwrap();
    let tally = producer.await.unwrap();
    let ends = end_offsets(&topic, 4);
    eventually(120, "the writer to catch up", || {
        committed(&group, &topic, 4) == ends
    })
    .await;
    sigterm(&writer);
    assert!(writer.wait().unwrap().success());
    sigterm(&compactor);
    let stdout = succeeded(compactor.wait_with_output().unwrap());
    println!("beside the writer: {stdout}");
    assert!(
        merges(&stdout) > 0,
        "the compactor merged while the writer ran: {stdout}"
    );
    succeeded(compact_cmd(&prefix, &["--once"]).output().unwrap());
    let lk = lake(&prefix).await;
    assert_compacted(&lk, &topic).await;
    audit_exact(&topic, &prefix, &tally).await;
}

/// A backfill killed halfway and run again to the end, with a compactor of no
/// minimum age merging beside both runs: the killed run's uncommitted files
/// (named by its recovery records) are never merged, its rollback removes
/// only them, and every event ends in the lake once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_beside_a_backfill_killed_and_rerun_loses_and_duplicates_nothing() {
    let topic = unique("cp-bf");
    let prefix = unique("cp-bf");
    let group = unique("cp-bf-g");
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 60_000,
        partitions: 4,
        seed: 29,
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    let backfill = || {
        let mut c = backfill_command(&topic, &prefix, &["--group", &group, "--flush-rows", "400"]);
        c.stderr(Stdio::null());
        c
    };
    let compactor = compact_cmd(&prefix, &["--interval", "1s"]).spawn().unwrap();
    let mut first = backfill().spawn().unwrap();
    eventually(120, "the first run's first commits", || {
        committed(&group, &topic, 4)
            .values()
            .filter(|&&o| o > 0)
            .count()
            >= 2
    })
    .await;
    first.kill().unwrap(); // SIGKILL, mid-range
    first.wait().unwrap();
    let done: i64 = committed(&group, &topic, 4)
        .values()
        .map(|&o| o.max(0))
        .sum();
    assert!(done < 60_000, "killed before the end ({done})");
    assert!(backfill().status().unwrap().success(), "the re-run exits 0");
    sigterm(&compactor);
    let stdout = succeeded(compactor.wait_with_output().unwrap());
    println!("beside the backfill: {stdout}");
    assert!(
        merges(&stdout) > 0,
        "the compactor merged while the backfills ran: {stdout}"
    );
    succeeded(compact_cmd(&prefix, &["--once"]).output().unwrap());
    let lk = lake(&prefix).await;
    assert_compacted(&lk, &topic).await;
    let rows = read_rows(&lk, &topic, None).await;
    let uniq: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(uniq.len(), rows.len(), "no event twice");
    assert_eq!(rows.len() as u64, tally.good, "no event lost");
    assert!(
        pending_records(&lk, &group, &topic, 4).await.is_empty(),
        "no uncommitted recovery record left"
    );
}

/// On a terminal `compact` draws a progress bar of the pass (input bytes,
/// which merge of how many).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_compact_shows_the_progress_of_a_pass() {
    let (topic, prefix, _) = small_file_lake("cp-tty", 10_000, 300).await;
    let cmd = compact_cmd(&prefix, &["--once"]);
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // script(1) runs the command on a pseudo-terminal and copies what it drew.
    let out = Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .output()
        .unwrap();
    let drawn = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{drawn}");
    assert!(drawn.contains("merge 1/"), "progress drawn: {drawn}");
    assert!(drawn.contains("iB/"), "bytes done/total: {drawn}");
    assert!(drawn.contains("compaction: "), "{drawn}");
    assert_compacted(&lake(&prefix).await, &topic).await;
}
