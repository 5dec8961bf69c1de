//! Route: decide where one raw Kafka message goes — a lake partition
//! `(table, date, event_type)` or the dead-letter output with a reason.
//!
//! This file holds the rules: the JSON pointers to the event type and the
//! event time, the time formats, what sends an event to the dead letters, and
//! the Hive-style escaping of the values, which are untrusted, before they
//! become part of an object key. Finding the two values in the bytes is the
//! job of `scan` (the byte scanner, which also gives the reasons a document
//! is refused) and of its fast path `index`.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDate};

mod index;
pub(crate) mod scan;

use scan::{parse_number, Number};

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
    /// The message's value is empty (tombstones, with no value at all, are skipped before routing).
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
pub struct Routed<'a> {
    /// Escaped, ready to be a path segment value; borrowed from the message
    /// when it needed neither unescaping nor escaping (the common case).
    pub event_type: Cow<'a, str>,
    pub date: NaiveDate,
    /// Event time in microseconds since the epoch, UTC.
    pub event_time_us: i64,
}

/// A scalar found at a pointer.
#[derive(Debug, Clone, PartialEq)]
enum Found<'a> {
    Str(Cow<'a, str>),
    /// A number's literal as written (checked to be a finite JSON number):
    /// an event type keeps the producer's text, a time is parsed from it.
    Num(&'a str),
    Bool(bool),
    Null,
    Composite,
}

/// Route one message. `kafka_ts_ms` is the record's timestamp if any.
pub fn route<'a>(
    cfg: &RouteConfig,
    payload: &'a [u8],
    kafka_ts_ms: Option<i64>,
) -> Result<Routed<'a>, RouteError> {
    if payload.is_empty() {
        return Err(RouteError::Empty);
    }
    if payload.len() > cfg.max_event_bytes {
        return Err(RouteError::Oversize {
            size: payload.len(),
            limit: cfg.max_event_bytes,
        });
    }
    let mut targets: [&[String]; 2] = [cfg.event_type.segments(), &[]];
    let n = match &cfg.event_time {
        Some(p) => {
            targets[1] = p.segments();
            2
        }
        None => 1,
    };
    let mut found = match index::scan(payload, &targets[..n]) {
        Some(found) => found,
        None => scan::scan(payload, &targets[..n])?,
    };
    let ptr = || cfg.event_type.to_string();
    let raw_type: Cow<'a, str> = match found[0].take() {
        None | Some(Found::Null) => return Err(RouteError::MissingType(ptr())),
        Some(Found::Composite) => return Err(RouteError::BadType(ptr())),
        Some(Found::Str(s)) => s,
        // The literal, not a reformatted value: `7.250` and `1e2` keep their text,
        // which is also what the event-type column holds (see `encode::TEXT`).
        Some(Found::Num(n)) => Cow::Borrowed(n),
        Some(Found::Bool(v)) => Cow::Borrowed(if v { "true" } else { "false" }),
    };
    let event_type = match raw_type {
        Cow::Borrowed(b) => escape_partition_cow(b),
        Cow::Owned(o) => Cow::Owned(escape_partition_value(&o)),
    };
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
    let date = utc_date(event_time_us)
        .ok_or_else(|| RouteError::BadTime(String::new(), "out of range".into()))?;
    Ok(Routed {
        event_type,
        date,
        event_time_us,
    })
}

const DAY_US: i64 = 86_400_000_000;

/// The UTC date of a time in microseconds. Consecutive events nearly always
/// fall on the same day, so the last day's date is kept per thread.
fn utc_date(us: i64) -> Option<NaiveDate> {
    thread_local! {
        static LAST: std::cell::Cell<Option<(i64, NaiveDate)>> = const { std::cell::Cell::new(None) };
    }
    let day = us.div_euclid(DAY_US);
    if let Some((d, date)) = LAST.get() {
        if d == day {
            return Some(date);
        }
    }
    // 719_163: days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
    let date = i32::try_from(day + 719_163)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)?;
    LAST.set(Some((day, date)));
    Some(date)
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

fn parse_time(v: Found<'_>, fmt: TimeFormat) -> Result<i64, String> {
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
        Found::Num(n) => match parse_number(n.as_bytes()).ok_or("invalid number")? {
            Number::I64(n) => n.checked_mul(scale).ok_or("out of range")?,
            Number::U64(_) => return Err("out of range".into()),
            Number::F64(f) => {
                let us = f * scale as f64;
                if us.abs() > 9.0e18 {
                    return Err("out of range".into());
                }
                us.round() as i64
            }
        },
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
    escape_partition_cow(raw).into_owned()
}

fn needs_escape(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}' | '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^')
        // Unicode control and line/paragraph separators would break logs and some S3 tools.
        || c.is_control()
        || c == '\u{2028}'
        || c == '\u{2029}'
}

/// The ASCII characters [`needs_escape`] lets through, as a table: event
/// types are nearly always short ASCII words, checked once per event.
const PLAIN_ASCII: [bool; 128] = {
    let mut t = [false; 128];
    let mut c = 0x20;
    while c < 0x7f {
        t[c] = true;
        c += 1;
    }
    let escaped = b"\"#%'*/:=?\\{[]^";
    let mut i = 0;
    while i < escaped.len() {
        t[escaped[i] as usize] = false;
        i += 1;
    }
    t
};

