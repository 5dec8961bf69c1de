//! Route: decide where one raw Kafka message goes — a lake partition
//! `(table, date, event_type)` or the dead-letter output with a reason.
//!
//! Routing reads the event type and the event time at configurable JSON
//! pointers in a single streaming pass (serde's `IgnoredAny` skips every
//! other value without building a DOM), which also validates the whole
//! document. The values are untrusted: they are escaped Hive-style before
//! they become part of an object key.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Event types longer than this (after escaping) are dead-lettered: S3 keys
/// are limited to 1024 bytes and such a value is never a real event type.
pub const MAX_PARTITION_VALUE_BYTES: usize = 200;

/// Hive's name for a partition whose value is empty or null.
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Column names lakewriter adds to every row; an event may not use them.
pub const RESERVED_COLUMNS: [&str; 7] = [
    "_topic",
    "_partition",
    "_offset",
    "_timestamp",
    "_key",
    "_event_time",
    "_ingested_at",
];

/// Unit or format of the event-time value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    Seconds,
    Millis,
    Micros,
    Rfc3339,
}

impl std::str::FromStr for TimeFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "s" | "seconds" => Ok(Self::Seconds),
            "ms" | "millis" => Ok(Self::Millis),
            "us" | "micros" => Ok(Self::Micros),
            "rfc3339" => Ok(Self::Rfc3339),
            other => Err(format!(
                "unknown time format {other:?} (expected s, ms, us or rfc3339)"
            )),
        }
    }
}

/// A parsed RFC 6901 JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(Vec<String>);

impl Pointer {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a JSON pointer to the whole document cannot name a field".into());
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!("JSON pointer {s:?} must start with '/'"));
        };
        Ok(Self(
            rest.split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect(),
        ))
    }
    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.0 {
            write!(f, "/{}", s.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// Routing settings, validated.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub event_type: Pointer,
    pub event_time: Option<Pointer>,
    pub time_format: TimeFormat,
    /// Use the Kafka timestamp when the event-time field is missing or null.
    pub time_fallback_kafka: bool,
    pub max_event_bytes: usize,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            event_type: Pointer(vec!["event_type".into()]),
            event_time: None,
            time_format: TimeFormat::Millis,
            time_fallback_kafka: false,
            max_event_bytes: 1 << 20,
        }
    }
}

/// Why a message could not become a row. The `Display` text is the
/// dead-letter record's `reason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// The message has no value (a tombstone or an empty record).
    #[error("empty message")]
    Empty,
    /// Larger than `max_event_bytes`.
    #[error("oversize: {size} bytes > limit {limit}")]
    Oversize { size: usize, limit: usize },
    /// Not UTF-8, so not JSON.
    #[error("invalid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    /// Not parseable as one JSON document.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON but not an object, so it cannot be a row.
    #[error("not a JSON object")]
    NotAnObject,
    /// The event-type pointer matched nothing (or null).
    #[error("missing event type at {0}")]
    MissingType(String),
    /// The event type is an object or array.
    #[error("event type at {0} is not a string, number or boolean")]
    BadType(String),
    /// The escaped event type is too long for an object key.
    #[error("event type too long: {0} bytes escaped > {MAX_PARTITION_VALUE_BYTES}")]
    TypeTooLong(usize),
    #[error("missing event time at {0}")]
    MissingTime(String),
    #[error("unparsable event time at {0}: {1}")]
    BadTime(String, String),
    /// The event uses a column name lakewriter reserves for metadata.
    #[error("reserved top-level field {0:?}")]
    ReservedField(String),
    /// The Kafka record carries no timestamp to fall back on.
    #[error("no event time and no Kafka timestamp")]
    NoTimestamp,
}

/// Where a good event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Escaped, ready to be a path segment value.
    pub event_type: String,
    pub date: NaiveDate,
    /// Event time in microseconds since the epoch, UTC.
    pub event_time_us: i64,
}

/// A scalar found at a pointer.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Null,
    Composite,
}

