//! Source: the Kafka consumer (librdkafka through rdkafka's `BaseConsumer`),
//! its rebalance events, and the [`Feed`] that takes the assigned partitions'
//! messages out of librdkafka in batches, on the pipeline's own thread.

use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use crate::config::{is_secret_key, Config};
use crate::offsets::Tp;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot reach the brokers at {brokers}: {msg}")]
    Unreachable { brokers: String, msg: String },
    #[error("topic {0:?} does not exist on the brokers")]
    NoSuchTopic(String),
}

/// What a consumer's context owns while it runs and calls when partitions move:
/// the pipeline's state. A trait so that this module does not depend on the
/// pipeline, which depends on it.
pub trait OnRebalance: Send + Sized + 'static {
    /// Partitions are about to be taken away (called before librdkafka revokes them).
    fn on_revoke(&mut self, consumer: &Source<Self>, tps: &[Tp]);
    /// Partitions were assigned (called after librdkafka assigned them).
    fn on_assign(&mut self, consumer: &Source<Self>, tps: &[Tp]);
}

/// A consumer that owns no state (the audit, tests): nothing to flush or roll back.
impl OnRebalance for () {
    fn on_revoke(&mut self, _: &Source<Self>, _: &[Tp]) {}
    fn on_assign(&mut self, _: &Source<Self>, _: &[Tp]) {}
}

/// The consumer's context owns the pipeline state while it runs, so the
/// rebalance callbacks (which librdkafka calls inside `poll`, on the
/// pipeline's own thread) can flush and commit revoked partitions and roll
/// back assigned ones before anything else happens to them.
pub struct SourceContext<S> {
    pub state: Mutex<Option<S>>,
    /// The [`Feed`]'s queue while one exists: assigned partitions are forwarded to it.
    feed: AtomicPtr<rdsys::rd_kafka_queue_t>,
}

impl<S> Default for SourceContext<S> {
    fn default() -> Self {
        SourceContext {
            state: Mutex::new(None),
            feed: AtomicPtr::default(),
        }
    }
}

