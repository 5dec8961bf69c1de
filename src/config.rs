//! Command line and environment → validated, typed configuration.
//!
//! Every flag has a `LAKEWRITER_…` environment variable. S3 credentials and
//! endpoint follow the AWS conventions (`AWS_ACCESS_KEY_ID`, …) and are read
//! by the AWS SDK, so they never appear in `--help` or in logs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::offsets::{default_group, Bound};
use crate::route::{Pointer, RouteConfig, TimeFormat};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--lake {0:?}: expected s3://bucket[/prefix] or file:///dir")]
    Lake(String),
    #[error("--{flag}: {msg}")]
    Invalid { flag: &'static str, msg: String },
}

fn invalid(flag: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        msg: msg.into(),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "lakewriter",
    version,
    about = "Kafka JSON events → Hive-partitioned Parquet on S3, ready for ClickHouse"
)]
pub struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(
        long,
        global = true,
        env = "LAKEWRITER_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start; boxing `RunArgs` would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume topics into the lake (stream mode; --mode backfill for a bounded range).
    Run(RunArgs),
    /// Produce clickstream events (load generator).
    Produce(ProduceArgs),
    /// Embedded demo: in-process Kafka mock cluster → local directory lake.
    Demo(DemoArgs),
    /// Compare the lake with the group's committed offsets: gaps, duplicates, orphans (exit 1 if any).
    Audit(AuditArgs),
    /// Print ClickHouse DDL (explicit columns) for a table from the schemas lakewriter wrote.
    Ddl(DdlArgs),
    /// Merge the lake's small files into large ones sorted by event time (exactly-once, crash-safe).
    Compact(CompactArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    /// The lake: s3://bucket/prefix or file:///path (as for `run`).
    #[arg(long, env = "LAKEWRITER_LAKE")]
    pub lake: String,
    /// Tables to compact (repeatable; env: comma-separated). Default: every table in the lake.
    #[arg(
        long = "table",
        env = "LAKEWRITER_COMPACT_TABLES",
        value_delimiter = ','
    )]
    pub tables: Vec<String>,
    /// Leave files younger than this alone (the writer may still be committing them).
    #[arg(long, env = "LAKEWRITER_COMPACT_MIN_AGE", default_value = "10m")]
    pub min_age: String,
    /// Size of the files compaction writes (a directory smaller than this becomes one file).
    #[arg(
        long,
        env = "LAKEWRITER_COMPACT_TARGET_FILE_SIZE",
        default_value = "256MiB"
    )]
    pub target_file_size: String,
    /// Column the merged files are sorted by (integer or timestamp).
    #[arg(
        long,
        env = "LAKEWRITER_COMPACT_SORT_BY",
        default_value = "_event_time"
    )]
    pub sort_by: String,
    /// Remove merged inputs this long after their outputs are in place (longer than any query).
    #[arg(long, env = "LAKEWRITER_COMPACT_GRACE", default_value = "5m")]
    pub grace: String,
    /// Run until nothing is left to merge and every input past its grace is removed, then exit (a CronJob).
    #[arg(long, env = "LAKEWRITER_COMPACT_ONCE", conflicts_with = "interval")]
    pub once: bool,
    /// Without --once: look for work this often.
    #[arg(long, env = "LAKEWRITER_COMPACT_INTERVAL", default_value = "5m")]
    pub interval: String,
    /// Print what would be merged, change nothing.
    #[arg(long, env = "LAKEWRITER_COMPACT_DRY_RUN")]
    pub dry_run: bool,
    /// Rows per row group of the merged files (a time-range query skips whole row groups).
    #[arg(
        long,
        env = "LAKEWRITER_COMPACT_ROW_GROUP_ROWS",
        default_value_t = 131_072
    )]
    pub row_group_rows: usize,
    /// Parquet compression of the merged files: zstd, zstd(LEVEL), snappy or none.
    #[arg(
        long,
        env = "LAKEWRITER_COMPACT_COMPRESSION",
        default_value = "zstd(3)"
    )]
    pub compression: String,
    /// Scratch directory for the inputs and outputs of a merge (needs about twice --target-file-size).
    #[arg(long, env = "LAKEWRITER_COMPACT_WORK_DIR", default_value_os_t = std::env::temp_dir())]
    pub work_dir: std::path::PathBuf,
    /// Time to live of the lake's compaction lease (one compactor per lake at a time).
    #[arg(long, env = "LAKEWRITER_COMPACT_LEASE", default_value = "60s")]
    pub lease: String,
    /// Admin HTTP address for /healthz, /readyz, /metrics ("off" to disable).
    #[arg(long, env = "LAKEWRITER_ADMIN_ADDR", default_value = "off")]
    pub admin_addr: String,
    #[command(flatten)]
    pub s3: S3Args,
}

