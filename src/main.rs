//! The `lakewriter` binary: parses flags, sets up logging and signals, runs.

use std::process::ExitCode;

use clap::Parser;
use lakewriter::config::{parse_kafka_opts, Cli, Command, LogFormat, Mode};
use lakewriter::shutdown;
use tokio_util::sync::CancellationToken;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAKEWRITER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// glibc's allocator, tuned for a process whose memory is a bounded set of buffers
/// that fill, get encoded and are freed, cycle after cycle. Explicit `MALLOC_*`
/// variables in the environment win.
///
/// - Arenas: glibc gives threads that allocate concurrently their own arenas (up to 8
///   per core), and memory freed into one arena (the encoder threads') is not reused by
///   another: on a 5,000,000-event backlog that fragmentation alone lifted peak RSS
///   from 238 to 317 MiB. Two arenas keep it near the buffer budget at no measurable
///   CPU cost.
/// - Trimming: by default glibc hands freed memory back to the kernel (large blocks
///   are unmapped, the heap's top is trimmed), so the next cycle's buffers start on
///   fresh pages, each a page fault and a zeroing (page faults were 11% of the
///   consumer thread). Keeping blocks up to 32 MiB on the heap and never trimming
///   lets each cycle reuse the last one's pages. The buffer budget still bounds the
///   peak (230–261 MiB on the 5M backlog, 245 before); RSS just stays near it between
///   bursts instead of shrinking.
///
/// `compact` keeps only the two arenas: a merge allocates and frees hundreds of
/// MB of pages and batches, and what one merge freed must go back to the
/// kernel rather than stay on the heap beside the next merge's peak.
///
/// Figures and commands in BENCHMARKS.md.
fn tune_malloc(compact: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (var, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1 << 30),
    ] {
        if compact && param != libc::M_ARENA_MAX {
            continue;
        }
        if std::env::var_os(var).is_none() {
            // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_malloc(matches!(cli.command, Command::Compact(_)));
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async_main(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main(cli: Cli) -> ExitCode {
    init_logging(cli.log_format);
    let token = CancellationToken::new();
    tokio::spawn(shutdown::signals(token.clone()));
    match real_main(cli.command, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            match e.downcast_ref::<lakewriter::Error>() {
                Some(e) => ExitCode::from(e.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

async fn real_main(cmd: Command, token: CancellationToken) -> anyhow::Result<()> {
    match cmd {
        Command::Run(args) => {
            let cfg = args.validate().map_err(lakewriter::Error::from)?;
            let backfill = cfg.mode == Mode::Backfill;
            let dry_run = cfg.backfill.as_ref().is_some_and(|b| b.dry_run);
            let s = lakewriter::run(cfg, token).await?;
            tracing::info!(
                events = s.events_in,
                rows = s.rows_written,
                dead_letters = s.dead_letters,
                files = s.files,
                bytes_in = s.bytes_in,
                bytes_out = s.bytes_out,
                secs = s.elapsed.as_secs_f64(),
                "stopped after draining"
            );
            if backfill && !dry_run {
                println!(
                    "backfill complete: {} events, {} rows, {} dead letters, {} files, {:.1} MB JSON → {:.1} MB Parquet in {:.1}s",
                    s.events_in, s.rows_written, s.dead_letters, s.files, s.bytes_in as f64 / 1e6, s.bytes_out as f64 / 1e6, s.elapsed.as_secs_f64()
                );
            }
        }
        Command::Produce(a) => {
            let opts = lakewriter::produce::ProduceOptions {
                brokers: a.brokers.clone(),
                topic: a.topic.clone(),
                events: a.events,
                rate: a.rate,
                partitions: a.partitions,
                malformed_ratio: a.malformed_ratio,
                seed: a.seed,
                start_ms: a.start_ms,
                days: a.days,
                kafka_opts: parse_kafka_opts(&a.kafka_opts).map_err(lakewriter::Error::from)?,
            };
            let t0 = std::time::Instant::now();
            let tally = lakewriter::produce::produce(&opts).await?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "produced {} events ({} malformed) to {} in {secs:.1}s ({:.0}/s)",
                tally.total,
                tally.malformed,
                a.topic,
                tally.total as f64 / secs
            );
            if let Some(path) = a.tally {
                std::fs::write(&path, serde_json::to_vec_pretty(&tally)?)?;
            }
        }
        Command::Audit(a) => {
            let cfg = a.validate().map_err(lakewriter::Error::from)?;
            let lake = lakewriter::upload::Lake::connect(&cfg.lake, cfg.s3_path_style).await;
            let report = lakewriter::audit::audit(&cfg, &lake).await?;
            print!("{}", report.render());
            if !report.clean() {
                anyhow::bail!("audit found gaps, duplicates or orphans");
            }
        }
        Command::Ddl(a) => {
            lakewriter::config::validate_table(&a.table).map_err(lakewriter::Error::from)?;
            let url =
                lakewriter::config::LakeUrl::parse(&a.lake).map_err(lakewriter::Error::from)?;
            let lake = lakewriter::upload::Lake::connect(&url, a.s3_path_style).await;
            let schema = lakewriter::ddl::table_schema(&lake, &a.table).await?;
            let source = match a.url {
                Some(u) => lakewriter::ddl::Source::Url(u),
                None => lakewriter::ddl::Source::NamedCollection(a.named_collection),
            };
            print!(
                "{}",
                lakewriter::ddl::render(&schema, &a.database, &a.table, &source)
            );
        }
        Command::Compact(a) => {
            let cfg = a.validate().map_err(lakewriter::Error::from)?;
            let s = lakewriter::compact::run(cfg, token).await?;
            println!(
                "compaction: {} merges, {} files ({:.1} MB) → {} files ({:.1} MB), {} rows; {} inputs removed, {} merges rolled back, {} unreadable inputs left in place, {} directories skipped",
                s.merges, s.files_in, s.bytes_in as f64 / 1e6, s.files_out, s.bytes_out as f64 / 1e6, s.rows, s.inputs_removed, s.rolled_back, s.bad_inputs.len(), s.skipped_dirs.len()
            );
        }
        Command::Demo(a) => {
            lakewriter::demo::demo(&a, token).await?;
        }
    }
    Ok(())
}