/// Route one message. `kafka_ts_ms` is the record's timestamp if any.
pub fn route(
    cfg: &RouteConfig,
    payload: &[u8],
    kafka_ts_ms: Option<i64>,
) -> Result<Routed, RouteError> {
    if payload.is_empty() {
        return Err(RouteError::Empty);
    }
    if payload.len() > cfg.max_event_bytes {
        return Err(RouteError::Oversize {
            size: payload.len(),
            limit: cfg.max_event_bytes,
        });
    }
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(RouteError::InvalidUtf8(e.valid_up_to()));
    }
    let mut targets: Vec<&[String]> = vec![cfg.event_type.segments()];
    if let Some(p) = &cfg.event_time {
        targets.push(p.segments());
    }
    let mut found: Vec<Option<Found>> = vec![None; targets.len()];
    let mut reserved: Option<String> = None;
    {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let walker = Walker {
            targets: &targets,
            depth: 0,
            found: &mut found,
            reserved: &mut reserved,
            top: true,
        };
        match walker.deserialize(&mut de) {
            Ok(()) => {}
            Err(e) if e.to_string().starts_with(NOT_OBJECT) => return Err(RouteError::NotAnObject),
            Err(e) => return Err(RouteError::InvalidJson(e.to_string())),
        }
        de.end()
            .map_err(|e| RouteError::InvalidJson(e.to_string()))?;
    }
    if let Some(name) = reserved {
        return Err(RouteError::ReservedField(name));
    }
    let ptr = || cfg.event_type.to_string();
    let raw_type = match found[0].take() {
        None | Some(Found::Null) => return Err(RouteError::MissingType(ptr())),
        Some(Found::Composite) => return Err(RouteError::BadType(ptr())),
        Some(Found::Str(s)) => s,
        Some(Found::I64(v)) => v.to_string(),
        Some(Found::U64(v)) => v.to_string(),
        Some(Found::F64(v)) => v.to_string(),
        Some(Found::Bool(v)) => v.to_string(),
    };
    let event_type = escape_partition_value(&raw_type);
    if event_type.len() > MAX_PARTITION_VALUE_BYTES {
        return Err(RouteError::TypeTooLong(event_type.len()));
    }

    let event_time_us = match &cfg.event_time {
        None => kafka_us(kafka_ts_ms)?,
        Some(p) => match found[1].take() {
            None | Some(Found::Null) if cfg.time_fallback_kafka => kafka_us(kafka_ts_ms)?,
            None | Some(Found::Null) => return Err(RouteError::MissingTime(p.to_string())),
            Some(v) => {
                parse_time(v, cfg.time_format).map_err(|e| RouteError::BadTime(p.to_string(), e))?
            }
        },
    };
    let date = DateTime::<Utc>::from_timestamp_micros(event_time_us)
        .ok_or_else(|| RouteError::BadTime(String::new(), "out of range".into()))?
        .date_naive();
    Ok(Routed {
        event_type,
        date,
        event_time_us,
    })
}

fn kafka_us(ts_ms: Option<i64>) -> Result<i64, RouteError> {
    match ts_ms {
        Some(ms) if ms >= 0 => ms.checked_mul(1000).ok_or(RouteError::NoTimestamp),
        _ => Err(RouteError::NoTimestamp),
    }
}

/// Earliest and latest event times accepted: a four-digit year keeps the
/// `date=YYYY-MM-DD` directory well-formed and sortable.
const MIN_US: i64 = -2_208_988_800_000_000; // 1900-01-01
const MAX_US: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999

