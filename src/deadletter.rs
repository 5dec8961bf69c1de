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
    pub fn new(topic: &str, partition: i32, offset: i64, timestamp: Option<i64>, key: Option<&[u8]>, payload: &[u8], reason: String) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(payload) {
            Ok(s) => (s.to_string(), false),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(payload), true),
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
            base64::engine::general_purpose::STANDARD.decode(&self.payload).unwrap_or_default()
        } else {
            self.payload.clone().into_bytes()
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
    serde_json::Deserializer::from_slice(data).into_iter::<DeadLetter>().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_original_bytes_text_or_binary() {
        let a = DeadLetter::new("t", 1, 5, Some(9), None, b"{bad", "invalid JSON".into());
        let b = DeadLetter::new("t", 1, 6, None, Some(b"k"), b"\xff\xfe", "invalid UTF-8".into());
        let back = from_ndjson(&to_ndjson(&[a.clone(), b.clone()])).unwrap();
        assert_eq!(back, vec![a, b]);
        assert_eq!(back[0].original(), b"{bad");
        assert_eq!(back[1].original(), b"\xff\xfe");
        assert!(back[1].payload_base64);
    }
}