impl<S> SourceContext<S> {
    pub fn state(&self) -> std::sync::MutexGuard<'_, Option<S>> {
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

impl<S: OnRebalance> ClientContext for SourceContext<S> {
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

impl<S: OnRebalance> ConsumerContext for SourceContext<S> {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if let Some(st) = self.state().as_mut() {
                    st.on_revoke(c, &tps(tpl));
                }
            }
            // Before librdkafka starts fetching them, so no message of theirs
            // reaches the consumer queue first.
            Rebalance::Assign(tpl) => forward(c, tpl),
            Rebalance::Error(_) => {}
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

pub type Source<S = ()> = BaseConsumer<SourceContext<S>>;

/// Client settings shared by the consumer and the admin/producer clients.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    // The pod's name (Kubernetes sets HOSTNAME) tells members apart in broker logs and
    // quotas; --kafka-opt client.id=… overrides it.
    c.set(
        "client.id",
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .map_or_else(|| "lakewriter".to_string(), |h| format!("lakewriter-{h}")),
    );
    for (k, v) in &cfg.kafka_opts {
        c.set(k, v);
    }
    c
}

/// Build the group consumer. Offsets are never stored or committed
/// automatically: the pipeline commits synchronously after uploads.
pub fn consumer<S: OnRebalance>(cfg: &Config) -> Result<Source<S>, SourceError> {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
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
pub fn check<S: OnRebalance>(
    consumer: &Source<S>,
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
pub fn committed<S: OnRebalance>(
    consumer: &Source<S>,
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
pub fn commit<S: OnRebalance>(
    consumer: &Source<S>,
    offsets: &[(Tp, i64)],
) -> Result<(), KafkaError> {
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
/// The broker refused a commit for lack of authorization: not transient.
pub fn is_unauthorized(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::GroupAuthorizationFailed
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
        )
    )
}

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
pub fn cached_high_watermark<S: OnRebalance>(consumer: &Source<S>, tp: &Tp) -> Option<i64> {
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

/// Route the fetch queues of `tpl`'s partitions to the [`Feed`], if there is one
/// (else their messages stay on the consumer queue and `poll` returns them).
/// Call before the partitions are assigned: librdkafka keeps an application's
/// forwarding when it starts fetching and drops it when it stops, so every
/// assignment sets it again.
pub fn forward<S: OnRebalance>(consumer: &Source<S>, tpl: &TopicPartitionList) {
    let feed = consumer.context().feed.load(Ordering::Acquire);
    if feed.is_null() {
        return;
    }
    let rk = consumer.client().native_ptr();
    for e in tpl.elements() {
        let Ok(topic) = CString::new(e.topic()) else {
            continue;
        };
        // SAFETY: `rk` lives as long as the consumer; the partition queue handle is
        // released right away (the forwarding belongs to the partition, not to the
        // handle); `feed` is valid while it is published in the context (see `Feed`).
        unsafe {
            let pq = rdsys::rd_kafka_queue_get_partition(rk, topic.as_ptr(), e.partition());
            if pq.is_null() {
                tracing::warn!(
                    topic = e.topic(),
                    partition = e.partition(),
                    "no partition queue; its messages come through poll"
                );
                continue;
            }
            rdsys::rd_kafka_queue_forward(pq, feed);
            rdsys::rd_kafka_queue_destroy(pq);
        }
    }
}

/// One consumed record, borrowed from librdkafka while it is ingested.
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub payload: &'a [u8],
    /// The record has no value at all (a tombstone), not an empty one.
    pub tombstone: bool,
    pub key: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
}

impl<'a> Record<'a> {
    pub fn of<M: rdkafka::Message>(m: &'a M) -> Self {
        Record {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            payload: m.payload().unwrap_or(&[]),
            tombstone: m.payload().is_none(),
            key: m.key(),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// Most messages taken from librdkafka in one call.
const FEED_BATCH: usize = 256;

/// The assigned partitions' messages, taken from librdkafka a batch at a time.
///
/// `BaseConsumer::poll` returns one message per call, and every call reads the
/// clock three times (twice inside librdkafka), allocates and frees an event
/// handle, and takes the queue lock: about 7% of the writer's CPU end to end.
/// Here each assigned partition's fetch queue is forwarded to a queue of our own
/// ([`forward`], from the rebalance callback) and `rd_kafka_consume_batch_queue`
/// takes up to [`FEED_BATCH`] messages per call. Rebalances, errors and logs stay
/// on the consumer queue, served by `poll` between batches; an event arriving
/// there while [`Feed::fill`] waits wakes it (librdkafka's queue event callback).
///
/// Messages of a partition revoked while they wait here are discarded by
/// librdkafka (their fetch version is outdated), never returned.
pub struct Feed<'c, S: OnRebalance> {
    consumer: &'c Source<S>,
    ours: *mut rdsys::rd_kafka_queue_t,
    main: *mut rdsys::rd_kafka_queue_t,
    msgs: Vec<*mut rdsys::rd_kafka_message_t>,
}

/// Called by librdkafka (on its own thread, with the consumer queue locked) when an
/// event lands on the empty consumer queue: end a waiting `fill`.
unsafe extern "C" fn wake(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the feed's queue, alive until the callback is disabled
    // (which takes the same lock this call runs under) in `Feed::drop`.
    unsafe { rdsys::rd_kafka_queue_yield(opaque.cast()) };
}

impl<'c, S: OnRebalance> Feed<'c, S> {
    pub fn new(consumer: &'c Source<S>) -> Result<Self, SourceError> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is valid for the consumer's lifetime, which outlives `self`.
        let (ours, main) = unsafe {
            (
                rdsys::rd_kafka_queue_new(rk),
                rdsys::rd_kafka_queue_get_consumer(rk),
            )
        };
        if ours.is_null() || main.is_null() {
            // SAFETY: only non-null handles are released.
            unsafe {
                if !ours.is_null() {
                    rdsys::rd_kafka_queue_destroy(ours);
                }
                if !main.is_null() {
                    rdsys::rd_kafka_queue_destroy(main);
                }
            }
            return Err(SourceError::Kafka(KafkaError::ClientCreation(
                "no consumer queue (is group.id set?)".into(),
            )));
        }
        // SAFETY: both handles are valid; `ours` outlives the callback (see `drop`).
        unsafe { rdsys::rd_kafka_queue_cb_event_enable(main, Some(wake), ours.cast()) };
        consumer.context().feed.store(ours, Ordering::Release);
        Ok(Feed {
            consumer,
            ours,
            main,
            msgs: Vec::with_capacity(FEED_BATCH),
        })
    }

    /// Release the last batch and take the next: up to [`FEED_BATCH`] messages,
    /// waiting at most `timeout` for the first (not at all while events wait on
    /// the consumer queue).
    pub fn fill(&mut self, timeout: Duration) -> usize {
        self.release();
        // SAFETY: `main` is a valid queue handle.
        let waiting = unsafe { rdsys::rd_kafka_queue_length(self.main) } > 0;
        let ms = if waiting {
            0
        } else {
            timeout.as_millis().min(i32::MAX as u128) as i32
        };
        // SAFETY: the array has room for FEED_BATCH pointers; librdkafka writes `n`
        // of them, each an owned message released in `release`.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(self.ours, ms, self.msgs.as_mut_ptr(), FEED_BATCH)
        };
        // SAFETY: librdkafka initialised the first `n` (<= FEED_BATCH) entries.
        unsafe { self.msgs.set_len(n.clamp(0, FEED_BATCH as isize) as usize) };
        self.msgs.len()
    }

    /// The messages of the last `fill`: a record, or the error librdkafka
    /// reported in its place (partition EOF when enabled, fetch errors).
    pub fn records(&self) -> impl Iterator<Item = Result<Record<'_>, KafkaError>> + '_ {
        // The topic name of the previous message's topic handle: a batch holds runs
        // of one partition, so the name is rarely looked up (and measured) again.
        // Every message of the batch lives until the next `fill`, and with it its
        // topic handle, so a handle cannot be freed and reused during the iteration.
        let mut last: (*mut rdsys::rd_kafka_topic_t, &str) = (std::ptr::null_mut(), "");
        self.msgs.iter().map(move |&p| {
            // SAFETY: `p` is a message owned by this feed until the next `fill`/drop,
            // so borrowing its fields for `&self`'s lifetime is sound.
            let m = unsafe { &*p };
            if m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(
                    if m.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        KafkaError::PartitionEOF(m.partition)
                    } else {
                        KafkaError::MessageConsumption(m.err.into())
                    },
                );
            }
            let bytes = |ptr: *mut c_void, len: usize| -> Option<&[u8]> {
                // SAFETY: librdkafka guarantees `len` readable bytes at a non-null pointer.
                (!ptr.is_null())
                    .then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
            };
            let topic = if m.rkt == last.0 {
                last.1
            } else {
                // SAFETY: a message's topic handle and its name live as long as the message.
                let name = unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(m.rkt)) };
                last = (m.rkt, name.to_str().unwrap_or(""));
                last.1
            };
            let mut tstype = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: `p` is a valid message; `tstype` is a valid out pointer.
            let ts = unsafe { rdsys::rd_kafka_message_timestamp(p, &mut tstype) };
            Ok(Record {
                topic,
                partition: m.partition,
                offset: m.offset,
                payload: bytes(m.payload, m.len).unwrap_or(&[]),
                tombstone: m.payload.is_null(),
                key: bytes(m.key, m.key_len),
                timestamp_ms: (tstype
                    != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
                    && ts >= 0)
                    .then_some(ts),
            })
        })
    }

