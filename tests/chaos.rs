//! Fault injection on the local stack: SIGKILLs at chosen and random
//! moments, a changing group, an S3 outage, a broker restart. After each,
//! `audit` must find no gap, duplicate or orphan and the lake must hold every
//! good event exactly once. The tests here stop and start the shared stack's
//! servers, so they run one at a time (this binary runs alone).
// The chaos tests share one stack and take turns: each holds SERIAL for its whole run,
// awaits included (one test per runtime, so nothing else on that runtime waits for it).
#![allow(clippy::await_holding_lock)]

mod helpers;

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use helpers::*;
use lakewriter::produce::{self, ProduceOptions, Tally};
use rand::{Rng, SeedableRng};

static SERIAL: Mutex<()> = Mutex::new(());

/// One fault test at a time, with both servers up and fresh names.
fn setup(base: &str) -> (std::sync::MutexGuard<'static, ()>, String, String, String) {
    let g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    stack("ensure"); // a failed fault test may have left a server down
    let topic = unique(base);
    let group = format!("{topic}-group");
    (g, topic, unique(base), group)
}

struct Writer {
    child: Child,
    admin: Option<u16>,
}

// A failed assertion must not leave a writer running (or stopped) behind.
impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_writer(
    topic: &str,
    prefix: &str,
    group: &str,
    env: &[(&str, &str)],
    extra: &[&str],
    log: &str,
) -> Writer {
    let port = free_port();
    let logf = File::create(std::env::temp_dir().join(format!("{log}.log"))).unwrap();
    let mut c = Command::new(bin());
    c.args([
        "run",
        "--brokers",
        &brokers(),
        "--topics",
        topic,
        "--group",
        group,
    ])
    .args(lake_args(prefix))
    .args([
        "--flush-rows",
        "5000",
        "--flush-interval",
        "1s",
        "--kafka-opt",
        "session.timeout.ms=6000",
        "--shutdown-timeout",
        "20s",
    ])
    .args(["--admin-addr", &format!("127.0.0.1:{port}")])
    .args(extra)
    .envs(env.iter().copied())
    .stdout(Stdio::null())
    .stderr(Stdio::from(logf));
    Writer {
        child: c.spawn().unwrap(),
        admin: Some(port),
    }
}

