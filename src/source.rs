//! Source: the Kafka consumer (librdkafka through rdkafka's `BaseConsumer`,
//! polled from the pipeline's own thread: the cheapest way to get messages
//! out of librdkafka) and its rebalance events.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use crate::buffer::Tp;
use crate::config::{is_secret_key, Config};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot reach the brokers at {brokers}: {msg}")]
    Unreachable { brokers: String, msg: String },
    #[error("topic {0:?} does not exist on the brokers")]
    NoSuchTopic(String),
}

/// The consumer's context owns the pipeline state while it runs, so the
/// rebalance callbacks (which librdkafka calls inside `poll`, on the
/// pipeline's own thread) can flush and commit revoked partitions and roll
/// back assigned ones before anything else happens to them.
#[derive(Default)]
pub struct SourceContext {
    pub state: Mutex<Option<crate::pipeline::State>>,
}

impl SourceContext {
    pub fn state(&self) -> std::sync::MutexGuard<'_, Option<crate::pipeline::State>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn tps(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| Tp {
            topic: e.topic().into(),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Some(st) = self.state().as_mut() {
                st.on_revoke(c, &tps(tpl));
            }
        }
    }
    fn post_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if let Some(st) = self.state().as_mut() {
                st.on_assign(c, &tps(tpl));
            }
        }
    }
}

pub type Source = BaseConsumer<SourceContext>;

/// Client settings shared by the consumer and the admin/producer clients.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c.set("client.id", "lakewriter");
    for (k, v) in &cfg.kafka_opts {
        c.set(k, v);
    }
    c
}

/// Build the group consumer. Offsets are never stored or committed
/// automatically: the pipeline commits synchronously after uploads.
pub fn consumer(cfg: &Config) -> Result<Source, SourceError> {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Bound librdkafka's prefetch queue: part of the memory cap.
        .set("queued.max.messages.kbytes", "32768")
        .set("fetch.max.bytes", "16777216")
        .set("session.timeout.ms", "10000")
        // A flush cycle (encode + upload + commit) runs between polls.
        .set("max.poll.interval.ms", "600000");
    // The defaults above are only defaults: apply the user's properties again so they win.
    for (k, v) in &cfg.kafka_opts {
        c.set(k, v);
    }
    let shown: Vec<String> = cfg
        .kafka_opts
        .iter()
        .map(|(k, v)| {
            if is_secret_key(k) {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    tracing::debug!(options = ?shown, "creating Kafka consumer");
    Ok(c.create_with_context(SourceContext::default())?)
}

/// Fail fast when the brokers are unreachable or a topic is missing.
pub fn check(
    consumer: &Source,
    brokers: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<(), SourceError> {
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| SourceError::Unreachable {
            brokers: brokers.to_string(),
            msg: e.to_string(),
        })?;
    for t in topics {
        match md.topics().iter().find(|mt| mt.name() == t) {
            Some(mt) if mt.error().is_none() && !mt.partitions().is_empty() => {}
            _ => return Err(SourceError::NoSuchTopic(t.clone())),
        }
    }
    Ok(())
}

/// Committed offsets of the group for `tps` (`None` where nothing is committed).
pub fn committed(
    consumer: &Source,
    tps: &[Tp],
    timeout: Duration,
) -> Result<Vec<Option<i64>>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for tp in tps {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    let got = consumer.committed_offsets(tpl, timeout)?;
    Ok(tps
        .iter()
        .map(|tp| {
            match got
                .find_partition(&tp.topic, tp.partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            }
        })
        .collect())
}

/// Commit `offsets` (the next offset to read, per partition), synchronously.
pub fn commit(consumer: &Source, offsets: &[(Tp, i64)]) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (tp, o) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
}

/// A commit the group refused for good: this member no longer owns its
/// partitions (fenced, session expired, a rebalance took them), so the offsets
/// certainly did not move. Other failures (timeouts, transport) leave the
/// outcome unknown.
pub fn is_fenced(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::ConsumerCommit(
            C::UnknownMemberId
                | C::IllegalGeneration
                | C::RebalanceInProgress
                | C::FencedInstanceId
                | C::AssignmentLost
        )
    )
}

/// The high watermark librdkafka last saw in a fetch response (no network call).
pub fn cached_high_watermark(consumer: &Source, tp: &Tp) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.topic.as_bytes()).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the out
    // pointers are valid i64s; rd_kafka_get_watermark_offsets only reads local state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
