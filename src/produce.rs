//! Load generator: the music-app clickstream of the seeds (8 event types
//! with their weights, 10,000 users), optionally mixed with broken messages.
//! Deterministic for a given seed, so tests can compare with its tally.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::Serialize;

pub const EVENT_TYPES: [(&str, f64); 8] = [
    ("track_playback", 0.35),
    ("pause_track", 0.15),
    ("resume_track", 0.13),
    ("skipping_track_next", 0.12),
    ("skipping_track_prev", 0.07),
    ("adding_track_to_playlist", 0.08),
    ("track_like", 0.06),
    ("track_unlike", 0.04),
];

const COUNTRIES: [&str; 12] = [
    "SE", "US", "DE", "BR", "IN", "JP", "GB", "FR", "RU", "MX", "NG", "AU",
];
const PLATFORMS: [&str; 4] = ["ios", "android", "web", "desktop"];

/// Pointers to use with the generated events.
pub const TYPE_POINTER: &str = "/event_params/event_type";
pub const TIME_POINTER: &str = "/event_timestamp_ms/ts_ms";

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0} messages were not delivered")]
    Undelivered(u64),
    #[error("cannot write the tally: {0}")]
    Tally(String),
}

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub brokers: String,
    pub topic: String,
    pub events: u64,
    pub rate: u64,
    pub partitions: i32,
    pub malformed_ratio: f64,
    pub seed: u64,
    pub start_ms: Option<i64>,
    pub days: u32,
    pub kafka_opts: Vec<(String, String)>,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            topic: "clickstream".into(),
            events: 100_000,
            rate: 0,
            partitions: 4,
            malformed_ratio: 0.0,
            seed: 42,
            start_ms: None,
            days: 2,
            kafka_opts: vec![],
        }
    }
}

/// What was produced: the ground truth a lake is checked against.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub total: u64,
    pub good: u64,
    pub malformed: u64,
    pub bytes: u64,
    /// Good events per "date|event_type".
    pub by_partition: BTreeMap<String, u64>,
    /// Malformed messages per kind.
    pub malformed_kinds: BTreeMap<String, u64>,
    /// One good event, for spot checks.
    pub sample: Option<serde_json::Value>,
    /// Its index in the run (partition = index % partitions).
    pub sample_index: u64,
}

/// One generated message.
pub struct Generated {
    pub payload: Option<Vec<u8>>,
    pub key: String,
    /// `Some((date, type))` for a good event, `None` for a malformed one.
    pub good: Option<(String, String)>,
    pub malformed_kind: Option<&'static str>,
}

/// Deterministic event generator.
pub struct Generator {
    rng: SmallRng,
    users: Vec<String>,
    start_ms: i64,
    span_ms: i64,
    n: u64,
    i: u64,
    malformed_ratio: f64,
}

