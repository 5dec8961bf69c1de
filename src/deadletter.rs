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
    /// The record's key: UTF-8 text when it is text, else base64 (`key_base64`).
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_base64: bool,
    /// Set only on the copy sent to the dead-letter topic when the full record
    /// would exceed the producer's message size: the payload was cut to this
    /// many bytes from `payload_bytes`, and the whole of it is in the lake under
    /// `lake_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
}

/// Where a dead letter cut for the dead-letter topic is kept whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truncated {
    /// Length of the full `payload` field.
    pub payload_bytes: usize,
    pub lake_key: String,
}

fn text_or_base64(b: &[u8]) -> (String, bool) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(b), true),
    }
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
        let (payload, payload_base64) = text_or_base64(payload);
        let (key, key_base64) = match key.map(text_or_base64) {
            Some((k, b64)) => (Some(k), b64),
            None => (None, false),
        };
        DeadLetter {
            topic: topic.to_string(),
            partition,
            offset,
            timestamp,
            reason,
            payload,
            payload_base64,
            key,
            key_base64,
            truncated: None,
        }
    }

    /// The record's key bytes.
    pub fn original_key(&self) -> Option<Vec<u8>> {
        let k = self.key.as_ref()?;
        Some(if self.key_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .unwrap_or_default()
        } else {
            k.clone().into_bytes()
        })
    }

    /// This dead letter as one JSON document of at most `limit` bytes: whole
    /// when it fits, else with its payload cut (at a character boundary, or a
    /// whole base64 quantum) and marked as kept whole at `lake_key`.
    /// The flag says whether it was cut.
    pub fn to_json_within(&self, limit: usize, lake_key: &str) -> (Vec<u8>, bool) {
        let whole = serde_json::to_vec(self).unwrap_or_default();
        if whole.len() <= limit {
            return (whole, false);
        }
        let mut cut = self.clone();
        cut.truncated = Some(Truncated {
            payload_bytes: self.payload.len(),
            lake_key: lake_key.to_string(),
        });
        cut.payload = String::new();
        let frame = serde_json::to_vec(&cut).unwrap_or_default().len();
        // Escaping can grow a character sixfold (\u00XX): budget for the worst case.
        let mut room = limit.saturating_sub(frame) / 6;
        if self.payload_base64 {
            room -= room % 4;
        }
        let mut end = room.min(self.payload.len());
        while !self.payload.is_char_boundary(end) {
            end -= 1;
        }
        cut.payload = self.payload[..end].to_string();
        (serde_json::to_vec(&cut).unwrap_or_default(), true)
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

/// A dead letter's reason as a bounded label (the metric's `reason`): the
/// reasons are sentences with values in them, their beginnings are fixed.
pub fn reason_kind(reason: &str) -> &'static str {
    const KINDS: [(&str, &str); 15] = [
        ("empty message", "empty"),
        ("oversize", "oversize"),
        ("invalid UTF-8", "invalid_utf8"),
        ("invalid JSON", "invalid_json"),
        ("not a JSON object", "not_an_object"),
        ("missing event type", "missing_type"),
        ("event type too long", "type_too_long"),
        ("event type at", "bad_type"),
        ("missing event time", "missing_time"),
        ("unparsable event time", "bad_time"),
        ("reserved top-level field", "reserved_field"),
        ("no event time and no Kafka timestamp", "no_timestamp"),
        ("type conflict", "type_conflict"),
        ("cannot encode", "cannot_encode"),
        ("too many distinct event types", "too_many_types"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| reason.starts_with(prefix))
        .map_or("other", |(_, kind)| kind)
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
    /// Largest record the producer accepts (`message.max.bytes`); a dead letter
    /// over it is sent cut (see [`DeadLetter::to_json_within`]): retrying it
    /// whole would stall the pipeline on every restart.
    max_message: usize,
}

/// Room kept below `message.max.bytes` for the record's key and framing.
const RECORD_OVERHEAD: usize = 512;

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
        let max_message = cfg
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1_000_000);
        Ok(Self {
            producer: cfg.create_with_context(Default::default())?,
            topic: topic.to_string(),
            max_message,
        })
    }

    /// Deliver every dead letter; `lake_key` names the lake file that holds
    /// each one whole. Returns how many were sent cut to fit.
    pub fn send_all(
        &self,
        dead: &[DeadLetter],
        lake_key: impl Fn(&DeadLetter) -> String,
        drain: &crate::shutdown::Drain,
    ) -> Result<u64, SinkError> {
        use rdkafka::producer::{BaseRecord, Producer};
        use std::sync::atomic::Ordering;
        use std::time::Duration;
        let mut backoff = Duration::from_millis(100);
        loop {
            let failed_before = self.producer.context().failed.load(Ordering::Relaxed);
            let mut send_error = None;
            let mut cut = 0u64;
            for d in dead {
                let key = d.original_key();
                let limit = self
                    .max_message
                    .saturating_sub(RECORD_OVERHEAD + key.as_ref().map_or(0, Vec::len));
                let (body, was_cut) = d.to_json_within(limit, &lake_key(d));
                cut += u64::from(was_cut);
                let mut rec = BaseRecord::to(&self.topic).payload(&body);
                if let Some(k) = &key {
                    rec = rec.key(k.as_slice());
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
                return Ok(cut);
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

    #[test]
    fn every_reason_lakewriter_writes_has_a_kind() {
        use crate::route::RouteError as R;
        let reasons = [
            R::Empty.to_string(),
            R::Oversize { size: 2, limit: 1 }.to_string(),
            R::InvalidUtf8(3).to_string(),
            R::InvalidJson("x".into()).to_string(),
            R::NotAnObject.to_string(),
            R::MissingType("/t".into()).to_string(),
            R::BadType("/t".into()).to_string(),
            R::TypeTooLong(300).to_string(),
            R::MissingTime("/ts".into()).to_string(),
            R::BadTime("/ts".into(), "x".into()).to_string(),
            R::ReservedField("_offset".into()).to_string(),
            R::NoTimestamp.to_string(),
            // buffer::TooManyTypes; its own test checks the message keeps this kind.
            "too many distinct event types in the table (limit 5)".into(),
            "type conflict: field a is Int64 in the table schema but Utf8 in this event".into(),
            "cannot encode: field \"x\" appears twice".into(),
        ];
        let kinds: std::collections::BTreeSet<&str> =
            reasons.iter().map(|r| reason_kind(r)).collect();
        assert_eq!(kinds.len(), reasons.len(), "{kinds:?}");
        assert!(!kinds.contains("other"));
        assert_eq!(
            reason_kind("event type too long: 300 bytes escaped > 200"),
            "type_too_long"
        );
    }

    #[test]
    fn binary_keys_survive() {
        let d = DeadLetter::new("t", 0, 1, None, Some(b"\x00\xffk"), b"x", "r".into());
        assert!(d.key_base64);
        let back = &from_ndjson(&to_ndjson(std::slice::from_ref(&d))).unwrap()[0];
        assert_eq!(back.original_key().unwrap(), b"\x00\xffk");
        let text = DeadLetter::new("t", 0, 1, None, Some(b"user-1"), b"x", "r".into());
        assert_eq!(
            (text.key.as_deref(), text.key_base64),
            (Some("user-1"), false)
        );
        // Text keys keep the stored form they always had.
        assert!(!String::from_utf8(to_ndjson(&[text]))
            .unwrap()
            .contains("key_base64"));
    }

    #[test]
    fn an_oversized_dead_letter_is_cut_to_fit_and_points_at_the_lake() {
        let mut big = vec![b'{'; 900_000];
        big[10] = 0xff; // not UTF-8: stored as base64 (~1.2 MB)
        let d = DeadLetter::new(
            "t",
            2,
            7,
            None,
            None,
            &big,
            "invalid UTF-8 at byte 10".into(),
        );
        let limit = 1_000_000 - 512;
        let (body, cut) = d.to_json_within(limit, "_lakewriter/dead_letters/t/x.ndjson");
        assert!(cut && body.len() <= limit, "{}", body.len());
        let back: DeadLetter = serde_json::from_slice(&body).unwrap();
        let t = back.truncated.as_ref().unwrap();
        assert_eq!(t.payload_bytes, d.payload.len());
        assert_eq!(t.lake_key, "_lakewriter/dead_letters/t/x.ndjson");
        assert!(d.payload.starts_with(&back.payload) && back.payload.len().is_multiple_of(4));
        assert_eq!(back.reason, d.reason);
        // Text with characters that escape sixfold still fits.
        let ctl = DeadLetter::new("t", 2, 8, None, None, &vec![1u8; 400_000], "r".into());
        assert!(ctl.to_json_within(100_000, "k").0.len() <= 100_000);
        // A small one is sent whole, unmarked.
        let small = DeadLetter::new("t", 2, 9, None, None, b"{bad", "r".into());
        assert_eq!(
            small.to_json_within(limit, "k"),
            (serde_json::to_vec(&small).unwrap(), false)
        );
    }
}