/// How objects are addressed and written: `run` and `compact` share them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct S3Args {
    /// Server-side encryption of every object written: AES256, aws:kms or aws:kms:dsse.
    #[arg(long, env = "LAKEWRITER_S3_SSE")]
    pub s3_sse: Option<String>,
    /// KMS key id or ARN for --s3-sse aws:kms (default: the bucket's or the account's key).
    #[arg(long, env = "LAKEWRITER_S3_SSE_KMS_KEY_ID")]
    pub s3_sse_kms_key_id: Option<String>,
    /// Storage class of every object written, e.g. STANDARD, INTELLIGENT_TIERING, STANDARD_IA.
    #[arg(long, env = "LAKEWRITER_S3_STORAGE_CLASS")]
    pub s3_storage_class: Option<String>,
    /// Address S3 as http://endpoint/bucket/key (needed for MinIO and most S3-compatible servers).
    #[arg(long, env = "LAKEWRITER_S3_PATH_STYLE")]
    pub s3_path_style: bool,
}

impl S3Args {
    fn write(&self) -> Result<S3Write, ConfigError> {
        S3Write::parse(
            self.s3_sse.as_deref(),
            self.s3_sse_kms_key_id.as_deref(),
            self.s3_storage_class.as_deref(),
        )
    }
}

/// Validated settings of `lakewriter compact`.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    pub lake: LakeUrl,
    pub s3_path_style: bool,
    pub s3_write: S3Write,
    pub tables: Vec<String>,
    pub min_age: Duration,
    pub target_file_size: u64,
    pub sort_by: String,
    pub grace: Duration,
    pub once: bool,
    pub interval: Duration,
    pub dry_run: bool,
    pub row_group_rows: usize,
    pub compression: Compression,
    pub work_dir: std::path::PathBuf,
    pub lease: Duration,
    pub admin_addr: Option<std::net::SocketAddr>,
}

impl CompactArgs {
    pub fn validate(&self) -> Result<CompactConfig, ConfigError> {
        for t in &self.tables {
            validate_table(t)?;
        }
        let target_file_size = parse_bytes("target-file-size", &self.target_file_size)? as u64;
        // One PUT carries a merged file: S3 takes at most 5 GiB per request.
        if !((1 << 20)..=(4 << 30)).contains(&target_file_size) {
            return Err(invalid("target-file-size", "must be between 1MiB and 4GiB"));
        }
        if self.sort_by.is_empty() || self.sort_by.contains('.') {
            return Err(invalid("sort-by", "a top-level column name"));
        }
        let lease = parse_duration("lease", &self.lease)?;
        if lease < Duration::from_secs(2) {
            return Err(invalid("lease", "at least 2s"));
        }
        if !(1_000..=16_777_216).contains(&self.row_group_rows) {
            return Err(invalid("row-group-rows", "between 1000 and 16777216"));
        }
        Ok(CompactConfig {
            lake: LakeUrl::parse(&self.lake)?,
            s3_path_style: self.s3.s3_path_style,
            s3_write: self.s3.write()?,
            tables: self.tables.clone(),
            min_age: parse_duration("min-age", &self.min_age)?,
            target_file_size,
            sort_by: self.sort_by.clone(),
            grace: parse_duration("grace", &self.grace)?,
            once: self.once,
            interval: parse_duration("interval", &self.interval)?,
            dry_run: self.dry_run,
            row_group_rows: self.row_group_rows,
            compression: Compression::parse(&self.compression)?,
            work_dir: self.work_dir.clone(),
            lease,
            admin_addr: match self.admin_addr.trim() {
                "" | "off" | "none" => None,
                a => Some(
                    a.parse()
                        .map_err(|e| invalid("admin-addr", format!("{a:?}: {e}")))?,
                ),
            },
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct DdlArgs {
    #[arg(long, env = "LAKEWRITER_LAKE")]
    pub lake: String,
    #[arg(long, env = "LAKEWRITER_TABLE")]
    pub table: String,
    /// ClickHouse database to create the table in.
    #[arg(long, env = "LAKEWRITER_DDL_DATABASE", default_value = "lake")]
    pub database: String,
    /// Read through this named collection (its url = the lake root).
    #[arg(
        long,
        env = "LAKEWRITER_DDL_NAMED_COLLECTION",
        default_value = "lake_s3"
    )]
    pub named_collection: String,
    /// Read from this lake-root URL instead of a named collection (e.g. http://minio:9000/lake/events).
    #[arg(long, env = "LAKEWRITER_DDL_URL")]
    pub url: Option<String>,
    #[arg(long, env = "LAKEWRITER_S3_PATH_STYLE")]
    pub s3_path_style: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[arg(long, env = "LAKEWRITER_BROKERS")]
    pub brokers: String,
    #[arg(
        long,
        env = "LAKEWRITER_TOPICS",
        value_delimiter = ',',
        required = true
    )]
    pub topics: Vec<String>,
    #[arg(long, env = "LAKEWRITER_GROUP", default_value = "lakewriter")]
    pub group: String,
    #[arg(long, env = "LAKEWRITER_LAKE")]
    pub lake: String,
    #[arg(long, env = "LAKEWRITER_TABLE")]
    pub table: Option<String>,
    #[arg(long, env = "LAKEWRITER_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    #[arg(
        long = "kafka-opt",
        env = "LAKEWRITER_KAFKA_OPTS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub kafka_opts: Vec<String>,
}