    fn release(&mut self) {
        for p in self.msgs.drain(..) {
            // SAFETY: each pointer is an owned message from `fill`, released once.
            unsafe { rdsys::rd_kafka_message_destroy(p) };
        }
    }
}

impl<S: OnRebalance> Drop for Feed<'_, S> {
    fn drop(&mut self) {
        self.release();
        self.consumer
            .context()
            .feed
            .store(std::ptr::null_mut(), Ordering::Release);
        // SAFETY: disabling takes the consumer queue's lock, so no `wake` is running
        // or will run with `ours` afterwards; then both handles are released once.
        // Partitions still forwarded keep the queue itself alive (librdkafka counts
        // references) until they are revoked.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.main, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.main);
            rdsys::rd_kafka_queue_destroy(self.ours);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::Message;
    use std::time::Instant;

    /// librdkafka's mock cluster: partitions assigned by the group arrive through the
    /// feed (never through `poll`), complete and in order, and an event on the
    /// consumer queue (the assignment) ends a long `fill` early.
    #[test]
    fn assigned_partitions_arrive_through_the_feed() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("feed", 3, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        for i in 0..300 {
            let payload = format!("{{\"i\":{i}}}");
            producer
                .send(
                    BaseRecord::to("feed")
                        .partition(i % 3)
                        .payload(&payload)
                        .key("k"),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let cfg = Config {
            brokers: mock.bootstrap_servers(),
            topics: vec!["feed".into()],
            group: "feed-test".into(),
            ..Config::default()
        };
        let consumer: Source = consumer(&cfg).unwrap();
        let mut feed = Feed::new(&consumer).unwrap();
        consumer.subscribe(&["feed"]).unwrap();

        // Nothing is forwarded before the assignment is served, so this waits until
        // an event reaches the consumer queue, which must end the wait.
        let t0 = Instant::now();
        assert_eq!(feed.fill(Duration::from_secs(30)), 0);
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "an event on the consumer queue did not end the wait ({:?})",
            t0.elapsed()
        );

        let mut next = [0i64; 3];
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen < 300 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::ZERO) {
                panic!("a message came through poll: {:?}", m.map(|m| m.offset()));
            }
            feed.fill(Duration::from_millis(200));
            for r in feed.records() {
                let r = r.unwrap();
                assert_eq!(r.topic, "feed");
                let p = r.partition as usize;
                assert_eq!(r.offset, next[p], "partition {p} out of order");
                next[p] += 1;
                let i: i64 = 3 * r.offset + r.partition as i64;
                assert_eq!(r.payload, format!("{{\"i\":{i}}}").as_bytes());
                assert_eq!(r.key, Some(&b"k"[..]));
                assert!(r.timestamp_ms.is_some_and(|t| t > 0));
                seen += 1;
            }
        }
        assert_eq!(next, [100, 100, 100]);
    }
}