fn parse_time(v: Found, fmt: TimeFormat) -> Result<i64, String> {
    let scale = match fmt {
        TimeFormat::Seconds => 1_000_000i64,
        TimeFormat::Millis => 1_000,
        TimeFormat::Micros => 1,
        TimeFormat::Rfc3339 => {
            let Found::Str(s) = v else {
                return Err("expected an RFC 3339 string".into());
            };
            let t = DateTime::parse_from_rfc3339(&s).map_err(|e| e.to_string())?;
            return check_range(t.timestamp_micros());
        }
    };
    let us = match v {
        Found::I64(n) => n.checked_mul(scale).ok_or("out of range")?,
        Found::U64(_) => return Err("out of range".into()),
        Found::F64(f) if f.is_finite() => {
            let us = f * scale as f64;
            if us.abs() > 9.0e18 {
                return Err("out of range".into());
            }
            us.round() as i64
        }
        // Numeric strings are common in producers that stringify everything.
        Found::Str(s) => match s.trim().parse::<i64>() {
            Ok(n) => n.checked_mul(scale).ok_or("out of range")?,
            Err(_) => {
                return Err(format!(
                    "expected a number, got string {:?}",
                    truncate(&s, 40)
                ))
            }
        },
        _ => return Err("expected a number".into()),
    };
    check_range(us)
}