/// The partition count of the writer's first assignment, from its log.
fn first_assignment(log: &str) -> Option<usize> {
    let text = std::fs::read_to_string(std::env::temp_dir().join(format!("{log}.log"))).ok()?;
    let line = text.lines().find(|l| l.contains("partitions assigned"))?;
    line.split("partitions=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Start a writer and make sure the group gave it partitions. tansu keeps a
/// killed member in a stable group past its session timeout without
/// rebalancing, so a writer started meanwhile can be left with none (Apache
/// Kafka rebalances); such a writer is stopped cleanly and started again.
async fn spawn_assigned(
    topic: &str,
    prefix: &str,
    group: &str,
    env: &[(&str, &str)],
    extra: &[&str],
    log: &str,
) -> Writer {
    for attempt in 0..4 {
        let name = format!("{log}-{attempt}");
        let mut w = spawn_writer(topic, prefix, group, env, extra, &name);
        let mut got = None;
        let mut exited = false;
        // No assignment within the deadline: tansu 0.6 keeps a group's leader when
        // that leader sends LeaveGroup while the group is forming, so a new member
        // waits for an assignment from a member that is gone, for ever. Its
        // in-memory group is the only place the stale leader lives (reloading from
        // storage drops a leader that is not a member), so restart the broker and
        // join with a new member.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            got = first_assignment(&name);
            exited = matches!(w.child.try_wait(), Ok(Some(_)));
            if got.is_some() || exited {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if got.is_some_and(|n| n > 0) || (exited && got.is_some()) {
            return w;
        }
        sigterm(&w);
        wait_exit(&mut w, 40).await;
        println!("{name}: no assignment within 60 s; restarting the broker");
        stack("restart-kafka");
    }
    panic!("no writer of {group} got partitions after 4 attempts");
}

fn sigterm(w: &Writer) {
    let _ = Command::new("kill")
        .args(["-TERM", &w.child.id().to_string()])
        .status();
}

/// Wait for the process to exit, at most `secs`.
async fn wait_exit(w: &mut Writer, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = w.child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = w.child.kill();
            panic!("writer did not exit within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // One write: a request split over several segments may be answered (and the
    // socket closed) before its end arrives.
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let body = String::from_utf8_lossy(&raw).into_owned();
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

fn stack(cmd: &str) {
    let st = Command::new(format!("{}/scripts/stack.sh", env!("CARGO_MANIFEST_DIR")))
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success(), "stack.sh {cmd}");
}

fn rss_mb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb / 1024)
}

async fn produce_in_background(
    topic: &str,
    events: u64,
    rate: u64,
    seed: u64,
) -> tokio::task::JoinHandle<Tally> {
    let opts = ProduceOptions {
        brokers: brokers(),
        topic: topic.to_string(),
        events,
        rate,
        partitions: 4,
        malformed_ratio: 0.01,
        seed,
        start_ms: Some(1_716_000_000_000),
        ..ProduceOptions::default()
    };
    lakewriter::produce::ensure_topic(&brokers(), &[], topic, 4)
        .await
        .unwrap();
    tokio::spawn(async move { produce::produce(&opts).await.expect("produce") })
}

/// Produce `events` unthrottled and wait for the producer to finish.
async fn produce_now(topic: &str, events: u64, seed: u64) -> Tally {
    produce_in_background(topic, events, 0, seed)
        .await
        .await
        .unwrap()
}

/// The tally of two production waves to one topic.
fn both(a: &Tally, b: &Tally) -> Tally {
    Tally {
        good: a.good + b.good,
        malformed: a.malformed + b.malformed,
        ..Tally::default()
    }
}

async fn first_commit(group: &str, topic: &str) {
    eventually(60, "a first commit", || {
        committed(group, topic, 4).values().any(|&o| o > 0)
    })
    .await;
}

/// The final check: one clean catch-up run, then audit and exact rows.
async fn settle_and_audit(topic: &str, prefix: &str, group: &str, tally: &Tally) {
    let mut w = spawn_assigned(
        topic,
        prefix,
        group,
        &[],
        &["--until-caught-up"],
        &format!("{topic}-settle"),
    )
    .await;
    assert!(
        wait_exit(&mut w, 180).await.success(),
        "the settling run catches up and exits 0"
    );
    audit_clean(topic, prefix, group, tally).await;
}

async fn audit_clean(topic: &str, prefix: &str, group: &str, tally: &Tally) {
    let mut cfg = config(topic, prefix);
    cfg.group = group.to_string();
    let report = lakewriter::audit::audit(&cfg, &lake(prefix).await)
        .await
        .expect("audit");
    println!("{}", report.render());
    assert!(report.clean(), "audit:\n{}", report.render());
    let rows: u64 = report.partitions.values().map(|p| p.rows).sum();
    let dead: u64 = report.partitions.values().map(|p| p.dead_letters).sum();
    assert_eq!(
        (rows, dead),
        (tally.good, tally.malformed),
        "every good event once, every malformed one dead-lettered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_chosen_and_random_moments_loses_and_duplicates_nothing() {
    let (_g, topic, prefix, group) = setup("ck");
    let producer = produce_in_background(&topic, 500_000, 8_000, 11).await;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2026);
    // Aborts inside a flush cycle, at each step of docs/recovery.md, then random SIGKILLs.
    let faults = [
        "after_records:2",
        "mid_upload:1",
        "after_upload:2",
        "after_commit:1",
        "mid_upload:3",
    ];
    let mut schedule = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let mut w = spawn_assigned(
            &topic,
            &prefix,
            &group,
            &[("LAKEWRITER_FAULT", f)],
            &[],
            &format!("{topic}-fault{i}"),
        )
        .await;
        let st = wait_exit(&mut w, 120).await;
        assert!(!st.success(), "the injected fault {f} aborts the writer");
        schedule.push(format!("abort at {f}"));
    }
    for i in 0..3 {
        let mut w = spawn_assigned(
            &topic,
            &prefix,
            &group,
            &[],
            &[],
            &format!("{topic}-kill{i}"),
        )
        .await;
        // A random moment while it consumes.
        let ms = rng.random_range(2_000..6_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        w.child.kill().unwrap();
        w.child.wait().unwrap();
        schedule.push(format!("SIGKILL after {ms} ms"));
    }
    println!("fault schedule: {schedule:?}");
    let tally = producer.await.unwrap();
    settle_and_audit(&topic, &prefix, &group, &tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_and_leaving_mid_stream() {
    let (_g, topic, prefix, group) = setup("cg");
    let producer = produce_in_background(&topic, 200_000, 20_000, 12).await;
    let mut w1 = spawn_writer(&topic, &prefix, &group, &[], &[], &format!("{topic}-w1"));
    let mut w2 = spawn_writer(&topic, &prefix, &group, &[], &[], &format!("{topic}-w2"));
    first_commit(&group, &topic).await;
    let mut w3 = spawn_writer(&topic, &prefix, &group, &[], &[], &format!("{topic}-w3"));
    let before = committed(&group, &topic, 4).values().sum::<i64>();
    eventually(60, "progress with three members", || {
        committed(&group, &topic, 4).values().sum::<i64>() > before + 20_000
    })
    .await;
    sigterm(&w1);
    assert!(
        wait_exit(&mut w1, 40).await.success(),
        "a member leaving on SIGTERM drains and exits 0"
    );
    let tally = producer.await.unwrap();
    // The remaining members catch up (tansu's group coordinator can wedge when a new
    // member joins after such churn, so the check happens while they still run).
    let ends = end_offsets(&topic, 4);
    eventually(120, "the remaining members to catch up", || {
        committed(&group, &topic, 4) == ends
    })
    .await;
    sigterm(&w2);
    sigterm(&w3);
    assert!(wait_exit(&mut w2, 40).await.success());
    assert!(wait_exit(&mut w3, 40).await.success());
    audit_clean(&topic, &prefix, &group, &tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_stalls_without_loss_and_readiness_follows_it() {
    let (_g, topic, prefix, group) = setup("cs");
    let producer = produce_in_background(&topic, 150_000, 10_000, 13).await;
    let mut w = spawn_writer(
        &topic,
        &prefix,
        &group,
        &[],
        &["--max-buffer-bytes", "64MiB"],
        &format!("{topic}-w"),
    );
    let port = w.admin.unwrap();
    first_commit(&group, &topic).await;
    eventually(20, "ready", || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    })
    .await;

    stack("stop-s3");
    let at_outage = committed(&group, &topic, 4);
    eventually(20, "/readyz to report S3 down", || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 503)
    })
    .await;
    eventually(10, "/healthz to stay 200 while stalled", || {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    })
    .await;
    // The outage lasts 20 s; sample memory meanwhile.
    let mut peak = 0;
    let outage_end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < outage_end {
        peak = peak.max(rss_mb(w.child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        committed(&group, &topic, 4),
        at_outage,
        "offsets do not move while S3 is down"
    );
    assert!(
        peak < 300,
        "writer RSS stayed bounded during the outage: {peak} MB"
    );
    stack("start-s3");
    eventually(30, "/readyz to recover", || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    })
    .await;
    eventually(60, "commits to resume", || {
        committed(&group, &topic, 4).values().sum::<i64>() > at_outage.values().sum::<i64>()
    })
    .await;
    let tally = producer.await.unwrap();
    // /metrics after catch-up: everything produced is written and the lag is 0.
    let ends = end_offsets(&topic, 4);
    eventually(60, "catch-up", || committed(&group, &topic, 4) == ends).await;
    // Gauges (lag, per-topic counts) are refreshed once a second by the consume loop,
    // so poll until the report that follows catch-up is visible.
    let metric_in = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let mut metrics = String::new();
    eventually(20, "/metrics to show lag 0 after catch-up", || {
        http_get(port, "/metrics").is_some_and(|(_, m)| {
            let settled = m.contains("lakewriter_consumer_lag{")
                && metric_in(&m, "lakewriter_consumer_lag{") == 0.0;
            metrics = m;
            settled
        })
    })
    .await;
    let metric = |name: &str| metric_in(&metrics, name);
    assert_eq!(
        metric("lakewriter_events_written_total") as u64,
        tally.good,
        "{metrics}"
    );
    assert_eq!(
        metric("lakewriter_dead_letters_total") as u64,
        tally.malformed
    );
    assert_eq!(metric("lakewriter_consumer_lag{"), 0.0, "{metrics}");
    assert!(
        metric("lakewriter_upload_retries_total") > 0.0,
        "uploads were retried during the outage: {metrics}"
    );
    sigterm(&w);
    assert!(wait_exit(&mut w, 40).await.success());
    settle_and_audit(&topic, &prefix, &group, &tally).await;
}

fn stopped(w: &Writer) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", w.child.id()))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

fn log_has(log: &str, needle: &str) -> bool {
    std::fs::read_to_string(std::env::temp_dir().join(format!("{log}.log")))
        .is_ok_and(|t| t.contains(needle))
}

/// The fenced-member case: a member paused past its session timeout halfway through a
/// cycle's uploads. The group gives its partitions to another member, which rolls
/// the cycle back and re-reads it; when the paused member wakes, its remaining
/// uploads land and its commit must not: it removes what it wrote instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_fenced_mid_upload_leaves_no_duplicates() {
    fenced_mid_upload("cf", None).await;
}

/// The fenced-member case with a compactor merging beside both members. The
/// late files `A` uploads after waking are in no recovery record (`B` removed
/// `A`'s) until `A` removes them a moment later: `--min-age` is what keeps
/// them out of a merge, which would otherwise keep their rows twice after `A`
/// deletes its own files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_fenced_mid_upload_beside_a_compactor_leaves_no_duplicates() {
    fenced_mid_upload("cfc", Some("10s")).await;
}

async fn fenced_mid_upload(base: &str, compact_min_age: Option<&str>) {
    let (_g, topic, prefix, group) = setup(base);
    let compactor = compact_min_age.map(|age| {
        compact_cmd(&prefix, &["--interval", "1s", "--min-age", age])
            .spawn()
            .unwrap()
    });
    let first = produce_now(&topic, 30_000, 15).await;
    let a_log = format!("{topic}-a");
    let mut a = spawn_writer(
        &topic,
        &prefix,
        &group,
        &[("LAKEWRITER_FAULT", "mid_upload:2:stop")],
        &[],
        &a_log,
    );
    // A's first cycle takes the whole backlog; the second wave is its second cycle.
    first_commit(&group, &topic).await;
    let second = produce_now(&topic, 30_000, 16).await;
    let tally = both(&first, &second);
    eventually(
        90,
        "A to stop itself halfway through its second cycle",
        || stopped(&a),
    )
    .await;
    let at_stop = committed(&group, &topic, 4);
    // B joins; once A's session timeout (6 s) has passed the group gives B every partition
    // (tansu only drops A when a join finds it expired: spawn_assigned retries).
    let mut b = spawn_assigned(&topic, &prefix, &group, &[], &[], &format!("{topic}-b")).await;
    let ends = end_offsets(&topic, 4);
    eventually(120, "B to take over and catch up alone", || {
        committed(&group, &topic, 4) == ends
    })
    .await;
    assert_ne!(at_stop, ends, "A stopped before the end of the stream");
    // A wakes up: the second half of its uploads lands, then it finds itself fenced.
    let _ = Command::new("kill")
        .args(["-CONT", &a.child.id().to_string()])
        .status();
    eventually(60, "A to notice it was fenced and remove its flush", || {
        log_has(&a_log, "fenced out of the group")
    })
    .await;
    assert_eq!(
        committed(&group, &topic, 4),
        ends,
        "the fenced member did not move the group's offsets"
    );
    sigterm(&a);
    sigterm(&b);
    assert!(wait_exit(&mut a, 40).await.success());
    assert!(wait_exit(&mut b, 40).await.success());
    println!(
        "fault schedule: A stopped mid-upload in cycle 2 at {at_stop:?}; B caught up to {ends:?}; A continued"
    );
    if let Some(c) = compactor {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("compactor beside the members: {stdout}");
        assert!(
            !stdout.contains("compaction: 0 merges"),
            "the compactor merged while the members ran: {stdout}"
        );
        let last = compact_cmd(&prefix, &["--once"]).output().unwrap();
        assert!(
            last.status.success(),
            "{}",
            String::from_utf8_lossy(&last.stderr)
        );
    }
    audit_clean(&topic, &prefix, &group, &tally).await;
}

/// A member's flush of files its partitions share is held halfway through its
/// upload (librdkafka's threads keep the member in the group) while a second
/// member joins, so partitions are taken from it before the upload completes.
/// Whichever way the group settles it (the held member's commit lands before it
/// gives partitions up, or the member is fenced and the new owner rolls the
/// shared files back), every event is in the lake once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_taken_while_their_shared_files_upload_lose_and_duplicate_nothing() {
    let (_g, topic, prefix, group) = setup("cr");
    let producer = produce_in_background(&topic, 80_000, 10_000, 19).await;
    let release = std::env::temp_dir().join(format!("{topic}-release"));
    let release_env = release.to_string_lossy().to_string();
    let a_log = format!("{topic}-a");
    let mut a = spawn_writer(
        &topic,
        &prefix,
        &group,
        &[
            ("LAKEWRITER_FAULT", "mid_upload:3:hold"),
            ("LAKEWRITER_FAULT_RELEASE", &release_env),
        ],
        &["--kafka-opt", "max.poll.interval.ms=20000"],
        &a_log,
    );
    first_commit(&group, &topic).await;
    eventually(
        60,
        "A to hold halfway through the upload of its third flush",
        || {
            log_has(
                &a_log,
                "injected fault mid_upload in flush cycle 3: holding",
            )
        },
    )
    .await;
    let a_files = lake(&prefix)
        .await
        .list(&format!("{topic}/"))
        .await
        .unwrap();
    assert!(
        a_files.iter().any(|k| k.contains("-c3.parquet")),
        "the held flush's files span partitions: {a_files:?}"
    );
    let b_log = format!("{topic}-b");
    let mut b = spawn_writer(&topic, &prefix, &group, &[], &[], &b_log);
    eventually(30, "B to join the group", || log_has(&b_log, "consuming")).await;
    std::fs::write(&release, b"go").unwrap();
    let tally = producer.await.unwrap();
    let ends = end_offsets(&topic, 4);
    eventually(150, "the two members to catch up", || {
        committed(&group, &topic, 4) == ends
    })
    .await;
    let revoked = log_has(&a_log, "partitions revoked");
    let fenced = log_has(&a_log, "fenced out of the group");
    println!("A after the hold: revoked={revoked} fenced={fenced}");
    assert!(
        revoked || fenced,
        "the group took partitions from A during its held flush"
    );
    sigterm(&a);
    sigterm(&b);
    wait_exit(&mut a, 40).await;
    wait_exit(&mut b, 40).await;
    let _ = std::fs::remove_file(&release);
    settle_and_audit(&topic, &prefix, &group, &tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream() {
    let (_g, topic, prefix, group) = setup("cb");
    // The producer is not under test here: produce before and after the restart, while
    // the writer is consuming the backlog through it.
    let first = produce_now(&topic, 60_000, 14).await;
    let mut w = spawn_writer(&topic, &prefix, &group, &[], &[], &format!("{topic}-w"));
    first_commit(&group, &topic).await;
    stack("restart-kafka");
    let second = produce_now(&topic, 40_000, 15).await;
    let tally = both(&first, &second);
    let ends = end_offsets(&topic, 4);
    eventually(120, "catch-up after the restart", || {
        committed(&group, &topic, 4) == ends
    })
    .await;
    sigterm(&w);
    assert!(wait_exit(&mut w, 40).await.success());
    settle_and_audit(&topic, &prefix, &group, &tally).await;
}

/// S3 goes away in the middle of a compaction (an intent is written, merges
/// are under way): the compactor stops with an error, the lake it leaves is
/// exact for the audit, and once S3 is back a run finishes every merge and
/// leaves no intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_compaction_leaves_the_lake_exact() {
    let (_g, topic, prefix, group) = setup("cso");
    let tally = produce_now(&topic, 60_000, 31).await;
    let writer = Command::new(bin())
        .args(["run", "--brokers", &brokers(), "--topics", &topic])
        .args([
            "--group",
            &group,
            "--admin-addr",
            "off",
            "--until-caught-up",
        ])
        .args(["--flush-rows", "200"])
        .args(lake_args(&prefix))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(writer.success());
    let lk = lake(&prefix).await;
    let intents = lakewriter::compact::INTENT_DIR;
    // A small target: many merges, so the outage lands in the middle of them.
    let mut c = compact_cmd(&prefix, &["--once", "--target-file-size", "1MiB"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    while Instant::now() < deadline && c.try_wait().unwrap().is_none() {
        if !lk.list(intents).await.unwrap_or_default().is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the compactor wrote an intent before it finished");
    stack("stop-s3");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the compactor ends while S3 is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stack("start-s3");
    assert!(
        !status.success(),
        "a compactor that lost S3 does not exit 0"
    );
    audit_clean(&topic, &prefix, &group, &tally).await;
    let last = compact_cmd(&prefix, &["--once", "--target-file-size", "1MiB"])
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(lk.list(intents).await.unwrap().is_empty(), "no intent left");
    audit_clean(&topic, &prefix, &group, &tally).await;
}
