//! Dead letters: messages that cannot become a row, kept with their reason.
//!
//! Written as newline-delimited JSON under the lake's internal prefix, one
//! file per partition and flush cycle, and committed like any other offset.

use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp in ms, if any.
    pub timestamp: Option<i64>,
    pub reason: String,
    /// The original message value: UTF-8 text when it is text, else base64.
    pub payload: String,
    pub payload_base64: bool,
    pub key: Option<String>,
}

impl DeadLetter {
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: String,
    ) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(payload) {
            Ok(s) => (s.to_string(), false),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(payload),
                true,
            ),
        };
        DeadLetter {
            topic: topic.to_string(),
            partition,
            offset,
            timestamp,
            reason,
            payload,
            payload_base64,
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
        }
    }

    /// The original bytes.
    pub fn original(&self) -> Vec<u8> {
        if self.payload_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(&self.payload)
                .unwrap_or_default()
        } else {
            self.payload.clone().into_bytes()
        }
    }
}

/// Optional copy of every dead letter to a Kafka topic (`--dlq-topic`).
///
/// Sent before the cycle's recovery records, and retried like an upload until
/// it is delivered or the drain deadline passes, so a dead letter's offset is
/// never committed before its record is in the topic. A crash between the
/// send and the commit re-sends it: the topic is at-least-once (the lake's
/// dead-letter files stay exactly-once).
pub struct KafkaSink {
    producer: rdkafka::producer::BaseProducer<crate::produce::CountingContext>,
    topic: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("dead-letter topic client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("dead letters not delivered to {0} before the shutdown deadline")]
    Deadline(String),
}

impl KafkaSink {
    pub fn new(mut cfg: rdkafka::ClientConfig, topic: &str) -> Result<Self, SinkError> {
        cfg.set("enable.idempotence", "false").set("linger.ms", "5");
        Ok(Self {
            producer: cfg.create_with_context(Default::default())?,
            topic: topic.to_string(),
        })
    }

    pub fn send_all(
        &self,
        dead: &[DeadLetter],
        drain: &crate::shutdown::Drain,
    ) -> Result<(), SinkError> {
        use rdkafka::producer::{BaseRecord, Producer};
        use std::sync::atomic::Ordering;
        use std::time::Duration;
        let mut backoff = Duration::from_millis(100);
        loop {
            let failed_before = self.producer.context().failed.load(Ordering::Relaxed);
            let mut send_error = None;
            for d in dead {
                let body = serde_json::to_vec(d).unwrap_or_default();
                let mut rec = BaseRecord::to(&self.topic).payload(&body);
                if let Some(k) = &d.key {
                    rec = rec.key(k.as_bytes());
                }
                let mut rec = Some(rec);
                while let Some(r) = rec.take() {
                    match self.producer.send(r) {
                        Ok(()) => {}
                        Err((
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            r,
                        )) => {
                            self.producer.poll(Duration::from_millis(10));
                            rec = Some(r);
                        }
                        Err((e, _)) => send_error = Some(e),
                    }
                }
            }
            let flushed = self.producer.flush(Duration::from_secs(30));
            let failed = self.producer.context().failed.load(Ordering::Relaxed) - failed_before;
            if send_error.is_none() && flushed.is_ok() && failed == 0 {
                return Ok(());
            }
            if drain.deadline_passed() {
                return Err(SinkError::Deadline(self.topic.clone()));
            }
            tracing::warn!(topic = %self.topic, failed, error = ?send_error.or(flushed.err()), "dead-letter topic delivery failed; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// Serialise dead letters as NDJSON.
pub fn to_ndjson(dead: &[DeadLetter]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in dead {
        // Serialising a plain struct of strings and numbers cannot fail.
        if serde_json::to_writer(&mut out, d).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

pub fn from_ndjson(data: &[u8]) -> Result<Vec<DeadLetter>, serde_json::Error> {
    serde_json::Deserializer::from_slice(data)
        .into_iter::<DeadLetter>()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_original_bytes_text_or_binary() {
        let a = DeadLetter::new("t", 1, 5, Some(9), None, b"{bad", "invalid JSON".into());
        let b = DeadLetter::new(
            "t",
            1,
            6,
            None,
            Some(b"k"),
            b"\xff\xfe",
            "invalid UTF-8".into(),
        );
        let back = from_ndjson(&to_ndjson(&[a.clone(), b.clone()])).unwrap();
        assert_eq!(back, vec![a, b]);
        assert_eq!(back[0].original(), b"{bad");
        assert_eq!(back[1].original(), b"\xff\xfe");
        assert!(back[1].payload_base64);
    }
}