impl AuditArgs {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        if let Some(t) = &self.table {
            validate_table(t)?;
        }
        Ok(Config {
            brokers: self.brokers.clone(),
            topics: self.topics.clone(),
            group: self.group.clone(),
            lake: LakeUrl::parse(&self.lake)?,
            table: self.table.clone(),
            s3_path_style: self.s3_path_style,
            kafka_opts: parse_kafka_opts(&self.kafka_opts)?,
            ..Config::default()
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Stream,
    Backfill,
}

/// Flags of the stream pipeline, shared by `run` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Table name (the first directory under the lake root). Default: the topic name.
    #[arg(long, env = "LAKEWRITER_TABLE")]
    pub table: Option<String>,
    /// JSON pointer to the event type (the `event_type=` partition).
    #[arg(
        long,
        env = "LAKEWRITER_EVENT_TYPE_POINTER",
        default_value = "/event_type"
    )]
    pub event_type_pointer: String,
    /// JSON pointer to the event time (the `date=` partition). Unset: the Kafka timestamp.
    #[arg(long, env = "LAKEWRITER_EVENT_TIME_POINTER")]
    pub event_time_pointer: Option<String>,
    /// Unit or format of the event time: ms, s, us or rfc3339.
    #[arg(long, env = "LAKEWRITER_EVENT_TIME_FORMAT", default_value = "ms")]
    pub event_time_format: String,
    /// Use the Kafka timestamp when the event time is missing or null (instead of dead-lettering).
    #[arg(long, env = "LAKEWRITER_TIME_FALLBACK_KAFKA")]
    pub time_fallback_kafka: bool,
    /// Flush when one partition's buffer for a directory holds this many rows (also the most rows one file joins across partitions).
    #[arg(long, env = "LAKEWRITER_FLUSH_ROWS", default_value_t = 1_000_000)]
    pub flush_rows: usize,
    /// Flush when one partition's buffer for a directory holds this many bytes of JSON, e.g. 128MiB (also the most one file joins).
    #[arg(long, env = "LAKEWRITER_FLUSH_BYTES", default_value = "128MiB")]
    pub flush_bytes: String,
    /// Flush when the oldest buffered event is this old, even if no more arrive [default: 60s; backfill: 10m].
    #[arg(long, env = "LAKEWRITER_FLUSH_INTERVAL")]
    pub flush_interval: Option<String>,
    /// Cap on all buffered bytes; reaching it forces a flush (backpressure, not growth).
    #[arg(long, env = "LAKEWRITER_MAX_BUFFER_BYTES", default_value = "128MiB")]
    pub max_buffer_bytes: String,
    /// Largest accepted message; bigger ones are dead-lettered.
    #[arg(long, env = "LAKEWRITER_MAX_EVENT_BYTES", default_value = "1MiB")]
    pub max_event_bytes: String,
    /// Distinct event types a table may have; events of a new type beyond it are dead-lettered (each type costs a schema and a file per partition and flush).
    #[arg(long, env = "LAKEWRITER_MAX_EVENT_TYPES", default_value_t = 1000)]
    pub max_event_types: usize,
    /// Parquet compression: zstd, zstd(LEVEL), snappy or none.
    #[arg(long, env = "LAKEWRITER_COMPRESSION", default_value = "zstd(1)")]
    pub compression: String,
    /// Rows per Parquet row group.
    #[arg(long, env = "LAKEWRITER_ROW_GROUP_ROWS", default_value_t = 262_144)]
    pub row_group_rows: usize,
    /// Threads encoding Parquet at each flush [default: CPU cores (cgroup quota included) − 1, at least 1].
    #[arg(long, env = "LAKEWRITER_ENCODE_THREADS")]
    pub encode_threads: Option<usize>,
    /// Extra librdkafka property (repeatable), e.g. security.protocol=SASL_SSL. Env: ';'-separated.
    #[arg(
        long = "kafka-opt",
        env = "LAKEWRITER_KAFKA_OPTS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub kafka_opts: Vec<String>,
    /// librdkafka property whose value is read from a file, KEY=PATH (repeatable), e.g. sasl.password=/etc/kafka-user/password (a mounted Kubernetes or Strimzi secret). Env: ';'-separated.
    #[arg(
        long = "kafka-opt-file",
        env = "LAKEWRITER_KAFKA_OPT_FILES",
        value_delimiter = ';'
    )]
    pub kafka_opt_files: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// How long SIGTERM/Ctrl-C may spend flushing, uploading and committing.
    #[arg(long, env = "LAKEWRITER_SHUTDOWN_TIMEOUT", default_value = "25s")]
    pub shutdown_timeout: String,
    /// Also send every dead letter (JSON, with its reason) to this Kafka topic.
    #[arg(long, env = "LAKEWRITER_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// How long a permanent error (S3 access denied, missing bucket, KMS key; Kafka authorization on commit) may repeat before the run exits with code 6; transient errors are retried without limit.
    #[arg(long, env = "LAKEWRITER_GIVE_UP_AFTER", default_value = "5m")]
    pub give_up_after: String,
    /// Exit (after flushing and committing) once every assigned partition reached its end offset seen at assignment.
    #[arg(long, env = "LAKEWRITER_UNTIL_CAUGHT_UP")]
    pub until_caught_up: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// stream (consumer group, runs until stopped) or backfill (bounded range).
    #[arg(long, env = "LAKEWRITER_MODE", default_value = "stream")]
    pub mode: Mode,
    /// Kafka bootstrap servers, host:port[,host:port].
    #[arg(long, env = "LAKEWRITER_BROKERS")]
    pub brokers: String,
    /// Topics to consume (comma-separated or repeated).
    #[arg(
        long,
        env = "LAKEWRITER_TOPICS",
        value_delimiter = ',',
        required = true
    )]
    pub topics: Vec<String>,
    /// Consumer group id [default: lakewriter; backfill: derived from its arguments].
    #[arg(long, env = "LAKEWRITER_GROUP")]
    pub group: Option<String>,
    /// Lake root: s3://bucket[/prefix] or file:///dir.
    #[arg(long, env = "LAKEWRITER_LAKE")]
    pub lake: String,
    /// Backfill: start of the range (inclusive): earliest, latest, an RFC 3339 time or partition:offset[,…].
    #[arg(long, env = "LAKEWRITER_FROM", default_value = "earliest")]
    pub from: String,
    /// Backfill: end of the range (exclusive) [default: the high-water marks at start].
    #[arg(long, env = "LAKEWRITER_TO", default_value = "latest")]
    pub to: String,
    /// Backfill: only these partitions (comma-separated).
    #[arg(long, env = "LAKEWRITER_PARTITIONS", value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Backfill: time to live of the run's lease on its group (renewed every quarter of it); a run that finds a live lease refuses to start (exit 2), one that finds an expired lease takes over.
    #[arg(long, env = "LAKEWRITER_BACKFILL_LEASE", default_value = "30s")]
    pub backfill_lease: String,
    /// Backfill: print the per-partition offset ranges and event counts, write nothing.
    #[arg(long, env = "LAKEWRITER_DRY_RUN")]
    pub dry_run: bool,
    /// /healthz fails once the pipeline loop has not turned for this long while S3 answers (a stuck process: let Kubernetes restart it); "0" disables.
    #[arg(long, env = "LAKEWRITER_LIVENESS_STALL", default_value = "10m")]
    pub liveness_stall: String,
    /// Admin HTTP address for /healthz, /readyz, /metrics ("off" to disable).
    #[arg(long, env = "LAKEWRITER_ADMIN_ADDR", default_value = "0.0.0.0:9100")]
    pub admin_addr: String,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// A validated backfill range.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillSpec {
    pub from: Bound,
    pub to: Bound,
    pub partitions: Option<Vec<i32>>,
    pub dry_run: bool,
    /// Time to live of the lease on the backfill's group.
    pub lease_ttl: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    #[arg(long, env = "LAKEWRITER_BROKERS")]
    pub brokers: String,
    #[arg(long, env = "LAKEWRITER_PRODUCE_TOPIC", default_value = "clickstream")]
    pub topic: String,
    /// Number of events.
    #[arg(long, env = "LAKEWRITER_PRODUCE_EVENTS", default_value_t = 100_000)]
    pub events: u64,
    /// Events per second; 0 = as fast as possible.
    #[arg(long, env = "LAKEWRITER_PRODUCE_RATE", default_value_t = 0)]
    pub rate: u64,
    /// Partitions to create the topic with (if it does not exist).
    #[arg(long, env = "LAKEWRITER_PRODUCE_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Fraction of messages that are deliberately broken (0.0–1.0).
    #[arg(
        long,
        env = "LAKEWRITER_PRODUCE_MALFORMED_RATIO",
        default_value_t = 0.0
    )]
    pub malformed_ratio: f64,
    /// RNG seed (same seed, same events).
    #[arg(long, env = "LAKEWRITER_PRODUCE_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Event times start here (ms since epoch); default: now minus --days.
    #[arg(long, env = "LAKEWRITER_PRODUCE_START_MS")]
    pub start_ms: Option<i64>,
    /// Spread event times over this many days.
    #[arg(long, env = "LAKEWRITER_PRODUCE_DAYS", default_value_t = 2)]
    pub days: u32,
    /// Extra librdkafka property for the producer (repeatable).
    #[arg(
        long = "kafka-opt",
        env = "LAKEWRITER_KAFKA_OPTS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub kafka_opts: Vec<String>,
    /// Write the producer's tally (counts per date and type) as JSON here.
    #[arg(long, env = "LAKEWRITER_PRODUCE_TALLY")]
    pub tally: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[arg(long, env = "LAKEWRITER_DEMO_EVENTS", default_value_t = 100_000)]
    pub events: u64,
    #[arg(long, env = "LAKEWRITER_DEMO_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Local directory for the lake.
    #[arg(long, env = "LAKEWRITER_DEMO_LAKE", default_value = "./lake")]
    pub lake: PathBuf,
    #[arg(long, env = "LAKEWRITER_DEMO_MALFORMED_RATIO", default_value_t = 0.01)]
    pub malformed_ratio: f64,
}