/// [`escape_partition_value`] without a copy when nothing needs escaping.
pub fn escape_partition_cow(raw: &str) -> Cow<'_, str> {
    let clean = if raw.is_ascii() {
        raw.bytes().all(|b| PLAIN_ASCII[b as usize])
    } else {
        !raw.chars().any(needs_escape)
    };
    if clean && !raw.is_empty() && raw != "." && raw != ".." {
        return Cow::Borrowed(raw);
    }
    if raw.is_empty() {
        return Cow::Borrowed(HIVE_DEFAULT_PARTITION);
    }
    if raw == "." || raw == ".." {
        return Cow::Owned(raw.replace('.', "%2E"));
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn cfg() -> RouteConfig {
        RouteConfig {
            event_type: Pointer::parse("/event_params/event_type").unwrap(),
            event_time: Some(Pointer::parse("/event_timestamp_ms/ts_ms").unwrap()),
            time_format: TimeFormat::Millis,
            time_fallback_kafka: false,
            max_event_bytes: 1 << 20,
        }
    }

    pub(super) const EV: &str = r#"{"event_params":{"event_type_id":1,"event_type":"track_playback","user_id":"u1","country":"SE"},"event_timestamp_ms":{"ts":1716000000,"ts_ms":1716000000123}}"#;

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
        let (ea, eb) = (ev(1_716_076_799_999), ev(1_716_076_800_000));
        let a = route(&c, ea.as_bytes(), None).unwrap();
        let b = route(&c, eb.as_bytes(), None).unwrap();
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
        // UTF-8 is checked inside strings only (the scanner takes nothing else
        // but ASCII): long strings (16 and 8 bytes at a time), short tails, keys,
        // escaped bytes, and truncated sequences all count as invalid UTF-8.
        let no_time = RouteConfig {
            event_time: None,
            ..cfg()
        };
        let ok = |p: &[u8]| route(&no_time, p, Some(1)).map(|r| r.event_type.into_owned());
        let t = br#"{"event_params":{"event_type":"play"},"x":"#;
        for bad in [
            &b"\"0123456789abcdef\xff0123456789\""[..],
            b"\"ab\xc3\"",
            b"\"\\\xff\"",
            b"{\"k\xe2\x82\":1}",
            b"[\"\xf0\x9f\x98\"]",
        ] {
            let doc = [&t[..], bad, b"}"].concat();
            assert!(
                matches!(ok(&doc), Err(RouteError::InvalidUtf8(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(&doc),
                ok(&doc)
            );
        }
        let good = [&t[..], "\"Zürich – 東京 😀 0123456789\"}".as_bytes()].concat();
        assert_eq!(ok(&good), Ok("play".to_string()));
        let ty = r#"{"event_params":{"event_type":"café_€"}}"#.as_bytes();
        assert_eq!(ok(ty), Ok(escape_partition_value("café_€")));
        assert!(matches!(
            ok(b"{\"a\":1}\xff"),
            Err(RouteError::InvalidJson(_))
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
    fn a_number_event_type_routes_by_its_literal_and_a_string_of_it_with_it() {
        let c = cfg();
        let ty = |t: &str| {
            let ev = format!(
                r#"{{"event_params":{{"event_type":{t}}},"event_timestamp_ms":{{"ts_ms":1}}}}"#
            );
            // Both scanners, as the index may decline a document.
            let by_index = route(&c, ev.as_bytes(), None).map(|r| r.event_type.into_owned());
            let targets: [&[String]; 1] = [c.event_type.segments()];
            let by_bytes = match scan::scan(ev.as_bytes(), &targets) {
                Ok([Some(Found::Num(n)), _]) => n.to_string(),
                Ok([Some(Found::Str(s)), _]) => s.into_owned(),
                other => format!("{other:?}"),
            };
            (by_index, by_bytes)
        };
        for (t, want) in [
            ("5", "5"),
            (r#""5""#, "5"),
            ("7.250", "7.250"),
            ("-1e2", "-1e2"),
            ("18446744073709551616", "18446744073709551616"),
        ] {
            assert_eq!(ty(t), (Ok(want.to_string()), want.to_string()), "{t}");
        }
        // A literal serde_json cannot read is refused, as before.
        assert!(matches!(ty("1e400").0, Err(RouteError::InvalidJson(_))));
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
        assert_eq!((&*r.event_type, r.event_time_us), ("7", 86_400_500_000));
        c.time_format = TimeFormat::Micros;
        let r = route(&c, br#"{"t":[0, true],"at":"86400000000"}"#, None).unwrap();
        assert_eq!(
            (&*r.event_type, r.date.to_string().as_str()),
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

    #[test]
    fn the_ascii_escape_table_agrees_with_needs_escape() {
        for c in 0u8..0x80 {
            assert_eq!(PLAIN_ASCII[c as usize], !needs_escape(c as char), "{c:#x}");
        }
        assert_eq!(escape_partition_cow("track_playback"), "track_playback");
        assert_eq!(escape_partition_cow("a/b c"), "a%2Fb c");
        assert_eq!(escape_partition_cow("über\u{2028}"), "über%E2%80%A8");
    }

    #[test]
    fn utc_dates_match_chrono_across_days_and_the_epoch() {
        let day = 86_400_000_000i64;
        let mut times = vec![0, -1, 1, day - 1, day, -day, -day - 1, MIN_US, MAX_US];
        // Alternate between two days so that the per-thread cache is replaced each time.
        for k in 0..200i64 {
            times.push(1_716_000_000_000_000 + (k % 2) * day + k * 7_919_000_000);
        }
        for us in times {
            let want = DateTime::<chrono::Utc>::from_timestamp_micros(us).map(|t| t.date_naive());
            assert_eq!(utc_date(us), want, "{us}");
        }
    }
}