fn uuid(rng: &mut SmallRng) -> String {
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

impl Generator {
    pub fn new(seed: u64, n: u64, start_ms: i64, days: u32, malformed_ratio: f64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let users = (0..10_000).map(|_| uuid(&mut rng)).collect();
        Self {
            rng,
            users,
            start_ms,
            span_ms: days.max(1) as i64 * 86_400_000,
            n: n.max(1),
            i: 0,
            malformed_ratio,
        }
    }

    pub fn event(&mut self) -> (serde_json::Value, String, String) {
        let r: f64 = self.rng.random();
        let mut acc = 0.0;
        let mut idx = EVENT_TYPES.len() - 1;
        for (i, (_, w)) in EVENT_TYPES.iter().enumerate() {
            acc += w;
            if r < acc {
                idx = i;
                break;
            }
        }
        let (ty, _) = EVENT_TYPES[idx];
        let user = self.users[self.rng.random_range(0..self.users.len())].clone();
        // Times increase through the run with a little jitter, spanning `days` days.
        let base = self.start_ms + (self.i as i128 * self.span_ms as i128 / self.n as i128) as i64;
        let ts_ms = base + self.rng.random_range(0..1000);
        let mut m = serde_json::Map::new();
        m.insert("event_type_id".into(), (idx + 1).into());
        m.insert("event_type".into(), ty.into());
        m.insert("user_id".into(), user.into());
        let platform = PLATFORMS[self.rng.random_range(0..PLATFORMS.len())];
        m.insert(
            "platform_token".into(),
            format!("{platform}-{:08x}", self.rng.random::<u32>()).into(),
        );
        let ip = [
            self.rng.random_range(1..255u8),
            self.rng.random(),
            self.rng.random(),
            self.rng.random_range(1..255u8),
        ];
        m.insert(
            "ipv4".into(),
            format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]).into(),
        );
        m.insert(
            "country".into(),
            COUNTRIES[self.rng.random_range(0..COUNTRIES.len())].into(),
        );
        match ty {
            "track_playback" | "pause_track" | "resume_track" => {
                m.insert("uuid_track".into(), uuid(&mut self.rng).into());
            }
            "skipping_track_next" | "skipping_track_prev" => {
                m.insert("uuid_track_prev".into(), uuid(&mut self.rng).into());
                m.insert("uuid_track_current".into(), uuid(&mut self.rng).into());
            }
            "adding_track_to_playlist" => {
                m.insert("uuid_track".into(), uuid(&mut self.rng).into());
                m.insert("uuid_playlist".into(), uuid(&mut self.rng).into());
            }
            _ => {
                m.insert("uuid_track".into(), uuid(&mut self.rng).into());
                m.insert("uuid_track_like_status".into(), (ty == "track_like").into());
            }
        }
        let date = DateTime::<Utc>::from_timestamp_millis(ts_ms)
            .map(|d| d.date_naive().to_string())
            .unwrap_or_default();
        let ev = serde_json::json!({
            "event_params": m,
            "event_timestamp_ms": {"ts": ts_ms / 1000, "ts_ms": ts_ms},
        });
        (ev, date, ty.to_string())
    }

    pub fn next_message(&mut self) -> Generated {
        let malformed =
            self.malformed_ratio > 0.0 && self.rng.random::<f64>() < self.malformed_ratio;
        let (ev, date, ty) = self.event();
        self.i += 1;
        let key = ev["event_params"]["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !malformed {
            return Generated {
                payload: Some(ev.to_string().into_bytes()),
                key,
                good: Some((date, ty)),
                malformed_kind: None,
            };
        }
        let text = ev.to_string();
        let kinds = [
            "truncated_json",
            "not_an_object",
            "missing_type",
            "bad_time",
            "invalid_utf8",
            "empty",
        ];
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        let payload = match kind {
            "truncated_json" => Some(text.as_bytes()[..text.len() / 2].to_vec()),
            "not_an_object" => Some(format!("[{text}]").into_bytes()),
            "missing_type" => {
                let mut e = ev.clone();
                if let Some(p) = e["event_params"].as_object_mut() {
                    p.remove("event_type");
                }
                Some(e.to_string().into_bytes())
            }
            "bad_time" => {
                let mut e = ev.clone();
                e["event_timestamp_ms"]["ts_ms"] = "yesterday".into();
                Some(e.to_string().into_bytes())
            }
            "invalid_utf8" => {
                let mut b = text.into_bytes();
                b.insert(10, 0xff);
                Some(b)
            }
            // A zero-length value: a message, not a tombstone (no value at all).
            _ => Some(Vec::new()),
        };
        Generated {
            payload,
            key,
            good: None,
            malformed_kind: Some(kind),
        }
    }
}

/// Counts failed deliveries (shared with the dead-letter topic sink).
#[derive(Default)]
pub struct CountingContext {
    pub failed: std::sync::atomic::AtomicU64,
}

impl ClientContext for CountingContext {}
impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn client(brokers: &str, opts: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in opts {
        c.set(k, v);
    }
    c
}

/// Create `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(
    brokers: &str,
    opts: &[(String, String)],
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client(brokers, opts).create()?;
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(topic = %t, "create topic failed"))
            }
        }
    }
    Ok(())
}