/// Where the lake lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeUrl {
    S3 { bucket: String, prefix: String },
    Local { root: PathBuf },
}

impl LakeUrl {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty()
                || !bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(ConfigError::Lake(s.into()));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|seg| seg == ".." || seg == ".") {
                return Err(ConfigError::Lake(s.into()));
            }
            Ok(Self::S3 {
                bucket: bucket.into(),
                prefix,
            })
        } else if let Some(rest) = s.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(ConfigError::Lake(s.into()));
            }
            Ok(Self::Local {
                root: PathBuf::from(rest),
            })
        } else {
            Err(ConfigError::Lake(s.into()))
        }
    }
}

impl std::fmt::Display for LakeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Local { root } => write!(f, "file://{}", root.display()),
        }
    }
}

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd(i32),
    Snappy,
    None,
}

impl Compression {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim().to_ascii_lowercase();
        if s == "zstd" {
            return Ok(Self::Zstd(1));
        }
        if let Some(level) = s.strip_prefix("zstd(").and_then(|r| r.strip_suffix(')')) {
            let level: i32 = level
                .parse()
                .map_err(|_| invalid("compression", format!("bad zstd level in {s:?}")))?;
            if !(1..=22).contains(&level) {
                return Err(invalid("compression", "zstd level must be 1..=22"));
            }
            return Ok(Self::Zstd(level));
        }
        match s.as_str() {
            "snappy" => Ok(Self::Snappy),
            "none" | "uncompressed" => Ok(Self::None),
            _ => Err(invalid(
                "compression",
                format!("{s:?}: expected zstd, zstd(N), snappy or none"),
            )),
        }
    }
}

