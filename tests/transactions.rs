//! What the local test broker cannot show, on librdkafka's mock cluster:
//! transactional producers (tansu answers EndTxn with UNSUPPORTED_FEATURE) and
//! offset commits the group refuses (tansu has no ACLs).
//!
//! The mock cluster accepts the whole transactional API but its EndTxn only
//! answers: it writes no transaction markers and keeps no aborted-transaction
//! index, so a read_committed consumer sees aborted records there as if they
//! were committed. What this file proves is therefore what the mock can show:
//! a stream run, its re-run and a backfill over a transactional producer's
//! output all finish, exactly once. On Apache Kafka the consumer is pinned to
//! `isolation.level=read_committed` (overrides refused, see config tests), so
//! aborted records are never delivered, and a partition whose last offsets
//! are markers counts as read to its end by the consumer's position
//! (`pipeline::State::advance_to_positions`).

mod helpers;

use std::collections::BTreeSet;
use std::time::Duration;

use helpers::*;
use lakewriter::config::{BackfillSpec, Config, LakeUrl, Mode};
use lakewriter::offsets::Bound;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn event(n: i64) -> String {
    format!(
        r#"{{"event_params":{{"event_type":"play","n":{n}}},"event_timestamp_ms":{{"ts_ms":1716000000000}}}}"#
    )
}