/// Produce clickstream events and return the tally.
pub async fn produce(o: &ProduceOptions) -> Result<Tally, ProduceError> {
    ensure_topic(&o.brokers, &o.kafka_opts, &o.topic, o.partitions).await?;
    produce_to_existing(o).await
}

/// Produce into a topic that already exists (e.g. on librdkafka's mock cluster).
pub async fn produce_to_existing(o: &ProduceOptions) -> Result<Tally, ProduceError> {
    let o = o.clone();
    tokio::task::spawn_blocking(move || produce_blocking(&o))
        .await
        .map_err(|e| ProduceError::Tally(e.to_string()))?
}

fn produce_blocking(o: &ProduceOptions) -> Result<Tally, ProduceError> {
    let mut cfg = client(&o.brokers, &[]);
    cfg.set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    for (k, v) in &o.kafka_opts {
        cfg.set(k, v);
    }
    let producer: BaseProducer<CountingContext> = cfg.create_with_context(CountingContext {
        failed: Default::default(),
    })?;
    let start_ms = o
        .start_ms
        .unwrap_or_else(|| Utc::now().timestamp_millis() - o.days.max(1) as i64 * 86_400_000);
    let mut g = Generator::new(o.seed, o.events, start_ms, o.days, o.malformed_ratio);
    let mut tally = Tally::default();
    let started = Instant::now();
    let partitions = o.partitions.max(1);
    for i in 0..o.events {
        if o.rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / o.rate as f64);
            let el = started.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        let m = g.next_message();
        tally.total += 1;
        match (&m.good, m.malformed_kind) {
            (Some((date, ty)), _) => {
                tally.good += 1;
                *tally
                    .by_partition
                    .entry(format!("{date}|{ty}"))
                    .or_default() += 1;
                if tally.sample.is_none() {
                    tally.sample_index = i;
                    tally.sample = m
                        .payload
                        .as_deref()
                        .and_then(|p| serde_json::from_slice(p).ok());
                }
            }
            (None, Some(kind)) => {
                tally.malformed += 1;
                *tally.malformed_kinds.entry(kind.to_string()).or_default() += 1;
            }
            _ => {}
        }
        tally.bytes += m.payload.as_ref().map_or(0, |p| p.len() as u64);
        let part = (i % partitions as u64) as i32;
        loop {
            let mut rec = BaseRecord::to(&o.topic).key(m.key.as_str()).partition(part);
            if let Some(p) = &m.payload {
                rec = rec.payload(p.as_slice());
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(ProduceError::Undelivered(failed));
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{route, Pointer, RouteConfig, TimeFormat};

    #[test]
    fn generator_is_deterministic_and_routable() {
        let cfg = RouteConfig {
            event_type: Pointer::parse(TYPE_POINTER).unwrap(),
            event_time: Some(Pointer::parse(TIME_POINTER).unwrap()),
            time_format: TimeFormat::Millis,
            ..RouteConfig::default()
        };
        let mut a = Generator::new(7, 10_000, 1_716_000_000_000, 2, 0.05);
        let mut b = Generator::new(7, 10_000, 1_716_000_000_000, 2, 0.05);
        let (mut good, mut bad) = (0, 0);
        let mut types = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let x = a.next_message();
            let y = b.next_message();
            assert_eq!(x.payload, y.payload);
            let routed = route(&cfg, x.payload.as_deref().unwrap_or(&[]), None);
            match x.good {
                Some((date, ty)) => {
                    let r = routed.expect("good events route");
                    assert_eq!(
                        (r.date.to_string(), r.event_type.to_string()),
                        (date, ty.clone())
                    );
                    types.insert(ty);
                    good += 1;
                }
                None => {
                    assert!(
                        routed.is_err(),
                        "malformed {:?} must not route",
                        x.malformed_kind
                    );
                    bad += 1;
                }
            }
        }
        assert_eq!(types.len(), 8);
        assert!((300..700).contains(&bad), "{bad}");
        assert_eq!(good + bad, 10_000);
    }
}