/// One core stays with the consumer thread, which routes and buffers every
/// message (and librdkafka's fetch thread beside it); encoding gets the rest.
/// On two cores, two encoders beside a busy consumer cost 4% more CPU per event
/// than one, at the same catch-up rate (BENCHMARKS.md; commit cd6bcbb).
pub fn default_encode_threads() -> usize {
    encode_threads_for(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn encode_threads_for(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// When to cut files.
#[derive(Debug, Clone)]
pub struct FlushPolicy {
    pub rows: usize,
    pub bytes: usize,
    pub interval: Duration,
    pub max_buffer_bytes: usize,
}

/// A validated configuration of the pipeline; build it with
/// `Config { brokers: …, ..Config::default() }` in tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    pub lake: LakeUrl,
    pub table: Option<String>,
    pub route: RouteConfig,
    pub flush: FlushPolicy,
    pub compression: Compression,
    pub row_group_rows: usize,
    /// Threads encoding a flush cycle's files.
    pub encode_threads: usize,
    pub kafka_opts: Vec<(String, String)>,
    pub s3_path_style: bool,
    /// Encryption and storage class of the objects written.
    pub s3_write: S3Write,
    pub shutdown_timeout: Duration,
    pub until_caught_up: bool,
    pub backfill: Option<BackfillSpec>,
    pub admin_addr: Option<std::net::SocketAddr>,
    pub dlq_topic: Option<String>,
    pub max_event_types: usize,
    /// How long a permanent error may repeat before the run gives up.
    pub give_up_after: Duration,
    /// See `--liveness-stall` (zero: never).
    pub liveness_stall: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Stream,
            brokers: "localhost:9092".into(),
            topics: vec![],
            group: "lakewriter".into(),
            lake: LakeUrl::Local {
                root: PathBuf::from("./lake"),
            },
            table: None,
            route: RouteConfig::default(),
            flush: FlushPolicy {
                rows: 1_000_000,
                bytes: 128 << 20,
                interval: Duration::from_secs(60),
                max_buffer_bytes: 128 << 20,
            },
            compression: Compression::Zstd(1),
            row_group_rows: 262_144,
            encode_threads: default_encode_threads(),
            kafka_opts: vec![],
            s3_path_style: false,
            s3_write: S3Write::default(),
            shutdown_timeout: Duration::from_secs(25),
            until_caught_up: false,
            backfill: None,
            admin_addr: None,
            dlq_topic: None,
            max_event_types: 1000,
            give_up_after: Duration::from_secs(300),
            liveness_stall: Duration::from_secs(600),
        }
    }
}

pub fn parse_bytes(flag: &'static str, s: &str) -> Result<usize, ConfigError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| invalid(flag, format!("{s:?} is not a size like 64MiB")))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(invalid(flag, format!("unknown size unit {u:?}"))),
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(flag, "size overflows"))
}

pub fn parse_duration(flag: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| invalid(flag, format!("{s:?}: {e}")))
}