fn check_range(us: i64) -> Result<i64, String> {
    if (MIN_US..=MAX_US).contains(&us) {
        Ok(us)
    } else {
        Err("out of range (years 1900–9999)".into())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Escape an untrusted value for use as `key=value` in a Hive-style path.
///
/// Percent-encodes what Hive's `FileUtils.escapePathName` does (control
/// characters, `"#%'*/:=?\{[]^` and DEL) plus space-free-but-dangerous dot
/// names (`.` and `..`), so the value can never add or climb a directory.
/// Non-ASCII UTF-8 stays readable. Empty → Hive's default partition name.
pub fn escape_partition_value(raw: &str) -> String {
    if raw.is_empty() {
        return HIVE_DEFAULT_PARTITION.to_string();
    }
    if raw == "." || raw == ".." {
        return raw.replace('.', "%2E");
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let needs = matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}' | '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^')
            // Unicode control and line/paragraph separators would break logs and some S3 tools.
            || c.is_control()
            || c == '\u{2028}'
            || c == '\u{2029}';
        if needs {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Inverse of [`escape_partition_value`] (for readers and tests).
pub fn unescape_partition_value(escaped: &str) -> String {
    if escaped == HIVE_DEFAULT_PARTITION {
        return String::new();
    }
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&escaped[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A map key that borrows from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

const NOT_OBJECT: &str = "lakewriter: top-level value is not an object";

/// Streams through a JSON document, capturing the scalars at `targets`
/// (each a pointer's remaining segments) and skipping everything else.
struct Walker<'a, 'b> {
    targets: &'a [&'a [String]],
    depth: usize,
    found: &'b mut [Option<Found>],
    reserved: &'b mut Option<String>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Walker<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> Walker<'a, '_> {
    /// The targets that continue through the child named by `seg`, keeping
    /// their indices (the others become empty, which never match deeper);
    /// `None` — and no allocation — when no target goes there.
    fn through(&self, seg: impl Fn(&str) -> bool) -> Option<Vec<&'a [String]>> {
        let d = self.depth;
        if !self.targets.iter().any(|t| t.len() > d && seg(&t[d])) {
            return None;
        }
        Some(
            self.targets
                .iter()
                .map(|t| {
                    if t.len() > d && seg(&t[d]) {
                        *t
                    } else {
                        &[][..]
                    }
                })
                .collect(),
        )
    }

    fn child<'c>(&'c mut self, sub: &'c [&'a [String]]) -> Walker<'c, 'c> {
        Walker {
            targets: sub,
            depth: self.depth + 1,
            found: self.found,
            reserved: self.reserved,
            top: false,
        }
    }

    /// Capture `v` for the targets that end exactly here.
    fn capture(&mut self, v: Found) {
        for (i, t) in self.targets.iter().enumerate() {
            if t.len() == self.depth {
                self.found[i] = Some(v.clone());
            }
        }
    }
    fn not_object<E: de::Error>(&self) -> Result<(), E> {
        if self.top {
            Err(E::custom(NOT_OBJECT))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Walker<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.capture(Found::Bool(v));
        self.not_object()
    }
    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.capture(Found::I64(v));
        self.not_object()
    }
    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.capture(Found::I64(i)),
            Err(_) => self.capture(Found::U64(v)),
        }
        self.not_object()
    }
    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.capture(Found::F64(v));
        self.not_object()
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.capture(Found::Str(v.to_owned()));
        self.not_object()
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.capture(Found::Null);
        self.not_object()
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.capture(Found::Composite);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if self.top && key.starts_with('_') && RESERVED_COLUMNS.contains(&key.as_ref()) {
                *self.reserved = Some(key.to_string());
            }
            match self.through(|seg| seg == key.as_ref()) {
                Some(sub) => map.next_value_seed(self.child(&sub))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.capture(Found::Composite);
        if self.top {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Err(de::Error::custom(NOT_OBJECT));
        }
        let mut idx = 0usize;
        loop {
            let more = match self.through(|seg| seg.parse::<usize>() == Ok(idx)) {
                Some(sub) => seq.next_element_seed(self.child(&sub))?.is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                break;
            }
            idx += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RouteConfig {
        RouteConfig {
            event_type: Pointer::parse("/event_params/event_type").unwrap(),
            event_time: Some(Pointer::parse("/event_timestamp_ms/ts_ms").unwrap()),
            time_format: TimeFormat::Millis,
            time_fallback_kafka: false,
            max_event_bytes: 1 << 20,
        }
    }

    const EV: &str = r#"{"event_params":{"event_type_id":1,"event_type":"track_playback","user_id":"u1","country":"SE"},"event_timestamp_ms":{"ts":1716000000,"ts_ms":1716000000123}}"#;

    #[test]
    fn routes_the_clickstream_event() {
        let r = route(&cfg(), EV.as_bytes(), None).unwrap();
        assert_eq!(r.event_type, "track_playback");
        assert_eq!(r.date.to_string(), "2024-05-18");
        assert_eq!(r.event_time_us, 1_716_000_000_123_000);
    }

    #[test]
    fn midnight_boundary_splits_dates() {
        let c = cfg();
        let ev = |ms: i64| {
            format!(
                r#"{{"event_params":{{"event_type":"a"}},"event_timestamp_ms":{{"ts_ms":{ms}}}}}"#
            )
        };
        // 2024-05-18T23:59:59.999Z and 2024-05-19T00:00:00.000Z
        let a = route(&c, ev(1_716_076_799_999).as_bytes(), None).unwrap();
        let b = route(&c, ev(1_716_076_800_000).as_bytes(), None).unwrap();
        assert_eq!(a.date.to_string(), "2024-05-18");
        assert_eq!(b.date.to_string(), "2024-05-19");
    }

    #[test]
    fn bad_inputs_get_reasons() {
        let c = cfg();
        assert_eq!(route(&c, b"", None), Err(RouteError::Empty));
        assert!(matches!(
            route(&c, b"{\"a\":", None),
            Err(RouteError::InvalidJson(_))
        ));
        assert!(matches!(
            route(&c, b"{} x", None),
            Err(RouteError::InvalidJson(_))
        ));
        assert_eq!(route(&c, b"[1,2]", None), Err(RouteError::NotAnObject));
        assert_eq!(route(&c, b"42", None), Err(RouteError::NotAnObject));
        assert!(matches!(
            route(&c, b"{\"a\":\"\xff\"}", None),
            Err(RouteError::InvalidUtf8(6))
        ));
        assert!(matches!(
            route(&c, b"{}", None),
            Err(RouteError::MissingType(_))
        ));
        assert!(matches!(
            route(&c, br#"{"event_params":{"event_type":{"x":1}}}"#, None),
            Err(RouteError::BadType(_))
        ));
        assert!(matches!(
            route(&c, br#"{"event_params":{"event_type":"a"}}"#, None),
            Err(RouteError::MissingTime(_))
        ));
        assert!(matches!(
            route(
                &c,
                br#"{"event_params":{"event_type":"a"},"event_timestamp_ms":{"ts_ms":"soon"}}"#,
                None
            ),
            Err(RouteError::BadTime(..))
        ));
        assert!(matches!(
            route(
                &c,
                br#"{"event_params":{"event_type":"a"},"event_timestamp_ms":{"ts_ms":1e300}}"#,
                None
            ),
            Err(RouteError::BadTime(..))
        ));
        assert!(matches!(
            route(&c, br#"{"event_params":{"event_type":"a"},"event_timestamp_ms":{"ts_ms":99999999999999999999}}"#, None),
            Err(RouteError::BadTime(..))
        ));
        assert_eq!(
            route(&c, br#"{"_offset":1,"event_params":{"event_type":"a"},"event_timestamp_ms":{"ts_ms":1}}"#, None),
            Err(RouteError::ReservedField("_offset".into()))
        );
        let big = vec![b' '; (1 << 20) + 1];
        assert!(matches!(
            route(&c, &big, None),
            Err(RouteError::Oversize { .. })
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            route(&c, format!("{{\"a\":{deep}}}").as_bytes(), None),
            Err(RouteError::InvalidJson(_))
        ));
    }

    #[test]
    fn kafka_timestamp_fallback() {
        let mut c = cfg();
        c.event_time = None;
        let r = route(
            &c,
            br#"{"event_params":{"event_type":"a"}}"#,
            Some(86_400_000),
        )
        .unwrap();
        assert_eq!(r.date.to_string(), "1970-01-02");
        assert_eq!(
            route(&c, br#"{"event_params":{"event_type":"a"}}"#, None),
            Err(RouteError::NoTimestamp)
        );
        let mut c = cfg();
        c.time_fallback_kafka = true;
        assert!(route(&c, br#"{"event_params":{"event_type":"a"}}"#, Some(5)).is_ok());
    }

    #[test]
    fn other_formats_and_array_pointers() {
        let mut c = RouteConfig {
            event_type: Pointer::parse("/t/1").unwrap(),
            event_time: Some(Pointer::parse("/at").unwrap()),
            time_format: TimeFormat::Rfc3339,
            ..RouteConfig::default()
        };
        let r = route(
            &c,
            br#"{"t":["x","y"],"at":"2024-02-29T23:00:00-02:00"}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.event_type, "y");
        assert_eq!(r.date.to_string(), "2024-03-01");
        c.time_format = TimeFormat::Seconds;
        let r = route(&c, br#"{"t":[0, 7],"at":86400.5}"#, None).unwrap();
        assert_eq!(
            (r.event_type.as_str(), r.event_time_us),
            ("7", 86_400_500_000)
        );
        c.time_format = TimeFormat::Micros;
        let r = route(&c, br#"{"t":[0, true],"at":"86400000000"}"#, None).unwrap();
        assert_eq!(
            (r.event_type.as_str(), r.date.to_string().as_str()),
            ("true", "1970-01-02")
        );
        assert_eq!(
            Pointer::parse("/a~1b/c~0d").unwrap().segments(),
            ["a/b", "c~d"]
        );
        assert!(Pointer::parse("a").is_err());
    }

    #[test]
    fn hostile_values_stay_in_their_directory() {
        let cases = [
            "../x",
            "a/b",
            "%2F",
            "=",
            "",
            "..",
            ".",
            "a\u{0}b\nc",
            "ünï©ødé ✓",
            "x\\y",
            "\u{2028}",
        ];
        for raw in cases {
            let e = escape_partition_value(raw);
            assert!(
                !e.contains('/') && !e.contains('=') && e != "." && e != ".." && !e.is_empty(),
                "{raw:?} → {e:?}"
            );
            assert!(!e.chars().any(|c| c.is_control()), "{raw:?} → {e:?}");
            assert_eq!(unescape_partition_value(&e), raw, "round trip of {raw:?}");
        }
        assert_eq!(escape_partition_value("../x"), "..%2Fx");
        assert_eq!(escape_partition_value("%2F"), "%252F");
        let long = "a".repeat(10_000);
        let c = RouteConfig {
            event_type: Pointer::parse("/t").unwrap(),
            ..RouteConfig::default()
        };
        let ev = format!(r#"{{"t":"{long}"}}"#);
        assert!(matches!(
            route(&c, ev.as_bytes(), Some(1)),
            Err(RouteError::TypeTooLong(10_000))
        ));
    }
}