/// Three transactions on one partition: 0..5 committed, 5..8 aborted, 8..13
/// committed (on Apache Kafka the log would also hold three markers).
fn produce_transactions(brokers: &str, topic: &str) {
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", "lw-test")
        .create()
        .expect("transactional producer");
    let t = Duration::from_secs(30);
    p.init_transactions(t).expect("init");
    for (range, commit) in [(0..5, true), (5..8, false), (8..13, true)] {
        p.begin_transaction().expect("begin");
        for n in range {
            let body = event(n);
            p.send(BaseRecord::<(), str>::to(topic).payload(&body).partition(0))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        p.flush(t).expect("flush");
        if commit {
            p.commit_transaction(t).expect("commit");
        } else {
            p.abort_transaction(t).expect("abort");
        }
    }
}

fn mock_config(brokers: &str, topic: &str, lake: &std::path::Path) -> Config {
    Config {
        brokers: brokers.to_string(),
        topics: vec![topic.to_string()],
        group: "tx-group".into(),
        lake: LakeUrl::Local {
            root: lake.to_path_buf(),
        },
        route: lakewriter::demo::clickstream_route(),
        until_caught_up: true,
        ..Config::default()
    }
}

async fn run_within(cfg: Config) -> lakewriter::Summary {
    let run = lakewriter::run(cfg, tokio_util::sync::CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("finishes although the log ends in a transaction marker")
        .expect("run ok")
}

async fn lake_ns(lake: &std::path::Path, topic: &str) -> BTreeSet<i64> {
    let lake = lakewriter::upload::Lake::Local {
        root: lake.to_path_buf(),
    };
    let mut ns = BTreeSet::new();
    for key in lake.list(&format!("{topic}/")).await.unwrap() {
        let b = read_parquet(lake.get(&key).await.unwrap().unwrap());
        let p = b.column_by_name("event_params").unwrap();
        let p = arrow::array::AsArray::as_struct(p);
        let n = p.column_by_name("n").unwrap();
        let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(n);
        ns.extend(n.values().iter().copied());
    }
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producers_output_is_written_once_and_every_run_finishes() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let topic = "tx";
    mock.create_topic(topic, 1, 1).expect("topic");
    produce_transactions(&brokers, topic);
    let dir = tempfile::tempdir().unwrap();

    let s = run_within(mock_config(&brokers, topic, dir.path())).await;
    // The mock delivers the aborted 5..8 too (see the module docs).
    assert_eq!((s.rows_written, s.dead_letters), (13, 0), "{s:?}");
    let want: BTreeSet<i64> = (0..13).collect();
    assert_eq!(lake_ns(dir.path(), topic).await, want);

    // Run again: nothing new, and no hang one offset short of the end.
    let again = run_within(mock_config(&brokers, topic, dir.path())).await;
    assert_eq!(again.rows_written, 0);

    // A backfill of the same range into another lake finishes with exit 0 too.
    let bf_dir = tempfile::tempdir().unwrap();
    let bf = Config {
        mode: Mode::Backfill,
        group: "tx-backfill".into(),
        backfill: Some(BackfillSpec {
            from: Bound::Earliest,
            to: Bound::Latest,
            partitions: None,
            dry_run: false,
            lease_ttl: Duration::from_secs(10),
        }),
        ..mock_config(&brokers, topic, bf_dir.path())
    };
    let s = run_within(bf).await;
    assert_eq!(s.rows_written, 13, "{s:?}");
    assert_eq!(lake_ns(bf_dir.path(), topic).await, want);
}

/// Ten events on a new topic of the mock cluster, then a run whose offset
/// commits all fail with `refusal`; returns the run's result and its lake.
async fn run_with_commits_refused(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    refusal: rdkafka::types::RDKafkaRespErr,
) -> (
    Result<lakewriter::Summary, lakewriter::Error>,
    tempfile::TempDir,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::types::RDKafkaApiKey;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,librdkafka=warn"))
        .with_test_writer()
        .try_init();
    let brokers = mock.bootstrap_servers();
    mock.create_topic(topic, 1, 1).expect("topic");
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    for n in 0..10 {
        let body = event(n);
        p.send(
            FutureRecord::<(), str>::to(topic)
                .payload(&body)
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("send");
    }
    mock.request_errors(RDKafkaApiKey::OffsetCommit, &[refusal; 1000]);
    let dir = tempfile::tempdir().unwrap();
    let run = lakewriter::run(
        mock_config(&brokers, topic, dir.path()),
        tokio_util::sync::CancellationToken::new(),
    );
    let res = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("stops instead of retrying forever");
    mock.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    (res, dir)
}

/// A group that refuses this member's commits for lack of authorization (an
/// ACL removed at runtime) is a permanent error: a run whose last flush cannot
/// commit stops with exit code 6 (a long-running writer after
/// `--give-up-after`, not ready meanwhile), never with 0, and the lake ends up
/// with every event once. tansu has no ACLs; the mock cluster answers
/// OffsetCommit with the error instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_for_authorization_stops_the_writer_and_the_next_run_is_exact() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = "acl";
    let (res, dir) = run_with_commits_refused(
        &mock,
        topic,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
    )
    .await;
    match &res {
        Err(e @ lakewriter::Error::Permanent(m)) => {
            assert!(m.contains("offset commit refused"), "{m}");
            assert_eq!(e.exit_code(), 6);
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    // The uploaded flush is kept (its files are all in the lake and the group has
    // no offset), so the next run has nothing to write and the lake holds each once.
    let brokers = mock.bootstrap_servers();
    let s = run_within(mock_config(&brokers, topic, dir.path())).await;
    assert_eq!(s.rows_written, 0, "{s:?}");
    assert_eq!(lake_ns(dir.path(), topic).await, (0..10).collect());
}

/// A final commit that fails for another reason leaves its outcome unknown:
/// the run says so with exit code 3, and the next run keeps the uploaded flush
/// (the group has no offset, the flush's files are all in the lake) without
/// writing its events a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_commit_that_fails_is_not_reported_as_success_and_the_flush_is_kept_once() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let topic = "nocommit";
    let (res, dir) = run_with_commits_refused(
        &mock,
        topic,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE,
    )
    .await;
    match &res {
        Err(e @ lakewriter::Error::Uncommitted(_)) => assert_eq!(e.exit_code(), 3),
        other => panic!("expected an uncommitted final flush, got {other:?}"),
    }
    let brokers = mock.bootstrap_servers();
    let s = run_within(mock_config(&brokers, topic, dir.path())).await;
    assert_eq!(s.rows_written, 0, "{s:?}");
    assert_eq!(lake_ns(dir.path(), topic).await, (0..10).collect());
}

/// A commit that fails mid-run for a flush whose files two partitions share
/// is settled at once: the group holds none of its offsets, so the flush is
/// removed and read again (its partitions could otherwise go to two owners
/// that judge the shared files differently). The run then finishes with every
/// event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_of_shared_files_is_settled_and_the_lake_stays_exact() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let topic = "shared";
    mock.create_topic(topic, 2, 1).expect("topic");
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    for n in 0..40 {
        let body = event(n);
        p.send(
            FutureRecord::<(), str>::to(topic)
                .payload(&body)
                .partition((n % 2) as i32),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("send");
    }
    // The first flush's three commit attempts fail; later ones pass.
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mock_config(&brokers, topic, dir.path());
    // Flush as soon as both partitions have a buffer (each starts with a 4 KiB chunk).
    cfg.flush.max_buffer_bytes = 8 << 10;
    let s = run_within(cfg).await;
    assert_eq!(s.rows_written, 40, "{s:?}");
    // The flushes whose commits failed were settled as not landed and read again.
    assert!(s.events_in > 40, "{s:?}");
    assert_eq!(lake_ns(dir.path(), topic).await, (0..40).collect());
    let lake = lakewriter::upload::Lake::Local {
        root: dir.path().to_path_buf(),
    };
    let files = lake.list(&format!("{topic}/")).await.unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with(".parquet") && f.contains("-c")),
        "a file spans both partitions: {files:?}"
    );
    let mut rows = 0;
    for f in &files {
        let b = read_parquet(lake.get(f).await.unwrap().unwrap());
        rows += b.num_rows();
    }
    assert_eq!(rows, 40, "no row twice: {files:?}");
}