pub fn parse_kafka_opts(opts: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    opts.iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| {
            let (k, v) = o.split_once('=').ok_or_else(|| {
                invalid("kafka-opt", format!("{:?} is not key=value", redact_opt(o)))
            })?;
            let k = k.trim();
            if k.is_empty() {
                return Err(invalid("kafka-opt", "empty key"));
            }
            // These are lakewriter's own: overriding them would break the offset protocol.
            if matches!(
                k,
                "enable.auto.commit"
                    | "enable.auto.offset.store"
                    | "group.id"
                    | "bootstrap.servers"
                    // Aborted transactions' records must never reach the lake.
                    | "isolation.level"
                    // Where a group without offsets starts is part of the recovery rule.
                    | "auto.offset.reset"
            ) {
                return Err(invalid(
                    "kafka-opt",
                    format!("{k} is managed by lakewriter"),
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `KEY=PATH` pairs: the property's value is the file's content (surrounding
/// whitespace trimmed), so a mounted secret needs no string surgery.
pub fn read_kafka_opt_files(pairs: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let (k, path) = pair
            .split_once('=')
            .ok_or_else(|| invalid("kafka-opt-file", format!("{pair:?} is not KEY=PATH")))?;
        let value = std::fs::read_to_string(path.trim()).map_err(|e| {
            invalid(
                "kafka-opt-file",
                format!("{}: cannot read {}: {e}", k.trim(), path.trim()),
            )
        })?;
        out.push(format!("{}={}", k.trim(), value.trim()));
    }
    // The same rules as --kafka-opt (lakewriter's own properties are refused).
    parse_kafka_opts(&out).map_err(|e| match e {
        ConfigError::Invalid { msg, .. } => invalid("kafka-opt-file", msg),
        other => other,
    })
}

/// Server-side encryption and storage class for the objects lakewriter writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Write {
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<String>,
}

impl S3Write {
    pub fn parse(
        sse: Option<&str>,
        kms_key_id: Option<&str>,
        storage_class: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let nonempty =
            |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
        let w = S3Write {
            sse: nonempty(sse),
            kms_key_id: nonempty(kms_key_id),
            storage_class: nonempty(storage_class),
        };
        if let Some(s) = &w.sse {
            if !matches!(s.as_str(), "AES256" | "aws:kms" | "aws:kms:dsse") {
                return Err(invalid(
                    "s3-sse",
                    format!("{s:?}: expected AES256, aws:kms or aws:kms:dsse"),
                ));
            }
        }
        if w.kms_key_id.is_some() && !w.sse.as_deref().is_some_and(|s| s.starts_with("aws:kms")) {
            return Err(invalid(
                "s3-sse-kms-key-id",
                "needs --s3-sse aws:kms (or aws:kms:dsse)",
            ));
        }
        if let Some(c) = &w.storage_class {
            if !c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_') {
                return Err(invalid(
                    "s3-storage-class",
                    format!("{c:?}: expected a name like STANDARD or INTELLIGENT_TIERING"),
                ));
            }
        }
        Ok(w)
    }
}

/// Property names whose values must never be printed.
pub fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k.ends_with(".key.pem")
        || k.contains("token")
        // sasl.oauthbearer.config carries client secrets as key=value pairs.
        || k.contains("oauthbearer.config")
}

fn redact_opt(o: &str) -> String {
    match o.split_once('=') {
        Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
        _ => o.to_string(),
    }
}

/// Table names become a directory: keep them to a safe alphabet.
pub fn validate_table(name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || name.starts_with('_')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "table",
            format!("{name:?}: use letters, digits, '-', '_', '.' (not starting with '.' or '_')"),
        ));
    }
    Ok(())
}

impl PipelineArgs {
    /// Validate into `Config` (brokers/topics/lake filled by the caller).
    pub fn apply(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        if let Some(t) = &self.table {
            validate_table(t)?;
        }
        cfg.table = self.table.clone();
        cfg.route = RouteConfig {
            event_type: Pointer::parse(&self.event_type_pointer)
                .map_err(|m| invalid("event-type-pointer", m))?,
            event_time: self
                .event_time_pointer
                .as_deref()
                .map(Pointer::parse)
                .transpose()
                .map_err(|m| invalid("event-time-pointer", m))?,
            time_format: self
                .event_time_format
                .parse::<TimeFormat>()
                .map_err(|m| invalid("event-time-format", m))?,
            time_fallback_kafka: self.time_fallback_kafka,
            max_event_bytes: parse_bytes("max-event-bytes", &self.max_event_bytes)?,
        };
        cfg.flush = FlushPolicy {
            rows: self.flush_rows,
            bytes: parse_bytes("flush-bytes", &self.flush_bytes)?,
            interval: match &self.flush_interval {
                Some(i) => parse_duration("flush-interval", i)?,
                // Backfills want big files: cut by size, not by time.
                None if cfg.mode == Mode::Backfill => Duration::from_secs(600),
                None => Duration::from_secs(60),
            },
            max_buffer_bytes: parse_bytes("max-buffer-bytes", &self.max_buffer_bytes)?,
        };
        if cfg.flush.rows == 0 {
            return Err(invalid("flush-rows", "must be > 0"));
        }
        if cfg.flush.bytes == 0 || cfg.flush.max_buffer_bytes == 0 {
            return Err(invalid("flush-bytes", "sizes must be > 0"));
        }
        if cfg.flush.interval.is_zero() {
            return Err(invalid("flush-interval", "must be > 0"));
        }
        // A file's buffer addresses its rows with 32-bit positions; it can hold up
        // to its limit plus one last event.
        let per_file = cfg.flush.bytes.min(cfg.flush.max_buffer_bytes);
        if per_file.saturating_add(cfg.route.max_event_bytes) > u32::MAX as usize {
            return Err(invalid(
                "flush-bytes",
                "one file's buffer (the smaller of --flush-bytes and --max-buffer-bytes, plus --max-event-bytes) must stay under 4 GiB",
            ));
        }
        if self.max_event_types == 0 {
            return Err(invalid("max-event-types", "must be > 0"));
        }
        cfg.max_event_types = self.max_event_types;
        cfg.give_up_after = parse_duration("give-up-after", &self.give_up_after)?;
        if self.row_group_rows == 0 {
            return Err(invalid("row-group-rows", "must be > 0"));
        }
        cfg.compression = Compression::parse(&self.compression)?;
        cfg.row_group_rows = self.row_group_rows;
        cfg.encode_threads = match self.encode_threads {
            Some(0) => return Err(invalid("encode-threads", "must be > 0")),
            Some(n) => n,
            None => default_encode_threads(),
        };
        cfg.kafka_opts = parse_kafka_opts(&self.kafka_opts)?;
        cfg.kafka_opts
            .extend(read_kafka_opt_files(&self.kafka_opt_files)?);
        cfg.s3_write = self.s3.write()?;
        cfg.s3_path_style = self.s3.s3_path_style;
        cfg.shutdown_timeout = parse_duration("shutdown-timeout", &self.shutdown_timeout)?;
        cfg.until_caught_up = self.until_caught_up;
        cfg.dlq_topic = self.dlq_topic.clone().filter(|t| !t.trim().is_empty());
        Ok(())
    }
}

