//! The embedded demo: librdkafka's in-process mock cluster, the clickstream
//! generator and the real stream pipeline writing into a local directory.

use std::path::Path;
use std::time::Instant;

use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DemoArgs, LakeUrl};
use crate::produce::{self, ProduceOptions, Tally};
use crate::route::{Pointer, RouteConfig, TimeFormat};
use crate::{Error, Summary};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("mock cluster: {0}")]
    Mock(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Produce(#[from] produce::ProduceError),
    #[error(transparent)]
    Pipeline(#[from] Error),
    #[error("the lake holds {got} rows but {want} good events were produced")]
    Mismatch { got: u64, want: u64 },
}

/// Stays well below the mock broker's 5 MB per-partition log limit (~300 B per event).
const MOCK_EVENTS_PER_PARTITION: u64 = 12_000;

/// Routing for the seeds' clickstream events.
pub fn clickstream_route() -> RouteConfig {
    RouteConfig {
        // Both pointers are constants known to parse.
        event_type: Pointer::parse(produce::TYPE_POINTER).unwrap_or_else(|_| unreachable!()),
        event_time: Some(Pointer::parse(produce::TIME_POINTER).unwrap_or_else(|_| unreachable!())),
        time_format: TimeFormat::Millis,
        ..RouteConfig::default()
    }
}

pub async fn demo(
    args: &DemoArgs,
    shutdown: CancellationToken,
) -> Result<(Tally, Summary), DemoError> {
    // A previous demo's output would mix with this one's: clear it, but only
    // inside a directory that is recognisably a lakewriter lake.
    if args.lake.join("_lakewriter").is_dir() {
        for sub in ["clickstream", "_lakewriter"] {
            let _ = std::fs::remove_dir_all(args.lake.join(sub));
        }
        println!(
            "cleared the previous demo output in {}",
            args.lake.display()
        );
    }
    let mock = MockCluster::new(1)?;
    let brokers = mock.bootstrap_servers();
    let topic = "clickstream";
    // librdkafka's mock broker keeps at most 5 MB per partition and silently
    // deletes older records beyond that: spread the events thin enough.
    let partitions = args
        .partitions
        .max(args.events.div_ceil(MOCK_EVENTS_PER_PARTITION) as i32);
    mock.create_topic(topic, partitions, 1)?;
    println!("mock Kafka cluster at {brokers}; producing {} clickstream events to {topic} ({partitions} partitions)…", args.events);
    let t0 = Instant::now();
    let tally = produce::produce_to_existing(&ProduceOptions {
        brokers: brokers.clone(),
        topic: topic.into(),
        events: args.events,
        partitions,
        malformed_ratio: args.malformed_ratio,
        ..ProduceOptions::default()
    })
    .await?;
    println!(
        "produced {} events ({} malformed) in {:.1}s",
        tally.total,
        tally.malformed,
        t0.elapsed().as_secs_f64()
    );
    let cfg = Config {
        brokers,
        topics: vec![topic.into()],
        group: "lakewriter-demo".into(),
        lake: LakeUrl::Local {
            root: args.lake.clone(),
        },
        route: clickstream_route(),
        until_caught_up: true,
        ..Config::default()
    };
    let summary = crate::run(cfg, shutdown).await?;
    print_summary(&summary, &args.lake);
    if summary.rows_written != tally.good {
        return Err(DemoError::Mismatch {
            got: summary.rows_written,
            want: tally.good,
        });
    }
    drop(mock);
    Ok((tally, summary))
}

pub fn print_summary(s: &Summary, lake: &Path) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!();
    println!(
        "lakewriter wrote {} rows in {} files ({} dead letters) in {:.2}s — {:.0} events/s",
        s.rows_written,
        s.files,
        s.dead_letters,
        secs,
        s.events_in as f64 / secs
    );
    println!(
        "JSON in: {:.1} MB, Parquet out: {:.1} MB ({:.1}x smaller)",
        s.bytes_in as f64 / 1e6,
        s.bytes_out as f64 / 1e6,
        s.bytes_in as f64 / (s.bytes_out.max(1)) as f64
    );
    println!();
    println!("{:>10}  directory", "rows");
    for (dir, rows) in &s.rows_per_dir {
        println!("{rows:>10}  {dir}/");
    }
    let abs = std::fs::canonicalize(lake).unwrap_or_else(|_| lake.to_path_buf());
    println!();
    println!(
        "files are under {}/ (dead letters and schemas under _lakewriter/)",
        abs.display()
    );
    println!("query them with ClickHouse:");
    println!(
        "  clickhouse local --query \"SELECT date, event_type, count() FROM file('{}/*/date=*/event_type=*/*.parquet', Parquet) GROUP BY ALL ORDER BY ALL SETTINGS use_hive_partitioning=1\"",
        abs.display()
    );
}
