//! Backfill mode on the real broker and S3 server.

mod helpers;

use std::collections::HashSet;
use std::process::{Command, Stdio};

use helpers::*;
use lakewriter::config::{BackfillSpec, Config, Mode};
use lakewriter::offsets::Bound;
use lakewriter::produce::{self, ProduceOptions};

fn backfill_config(
    topic: &str,
    prefix: &str,
    group: &str,
    from: Bound,
    to: Bound,
    dry_run: bool,
) -> Config {
    Config {
        mode: Mode::Backfill,
        group: group.to_string(),
        backfill: Some(BackfillSpec {
            from,
            to,
            partitions: None,
            dry_run,
            lease_ttl: std::time::Duration::from_secs(10),
        }),
        ..config(topic, prefix)
    }
}

fn ev(i: usize) -> Vec<u8> {
    format!(r#"{{"event_params":{{"event_type":"t{}","n":{i}}},"event_timestamp_ms":{{"ts_ms":1716000000000}}}}"#, i % 3).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_selects_exactly_its_kafka_timestamps() {
    let topic = unique("bf-time");
    let prefix = unique("bf-time");
    const T0: i64 = 1_700_000_000_000;
    // Three eras, one hour apart; the middle one is the range.
    let msgs: Vec<(Vec<u8>, i64)> = (0..300)
        .map(|i| (ev(i), T0 + (i as i64 / 100) * 3_600_000 + i as i64))
        .collect();
    produce_with_timestamps(&topic, 2, msgs).await;
    let from = Bound::Time(T0 + 3_600_000);
    let to = Bound::Time(T0 + 2 * 3_600_000);
    let s = run_until_caught_up(backfill_config(
        &topic,
        &prefix,
        &unique("g"),
        from,
        to,
        false,
    ))
    .await;
    assert_eq!(s.rows_written, 100, "{s:?}");
    let rows = read_rows(&lake(&prefix).await, &topic, None).await;
    assert_eq!(rows.len(), 100);
    // Offsets 50..100 on each of the 2 partitions hold messages 100..200.
    let offs: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    let want: HashSet<(i32, i64)> = (100..200).map(|i: i32| (i % 2, i64::from(i / 2))).collect();
    assert_eq!(offs, want);
    // A range after the last record (the local broker answers such offsets-for-times with 0) selects nothing.
    let s = run_until_caught_up(backfill_config(
        &topic,
        &unique("bf-none"),
        &unique("g"),
        Bound::Time(T0 + 10 * 3_600_000),
        Bound::Latest,
        false,
    ))
    .await;
    assert_eq!((s.events_in, s.rows_written), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_then_twice_the_same_backfill_writes_each_event_once() {
    let topic = unique("bf-twice");
    let prefix = unique("bf-twice");
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 200_000,
        partitions: 4,
        malformed_ratio: 0.005,
        seed: 9,
        start_ms: Some(1_716_000_000_000),
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    // --dry-run through the binary: its counts must equal what the real run writes.
    let out = Command::new(bin())
        .args([
            "run",
            "--mode",
            "backfill",
            "--dry-run",
            "--admin-addr",
            "off",
            "--brokers",
            &brokers(),
            "--topics",
            &topic,
            "--lake",
        ])
        .arg(format!("s3://{}/{prefix}", bucket()))
        .args([
            "--s3-path-style",
            "--event-type-pointer",
            "/event_params/event_type",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("total messages: "))
        .expect("total line")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, 200_000);
    assert!(
        lake(&prefix).await.list("").await.unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let group = unique("bf-g");
    let s1 = run_until_caught_up(backfill_config(
        &topic,
        &prefix,
        &group,
        Bound::Earliest,
        Bound::Latest,
        false,
    ))
    .await;
    assert_eq!(
        s1.rows_written + s1.dead_letters,
        total,
        "the dry run's count is what the real run writes"
    );
    assert_eq!(s1.rows_written, tally.good);
    let s2 = run_until_caught_up(backfill_config(
        &topic,
        &prefix,
        &group,
        Bound::Earliest,
        Bound::Latest,
        false,
    ))
    .await;
    assert_eq!(
        s2.rows_written, 0,
        "the same range again writes nothing new"
    );
    let rows = read_rows(&lake(&prefix).await, &topic, None).await;
    assert_eq!(rows.len() as u64, tally.good);
    let uniq: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(uniq.len(), rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_halfway_and_rerun_writes_each_event_once() {
    let topic = unique("bf-kill");
    let prefix = unique("bf-kill");
    let group = unique("bf-kill-g");
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 100_000,
        partitions: 4,
        seed: 5,
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    let args = |flush_rows: &str| {
        let mut c = backfill_command(
            &topic,
            &prefix,
            &["--group", &group, "--flush-rows", flush_rows],
        );
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    let mut child = args("1000").spawn().unwrap();
    // Kill it once some (not all) of the range is committed.
    eventually(120, "a first commit", || {
        committed(&group, &topic, 4).values().any(|&o| o > 0)
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done: i64 = committed(&group, &topic, 4)
        .values()
        .map(|&o| o.max(0))
        .sum();
    assert!(done < 100_000, "killed before the end ({done})");
    let status = args("1000000").status().unwrap();
    assert!(status.success(), "re-run exits 0");
    let rows = read_rows(&lake(&prefix).await, &topic, None).await;
    let uniq: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(uniq.len(), rows.len(), "no duplicates");
    assert_eq!(rows.len() as u64, tally.good, "nothing lost");
    let pending = pending_records(&lake(&prefix).await, &group, &topic, 4).await;
    assert!(
        pending.is_empty(),
        "no uncommitted recovery record left: {pending:?}"
    );
}

async fn assert_each_event_once(prefix: &str, topic: &str, good: u64) {
    let rows = read_rows(&lake(prefix).await, topic, None).await;
    let uniq: HashSet<(i32, i64)> = rows.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(uniq.len(), rows.len(), "no event twice");
    assert_eq!(rows.len() as u64, good, "no event lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backfill_started_twice_at_once_writes_each_event_once() {
    let topic = unique("bf-pair");
    let prefix = unique("bf-pair");
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 60_000,
        partitions: 4,
        seed: 11,
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    let extra = ["--flush-rows", "2000", "--backfill-lease", "4s"];
    let spawn = || {
        backfill_command(&topic, &prefix, &extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    let stderr = format!(
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    // One holds the range; the other refuses while it does (or, had the first
    // finished before the second looked, resumes after it and writes nothing).
    assert!(codes.contains(&Some(0)), "{codes:?}\n{stderr}");
    assert!(
        codes.iter().all(|c| matches!(c, Some(0) | Some(2))),
        "{codes:?}\n{stderr}"
    );
    if codes.contains(&Some(2)) {
        // Refused at the start, or (when both created the lease at the same instant
        // on a store whose create-if-absent is not atomic) stopped before a commit.
        assert!(
            stderr.contains("another run of this backfill is in progress")
                || stderr.contains("lost the lease"),
            "{stderr}"
        );
    }
    let third = backfill_command(&topic, &prefix, &extra).output().unwrap();
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert_each_event_once(&prefix, &topic, tally.good).await;
}

/// The state two simultaneous creates of the lease can leave on s3s-fs, whose
/// create-if-absent is not atomic: the object holds one run's record and the
/// checksum stored beside it is the other's. A run must read the record, not
/// fail on the checksum, and decide from what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_record_paired_with_another_writes_checksum_is_read_and_taken_over() {
    let topic = unique("bf-torn");
    let prefix = unique("bf-torn");
    let group = unique("bf-torn-g");
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 2_000,
        partitions: 2,
        seed: 13,
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    let key = lakewriter::lease::lease_key(&group);
    let record = |holder: &str, expires_ms: i64| {
        serde_json::to_vec(&lakewriter::lease::LeaseRecord {
            group: group.clone(),
            holder: holder.to_string(),
            expires_ms,
        })
        .unwrap()
    };
    lake(&prefix)
        .await
        .put(&key, record("run-x", 1).into())
        .await
        .unwrap();
    let file = std::path::Path::new(&env("LAKEWRITER_TEST_STACK"))
        .join("s3")
        .join(bucket())
        .join(&prefix)
        .join(&key);
    assert!(file.exists(), "s3s-fs keeps the object at {file:?}");
    // Another released record, of another length, under the first one's checksum.
    std::fs::write(&file, record("run-y-of-a-longer-name", 0)).unwrap();
    let out = backfill_command(
        &topic,
        &prefix,
        &["--group", &group, "--backfill-lease", "4s"],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_each_event_once(&prefix, &topic, tally.good).await;
    let stored = lake(&prefix).await.get(&key).await.unwrap().unwrap();
    let stored: lakewriter::lease::LeaseRecord = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        stored.expires_ms, 0,
        "the run released the lease it took over"
    );
    assert_ne!(stored.holder, "run-y-of-a-longer-name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_writer_in_a_running_backfills_group_refuses_and_the_backfill_stays_exact() {
    let topic = unique("bf-mixed");
    let prefix = unique("bf-mixed");
    let group = unique("bf-mixed-g");
    let tally = produce::produce(&ProduceOptions {
        brokers: brokers(),
        topic: topic.clone(),
        events: 60_000,
        partitions: 4,
        seed: 12,
        ..ProduceOptions::default()
    })
    .await
    .unwrap();
    let backfill = backfill_command(&topic, &prefix, &["--group", &group, "--flush-rows", "500"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(120, "the backfill's first commit", || {
        committed(&group, &topic, 4).values().any(|&o| o > 0)
    })
    .await;
    let stream = Command::new(bin())
        .args(["run", "--admin-addr", "off", "--until-caught-up"])
        .args([
            "--brokers",
            &brokers(),
            "--topics",
            &topic,
            "--group",
            &group,
        ])
        .arg("--lake")
        .arg(format!("s3://{}/{prefix}", bucket()))
        .args([
            "--s3-path-style",
            "--event-type-pointer",
            "/event_params/event_type",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&stream.stderr);
    assert_eq!(stream.status.code(), Some(2), "{err}");
    assert!(err.contains("is held by backfill"), "{err}");
    let out = backfill.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_each_event_once(&prefix, &topic, tally.good).await;
}