impl RunArgs {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            mode: self.mode,
            ..Config::default()
        };
        if self.brokers.trim().is_empty() {
            return Err(invalid("brokers", "empty"));
        }
        cfg.brokers = self.brokers.trim().to_string();
        cfg.topics = self
            .topics
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if cfg.topics.is_empty() {
            return Err(invalid("topics", "at least one topic is required"));
        }
        for t in &cfg.topics {
            if t.len() > 249
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    "topics",
                    format!("{t:?} is not a valid Kafka topic name"),
                ));
            }
        }
        cfg.lake = LakeUrl::parse(&self.lake)?;
        self.pipeline.apply(&mut cfg)?;
        cfg.liveness_stall = match self.liveness_stall.trim() {
            "0" => Duration::ZERO,
            s => parse_duration("liveness-stall", s)?,
        };
        cfg.admin_addr = match self.admin_addr.trim() {
            "" | "off" | "none" => None,
            a => Some(
                a.parse()
                    .map_err(|e| invalid("admin-addr", format!("{a:?}: {e}")))?,
            ),
        };
        if cfg.mode == Mode::Backfill {
            let from: Bound = self.from.parse().map_err(|m| invalid("from", m))?;
            let to: Bound = self.to.parse().map_err(|m| invalid("to", m))?;
            if let (Bound::Time(a), Bound::Time(b)) = (&from, &to) {
                if a >= b {
                    return Err(invalid("to", "must be after --from"));
                }
            }
            if (matches!(from, Bound::Offsets(_)) || matches!(to, Bound::Offsets(_)))
                && cfg.topics.len() != 1
            {
                return Err(invalid(
                    "from",
                    "partition:offset bounds need exactly one topic",
                ));
            }
            let parts: Vec<String> = self.partitions.iter().map(|p| p.to_string()).collect();
            cfg.group = match &self.group {
                Some(g) => g.clone(),
                None => default_group(
                    &cfg.topics,
                    &self.from,
                    &self.to,
                    &parts.join(","),
                    cfg.table.as_deref().unwrap_or(""),
                    &cfg.lake.to_string(),
                ),
            };
            cfg.backfill = Some(BackfillSpec {
                from,
                to,
                partitions: (!self.partitions.is_empty()).then(|| self.partitions.clone()),
                dry_run: self.dry_run,
                lease_ttl: {
                    let t = parse_duration("backfill-lease", &self.backfill_lease)?;
                    if t < Duration::from_secs(1) {
                        return Err(invalid("backfill-lease", "must be at least 1s"));
                    }
                    t
                },
            });
            cfg.until_caught_up = true;
        } else {
            if self.dry_run
                || !self.partitions.is_empty()
                || self.from != "earliest"
                || self.to != "latest"
            {
                return Err(invalid(
                    "mode",
                    "--from, --to, --partitions and --dry-run need --mode backfill",
                ));
            }
            cfg.group = self.group.clone().unwrap_or_else(|| "lakewriter".into());
        }
        if cfg.group.trim().is_empty() {
            return Err(invalid("group", "empty"));
        }
        if cfg.table.is_none() {
            for t in &cfg.topics {
                validate_table(t).map_err(|_| {
                    invalid(
                        "table",
                        format!("topic {t:?} cannot be a table name; set --table"),
                    )
                })?;
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_of_every_subcommand_has_an_env_var() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            for a in sub.get_arguments() {
                let id = a.get_id().as_str();
                if a.get_long().is_some()
                    && a.get_env().is_none()
                    && !["help", "version"].contains(&id)
                {
                    missing.push(format!(
                        "{} --{}",
                        sub.get_name(),
                        a.get_long().unwrap_or(id)
                    ));
                }
            }
        }
        assert!(missing.is_empty(), "flags without an env var: {missing:?}");
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(r) => r.validate().map_err(|e| e.to_string()),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn validates_a_full_command_line() {
        let c = parse(&[
            "lakewriter",
            "run",
            "--brokers",
            "k:9092",
            "--topics",
            "a,b",
            "--lake",
            "s3://bkt/some/prefix/",
            "--event-type-pointer",
            "/event_params/event_type",
            "--event-time-pointer",
            "/event_timestamp_ms/ts_ms",
            "--flush-bytes",
            "64MiB",
            "--flush-interval",
            "5s",
            "--kafka-opt",
            "security.protocol=SASL_SSL",
            "--compression",
            "zstd(3)",
            "--encode-threads",
            "3",
        ])
        .unwrap();
        assert_eq!(c.topics, ["a", "b"]);
        assert_eq!(
            c.lake,
            LakeUrl::S3 {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(c.flush.bytes, 64 << 20);
        assert_eq!(c.flush.interval, Duration::from_secs(5));
        assert_eq!(c.compression, Compression::Zstd(3));
        assert_eq!(c.encode_threads, 3);
        assert_eq!(
            c.kafka_opts,
            [("security.protocol".to_string(), "SASL_SSL".to_string())]
        );
    }

    #[test]
    fn encoders_leave_one_core_to_the_consumer() {
        for (cores, threads) in [(1, 1), (2, 1), (3, 2), (16, 15)] {
            assert_eq!(encode_threads_for(cores), threads, "{cores} cores");
        }
        assert_eq!(Config::default().encode_threads, default_encode_threads());
    }

    #[test]
    fn rejects_bad_values_with_the_flag_name() {
        let base = [
            "lakewriter",
            "run",
            "--brokers",
            "k:9092",
            "--topics",
            "a",
            "--lake",
        ];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v).unwrap_err()
        };
        assert!(with(&["http://x"]).contains("--lake"));
        assert!(with(&["s3://b/../x"]).contains("--lake"));
        assert!(with(&["s3://b", "--flush-bytes", "12XB"]).contains("--flush-bytes"));
        assert!(with(&["s3://b", "--encode-threads", "0"]).contains("--encode-threads"));
        assert!(with(&["s3://b", "--event-type-pointer", "type"]).contains("--event-type-pointer"));
        assert!(with(&["s3://b", "--event-time-format", "days"]).contains("--event-time-format"));
        assert!(with(&["s3://b", "--table", "../etc"]).contains("--table"));
        assert!(with(&["s3://b", "--kafka-opt", "enable.auto.commit=true"])
            .contains("managed by lakewriter"));
        let e = with(&["s3://b", "--kafka-opt", "sasl.password"]);
        assert!(e.contains("--kafka-opt"));
        assert!(with(&["s3://b", "--compression", "lz5"]).contains("--compression"));
        for managed in [
            "isolation.level=read_uncommitted",
            "auto.offset.reset=latest",
        ] {
            assert!(with(&["s3://b", "--kafka-opt", managed]).contains("managed by lakewriter"));
        }
        // Buffers address rows with 32-bit positions.
        let e = with(&[
            "s3://b",
            "--flush-bytes",
            "5GiB",
            "--max-buffer-bytes",
            "6GiB",
        ]);
        assert!(e.contains("--flush-bytes") && e.contains("4 GiB"), "{e}");
        assert!(with(&["s3://b", "--max-event-types", "0"]).contains("--max-event-types"));
        assert!(
            with(&["s3://b", "--mode", "backfill", "--backfill-lease", "10ms"])
                .contains("--backfill-lease")
        );
    }

    #[test]
    fn secrets_come_from_files_and_s3_write_options_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        std::fs::write(&pw, "s3cr3t\n").unwrap();
        let got = read_kafka_opt_files(&[format!("sasl.password={}", pw.display())]).unwrap();
        assert_eq!(got, [("sasl.password".to_string(), "s3cr3t".to_string())]);
        let e = read_kafka_opt_files(&["sasl.password=/nonexistent/x".to_string()]).unwrap_err();
        assert!(e.to_string().contains("--kafka-opt-file"), "{e}");
        let gid = dir.path().join("gid");
        std::fs::write(&gid, "other").unwrap();
        let e = read_kafka_opt_files(&[format!("group.id={}", gid.display())]).unwrap_err();
        assert!(e.to_string().contains("managed by lakewriter"), "{e}");

        let w = S3Write::parse(
            Some("aws:kms"),
            Some("arn:aws:kms:eu-west-1:1:key/k"),
            Some("INTELLIGENT_TIERING"),
        )
        .unwrap();
        assert_eq!(w.sse.as_deref(), Some("aws:kms"));
        assert!(S3Write::parse(Some("kms"), None, None)
            .unwrap_err()
            .to_string()
            .contains("--s3-sse"));
        assert!(S3Write::parse(Some("AES256"), Some("k"), None)
            .unwrap_err()
            .to_string()
            .contains("--s3-sse-kms-key-id"));
        assert!(S3Write::parse(None, None, Some("glacier please"))
            .unwrap_err()
            .to_string()
            .contains("--s3-storage-class"));
        assert_eq!(
            S3Write::parse(Some(""), None, None).unwrap(),
            S3Write::default()
        );
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact_opt("sasl.password=hunter2"), "sasl.password=***");
        assert_eq!(redact_opt("acks=all"), "acks=all");
        assert_eq!(
            redact_opt("sasl.oauthbearer.config=clientSecret=s3cr3t"),
            "sasl.oauthbearer.config=***"
        );
    }
}
