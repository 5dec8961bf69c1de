//! Route: decide where one raw Kafka message goes — a lake partition
//! `(table, date, event_type)` or the dead-letter output with a reason.
//!
//! Routing reads the event type and the event time at configurable JSON
//! pointers in a single pass over the bytes that checks the document's
//! structure and builds nothing but the two scalars (a serde walk with
//! `IgnoredAny` cost as much as arrow-json's whole decode). Compact ASCII or
//! UTF-8 documents without escapes take a structural-index fast path
//! (`index`); everything else, and every invalid document, the byte scanner
//! below, which gives the reasons. The values are untrusted: they are escaped
//! Hive-style before they become part of an object key.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDate};

mod index;

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

/// A JSON number's value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    I64(i64),
    U64(u64),
    F64(f64),
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
        None => scan(payload, &targets[..n])?,
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

/// The byte scanner: the values at `targets`, or why the document cannot be routed.
fn scan<'a>(
    payload: &'a [u8],
    targets: &[&[String]],
) -> Result<[Option<Found<'a>>; 2], RouteError> {
    let mut scan = Scan {
        b: payload,
        i: 0,
        targets,
        found: [None, None],
        reserved: None,
    };
    scan.ws();
    let object = scan.peek() == Some(b'{');
    scan.value(0, if object { (1 << targets.len()) - 1 } else { 0 })?;
    scan.ws();
    if scan.i < payload.len() {
        return Err(scan.bad("trailing characters"));
    }
    if !object {
        return Err(RouteError::NotAnObject);
    }
    match scan.reserved {
        Some(name) => Err(RouteError::ReservedField(name)),
        None => Ok(scan.found),
    }
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

/// Nesting deeper than this is refused (serde_json's limit): hostile input must
/// not overflow the stack.
const MAX_DEPTH: usize = 128;

/// Bit `k` set: target `k`'s pointer matches the path down to the current value.
type Active = u8;

/// A single-pass scanner over one JSON document: it checks the structure
/// (strings, literals, numbers, nesting, trailing bytes) and captures the
/// scalars at the target pointers, without building values or a tape. It is
/// not a full validator (e.g. it accepts `01` or a bad `\u` escape); what it
/// lets through, arrow-json refuses later and the row is dead-lettered there.
struct Scan<'a, 't> {
    b: &'a [u8],
    i: usize,
    targets: &'t [&'t [String]],
    found: [Option<Found<'a>>; 2],
    reserved: Option<String>,
}

impl<'a> Scan<'a, '_> {
    fn bad(&self, what: &str) -> RouteError {
        RouteError::InvalidJson(format!("{what} at byte {}", self.i))
    }

    #[inline]
    fn ws(&mut self) {
        self.i = skip_ws(self.b, self.i);
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The string whose opening quote is at `i`: its raw bytes and whether it has escapes.
    ///
    /// Outside strings the scanner accepts ASCII only, so checking UTF-8 here,
    /// and only for strings with a byte >= 0x80, covers the whole document.
    #[inline]
    fn string(&mut self) -> Result<(&'a [u8], bool), RouteError> {
        let b = self.b;
        let start = self.i + 1;
        let mut j = start;
        let mut esc = false;
        // Whether a byte >= 0x80 was seen: then the string is checked as UTF-8. Whole
        // blocks are looked at, so bytes past the closing quote may set it too (a
        // needless check, never a missed one).
        let mut high = false;
        while j < b.len() {
            let (k, h) = scan_plain(b, j);
            high |= h;
            j = k;
            if j >= b.len() {
                break;
            }
            match b[j] {
                b'"' => {
                    let raw = &b[start..j];
                    if high {
                        if let Err(e) = std::str::from_utf8(raw) {
                            return Err(RouteError::InvalidUtf8(start + e.valid_up_to()));
                        }
                    }
                    self.i = j + 1;
                    return Ok((raw, esc));
                }
                b'\\' => {
                    esc = true;
                    high |= b.get(j + 1).is_some_and(|&c| c >= 0x80);
                    j += 2;
                }
                _ => {
                    self.i = j;
                    return Err(self.bad("control character in a string"));
                }
            }
        }
        self.i = b.len();
        Err(self.bad("EOF while parsing a string"))
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), RouteError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.bad("invalid literal"))
        }
    }

    fn number(&mut self) -> Result<&'a [u8], RouteError> {
        let start = self.i;
        while let Some(c) = self.b.get(self.i) {
            if !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                break;
            }
            self.i += 1;
        }
        let s = &self.b[start..self.i];
        if !s.iter().any(u8::is_ascii_digit) {
            return Err(self.bad("invalid number"));
        }
        Ok(s)
    }

    /// Targets whose pointer ends at this value.
    #[inline]
    fn ending(&self, depth: usize, active: Active) -> Active {
        let mut m = 0;
        for (k, t) in self.targets.iter().enumerate() {
            if active & (1 << k) != 0 && t.len() == depth {
                m |= 1 << k;
            }
        }
        m
    }

    /// Targets that continue into the child named by `seg`.
    #[inline]
    fn descend(&self, depth: usize, active: Active, seg: impl Fn(&str) -> bool) -> Active {
        let mut m = 0;
        for (k, t) in self.targets.iter().enumerate() {
            if active & (1 << k) != 0 && t.len() > depth && seg(&t[depth]) {
                m |= 1 << k;
            }
        }
        m
    }

    fn capture(
        &mut self,
        ends: Active,
        v: impl FnOnce() -> Result<Found<'a>, RouteError>,
    ) -> Result<(), RouteError> {
        if ends == 0 {
            return Ok(());
        }
        let v = v()?;
        for k in 0..self.targets.len() {
            if ends & (1 << k) != 0 {
                self.found[k] = Some(v.clone());
            }
        }
        Ok(())
    }

    /// One value whose path has `depth` segments.
    fn value(&mut self, depth: usize, active: Active) -> Result<(), RouteError> {
        if depth > MAX_DEPTH {
            return Err(self.bad("recursion limit exceeded"));
        }
        self.ws();
        let Some(c) = self.peek() else {
            return Err(self.bad("EOF while parsing a value"));
        };
        let ends = self.ending(depth, active);
        match c {
            b'{' => {
                self.capture(ends, || Ok(Found::Composite))?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.bad("expected a key"));
                    }
                    let (raw, esc) = self.string()?;
                    let owned;
                    let key: &[u8] = if esc {
                        owned = unescape(raw).map_err(|e| self.bad(&e))?;
                        owned.as_bytes()
                    } else {
                        raw
                    };
                    if depth == 0
                        && key.first() == Some(&b'_')
                        && RESERVED_COLUMNS.iter().any(|r| r.as_bytes() == key)
                    {
                        self.reserved = Some(String::from_utf8_lossy(key).into_owned());
                    }
                    let sub = if active == 0 {
                        0
                    } else {
                        self.descend(depth, active, |seg| short_eq(seg.as_bytes(), key))
                    };
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.bad("expected ':'"));
                    }
                    self.i += 1;
                    self.value(depth + 1, sub)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.bad("expected ',' or '}'")),
                    }
                }
            }
            b'[' => {
                self.capture(ends, || Ok(Found::Composite))?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                let mut idx = 0usize;
                loop {
                    let sub = if active == 0 {
                        0
                    } else {
                        self.descend(depth, active, |seg| seg.parse::<usize>() == Ok(idx))
                    };
                    self.value(depth + 1, sub)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.bad("expected ',' or ']'")),
                    }
                    idx += 1;
                }
            }
            b'"' => {
                let (raw, esc) = self.string()?;
                let at = self.i;
                self.capture(ends, || {
                    let s = if esc {
                        unescape(raw).map(Cow::Owned)
                    } else {
                        std::str::from_utf8(raw)
                            .map(Cow::Borrowed)
                            .map_err(|e| e.to_string())
                    };
                    s.map(Found::Str)
                        .map_err(|e| RouteError::InvalidJson(format!("{e} at byte {at}")))
                })
            }
            b't' => {
                self.literal(b"true")?;
                self.capture(ends, || Ok(Found::Bool(true)))
            }
            b'f' => {
                self.literal(b"false")?;
                self.capture(ends, || Ok(Found::Bool(false)))
            }
            b'n' => {
                self.literal(b"null")?;
                self.capture(ends, || Ok(Found::Null))
            }
            b'-' | b'0'..=b'9' => {
                let s = self.number()?;
                let at = self.i;
                self.capture(ends, || {
                    number_literal(s).ok_or_else(|| {
                        RouteError::InvalidJson(format!("invalid number at byte {at}"))
                    })
                })
            }
            _ => Err(self.bad("expected a value")),
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `v` that is zero (exact for the lowest one).
#[inline]
fn swar_zero(v: u64) -> u64 {
    v.wrapping_sub(LO) & !v & HI
}

/// High bit set in each byte of `v` below `n` (n <= 128; exact for the lowest one).
#[inline]
fn swar_less(v: u64, n: u8) -> u64 {
    v.wrapping_sub(LO * n as u64) & !v & HI
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// `a == b` for short byte strings (JSON keys, pointer segments, field
/// names) without a `memcmp` call: two overlapping loads per side.
#[inline(always)]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    #[inline(always)]
    fn w8(s: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(
            s.get(i..i + 8)
                .and_then(|w| w.try_into().ok())
                .unwrap_or([0; 8]),
        )
    }
    #[inline(always)]
    fn w4(s: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(
            s.get(i..i + 4)
                .and_then(|w| w.try_into().ok())
                .unwrap_or([0; 4]),
        )
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        _ => a == b,
    }
}

/// From `j`, the index of the first quote, backslash or control byte (or
/// `b.len()`), and whether a byte >= 0x80 was seen on the way. Whole blocks
/// are looked at, so bytes past the stop may set the flag too (a needless
/// UTF-8 check for the caller, never a missed one).
#[inline(always)]
pub(crate) fn scan_plain(b: &[u8], mut j: usize) -> (usize, bool) {
    let mut high = false;
    // Sixteen (SSE2), then eight (SWAR) bytes at a time, then one.
    #[cfg(target_arch = "x86_64")]
    while j + 16 <= b.len() {
        // SAFETY: the 16 bytes at `j` are inside `b` (checked above).
        let (m, h) = unsafe { special16(b.as_ptr().add(j)) };
        high |= h;
        if m != 0 {
            return (j + m.trailing_zeros() as usize, high);
        }
        j += 16;
    }
    while let Some(w) = b.get(j..j + 8) {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        high |= w & HI != 0;
        let m = swar_zero(w ^ (LO * b'"' as u64))
            | swar_zero(w ^ (LO * b'\\' as u64))
            | swar_less(w, 0x20);
        if m != 0 {
            // The lowest flagged byte is exact (false positives only sit above it).
            return (j + (m.trailing_zeros() / 8) as usize, high);
        }
        j += 8;
    }
    while let Some(&c) = b.get(j) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        high |= c >= 0x80;
        j += 1;
    }
    (j, high)
}

/// Bit `k` of the first value set when byte `k` at `p` is a quote, a backslash
/// or a control byte; the second tells whether any of the 16 bytes is >= 0x80.
///
/// # Safety
/// `p` must point at 16 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn special16(p: *const u8) -> (u32, bool) {
    use std::arch::x86_64::*;
    // SSE2 is part of x86_64, so no runtime detection is needed.
    // SAFETY: the caller guarantees 16 readable bytes; the load is unaligned.
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
    // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
    let low = _mm_set1_epi8(0x1f);
    let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
    let m = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control));
    (m as u32, _mm_movemask_epi8(v) != 0)
}

/// A number found at a pointer: its literal, if serde_json would read it
/// (finite), so that what routes is what the encoder can store.
fn number_literal(s: &[u8]) -> Option<Found<'_>> {
    parse_number(s)?;
    // A number's grammar is ASCII.
    std::str::from_utf8(s).ok().map(Found::Num)
}

/// A JSON number as serde_json reads it: integers that fit stay exact,
/// anything else becomes a float.
fn parse_number(s: &[u8]) -> Option<Number> {
    // The common case first: an integer of at most 18 digits cannot overflow.
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if (1..=18).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
        let v = digits
            .iter()
            .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
        return Some(Number::I64(if negative { -v } else { v }));
    }
    parse_number_std(s)
}

/// [`parse_number`] through the standard library's parsers.
fn parse_number_std(s: &[u8]) -> Option<Number> {
    let s = std::str::from_utf8(s).ok()?;
    if !s.contains(['.', 'e', 'E']) {
        if let Ok(v) = s.parse::<i64>() {
            return Some(Number::I64(v));
        }
        if let Ok(v) = s.parse::<u64>() {
            return Some(Number::U64(v));
        }
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Number::F64)
}

/// Decode a string's escapes (rare in keys and partition values: the slow path).
fn unescape(raw: &[u8]) -> Result<String, String> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).map_err(|e| e.to_string())
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
            let by_bytes = match scan(ev.as_bytes(), &targets) {
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
    fn scanner_handles_escapes_arrays_duplicates_and_whitespace() {
        let c = cfg();
        // An escaped key still names the field; escapes in the value are decoded.
        let r = route(
            &c,
            br#" { "event_params" : { "event\u005ftype" : "a\"b\\c\/d" } , "event_timestamp_ms":{"ts_ms": 1716000000123 } } "#,
            None,
        )
        .unwrap();
        assert_eq!(r.event_type, "a%22b%5Cc%2Fd");
        // The last of duplicate keys wins (as serde_json's maps do).
        let r = route(
            &c,
            br#"{"event_params":{"event_type":"x","event_type":"y"},"event_timestamp_ms":{"ts_ms":1}}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.event_type, "y");
        // Pointers into arrays; numbers, booleans and strings as types.
        let mut c2 = c.clone();
        c2.event_type = Pointer::parse("/items/1/kind").unwrap();
        let ev = br#"{"items":[{"kind":"no"},{"kind":7}],"event_timestamp_ms":{"ts_ms":1}}"#;
        assert_eq!(route(&c2, ev, None).unwrap().event_type, "7");
        let ev = br#"{"items":[[],{"kind":true}],"event_timestamp_ms":{"ts_ms":1}}"#;
        assert_eq!(route(&c2, ev, None).unwrap().event_type, "true");
        // Structural damage anywhere is invalid JSON, even far from the pointers.
        for bad in [
            &br#"{"event_params":{"event_type":"a"},"x":[1,2,}"#[..],
            br#"{"event_params":{"event_type":"a"},"x":tru}"#,
            br#"{"event_params":{"event_type":"a"} "x":1}"#,
            br#"{"event_params":{"event_type":"a"},"x":"unterminated}"#,
            br#"{"event_params":{"event_type":"a"},"x":-}"#,
            b"{\"a\":\"tab\there\"}",
        ] {
            assert!(
                matches!(route(&c, bad, None), Err(RouteError::InvalidJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(route(&c, b"\"s\"", None), Err(RouteError::NotAnObject));
        assert!(matches!(
            route(&c, b"nul", None),
            Err(RouteError::InvalidJson(_))
        ));
    }

    #[test]
    fn string_scan_finds_quotes_backslashes_and_controls_at_every_position() {
        let c = cfg();
        let no_time = RouteConfig {
            event_time: None,
            ..cfg()
        };
        // Past 32 bytes so that every position of a 16- and an 8-byte block is hit.
        for pad in 0..40 {
            let filler = "x".repeat(pad);
            let at = |mid: &[u8]| {
                let doc = [
                    &br#"{"event_params":{"event_type":"t"},"s":""#[..],
                    filler.as_bytes(),
                    mid,
                    filler.as_bytes(),
                    b"\"}",
                ]
                .concat();
                route(&no_time, &doc, Some(1)).map(|r| r.event_type.into_owned())
            };
            assert_eq!(at("é€".as_bytes()), Ok("t".to_string()));
            assert!(matches!(at(b"\xe2\x82"), Err(RouteError::InvalidUtf8(_))));
            assert!(matches!(at(b"\xff"), Err(RouteError::InvalidUtf8(_))));
            assert!(matches!(at(b"\x1f"), Err(RouteError::InvalidJson(_))));
            assert_eq!(at(b"\\\""), Ok("t".to_string()));
            let ev = format!(
                r#"{{"event_params":{{"event_type":"{filler}q\"{filler}"}},"event_timestamp_ms":{{"ts_ms":1}}}}"#
            );
            let r = route(&c, ev.as_bytes(), None).unwrap();
            assert_eq!(r.event_type, format!("{filler}q%22{filler}"));
            let bad = format!(r#"{{"a":"{filler}{}","#, '\u{1}');
            assert!(matches!(
                route(&c, bad.as_bytes(), None),
                Err(RouteError::InvalidJson(_))
            ));
        }
    }

    #[test]
    fn short_eq_matches_slice_equality_at_every_length_and_position() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(short_eq(&a, &a.clone()), "len {n}");
            for k in 0..n {
                let mut b = a.clone();
                b[k] ^= 0x20;
                assert!(!short_eq(&a, &b), "len {n}, differing at {k}");
            }
            let mut longer = a.clone();
            longer.push(b'z');
            assert!(!short_eq(&a, &longer) && !short_eq(&longer, &a), "len {n}");
        }
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

    /// Random documents, valid and damaged: wherever the structural-index fast
    /// path accepts one, the byte scanner accepts it too and finds the same values.
    #[test]
    fn the_fast_path_agrees_with_the_byte_scanner() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        fn value(r: &mut SmallRng, depth: usize, out: &mut Vec<u8>) {
            let sp = |r: &mut SmallRng, out: &mut Vec<u8>| {
                if r.random_bool(0.1) {
                    out.push(b' ');
                }
            };
            sp(r, out);
            let pick = if depth > 4 {
                r.random_range(2..9)
            } else {
                r.random_range(0..9)
            };
            match pick {
                0 | 1 => {
                    let arr = pick == 1;
                    out.push(if arr { b'[' } else { b'{' });
                    for i in 0..r.random_range(0..4) {
                        if i > 0 {
                            out.push(b',');
                        }
                        if !arr {
                            sp(r, out);
                            let keys: [&[u8]; 9] = [
                                b"event_params",
                                b"event_type",
                                b"event_timestamp_ms",
                                b"ts_ms",
                                b"a",
                                b"items",
                                b"_offset",
                                b"",
                                b"kind",
                            ];
                            out.push(b'"');
                            out.extend_from_slice(keys[r.random_range(0..keys.len())]);
                            out.push(b'"');
                            sp(r, out);
                            out.push(b':');
                        }
                        value(r, depth + 1, out);
                    }
                    sp(r, out);
                    out.push(if arr { b']' } else { b'}' });
                }
                2 | 3 => {
                    let strs: [&str; 7] = [
                        "x",
                        "track_playback",
                        "",
                        "caf\u{e9}",
                        "a\\\"b",
                        "{[:,]}",
                        "a\\u0041",
                    ];
                    out.push(b'"');
                    out.extend_from_slice(strs[r.random_range(0..strs.len())].as_bytes());
                    out.push(b'"');
                }
                4 | 5 => {
                    let nums = [
                        "0",
                        "-1",
                        "1716000000123",
                        "1.5e3",
                        "01",
                        "1-2",
                        "-",
                        "99999999999999999999",
                        "1e999",
                    ];
                    out.extend_from_slice(nums[r.random_range(0..nums.len())].as_bytes());
                }
                _ => {
                    let lits = ["true", "false", "null", "tru", "nul"];
                    out.extend_from_slice(lits[r.random_range(0..lits.len())].as_bytes());
                }
            }
            sp(r, out);
        }
        let pointers: [&[&str]; 4] = [
            &["/event_params/event_type", "/event_timestamp_ms/ts_ms"],
            &["/a"],
            &["/a/a/a", "/kind"],
            &["/items/0/kind"],
        ];
        let mut r = SmallRng::seed_from_u64(7);
        let (mut fast, mut total) = (0, 0);
        for i in 0..60_000 {
            let mut doc = Vec::new();
            if r.random_bool(0.5) {
                doc.extend_from_slice(b"{\"event_params\":");
                value(&mut r, 1, &mut doc);
                doc.extend_from_slice(b",\"a\":");
                value(&mut r, 1, &mut doc);
                doc.push(b'}');
            } else {
                value(&mut r, 0, &mut doc);
            }
            if i % 3 == 0 && !doc.is_empty() {
                // Damage: insert, delete or overwrite one byte.
                let at = r.random_range(0..doc.len());
                let junk = b"{}[]:,\" \\\nx1-e\x01\xff";
                match r.random_range(0..3) {
                    0 => doc.insert(at, junk[r.random_range(0..junk.len())]),
                    1 => {
                        doc.remove(at);
                    }
                    _ => doc[at] = junk[r.random_range(0..junk.len())],
                }
            }
            if i % 7 == 0 {
                // Long documents: tokens across 64-byte blocks.
                let pad = r.random_range(0..130);
                doc.splice(0..0, std::iter::repeat_n(b' ', pad));
            }
            let ptrs = pointers[i % pointers.len()];
            let owned: Vec<Pointer> = ptrs.iter().map(|p| Pointer::parse(p).unwrap()).collect();
            let targets: Vec<&[String]> = owned.iter().map(|p| p.segments()).collect();
            total += 1;
            if let Some(f) = index::scan(&doc, &targets) {
                fast += 1;
                assert_eq!(
                    scan(&doc, &targets),
                    Ok(f),
                    "{}",
                    String::from_utf8_lossy(&doc)
                );
            }
        }
        // The fast path takes the documents without escapes, controls or damage.
        assert!(fast * 8 > total, "{fast} of {total}");
    }

    #[test]
    fn the_fast_path_takes_compact_ascii_events() {
        let c = cfg();
        let targets = [
            c.event_type.segments(),
            c.event_time.as_ref().unwrap().segments(),
        ];
        let long = EV.replace("\"u1\"", &format!("\"{}\"", "u".repeat(300)));
        let utf8 = EV.replace("\"SE\"", "\"Sverige \u{1f1f8}\u{1f1ea}\"");
        for ev in [EV, &long, &utf8] {
            let f = index::scan(ev.as_bytes(), &targets).expect(ev);
            assert_eq!(Ok(f), scan(ev.as_bytes(), &targets));
        }
        // Around the depth limit both agree (past it the byte scanner gives the reason).
        for d in [100, 126, 127, 128, 129, 300] {
            let doc = format!("{{\"x\":{}1{}}}", "[".repeat(d), "]".repeat(d));
            let fast = index::scan(doc.as_bytes(), &targets);
            assert_eq!(fast.is_some(), d < 128, "depth {d}");
            assert_eq!(scan(doc.as_bytes(), &targets).is_ok(), d < 128, "depth {d}");
            if let Some(f) = fast {
                assert_eq!(Ok(f), scan(doc.as_bytes(), &targets), "depth {d}");
            }
        }
        // Outside its domain it leaves the decision to the byte scanner.
        for ev in [
            EV.replace("\"SE\"", "\"S\\u0045\""),
            EV.replace(",\"country\"", ",\n\"country\""),
            EV.replace("{\"event_params\"", "{\"_offset\":1,\"event_params\""),
        ] {
            assert!(index::scan(ev.as_bytes(), &targets).is_none(), "{ev}");
        }
    }

    #[test]
    fn the_integer_shortcut_parses_like_the_standard_library() {
        for s in [
            "0",
            "-0",
            "01",
            "7",
            "-7",
            "123456789012345678",
            "-123456789012345678",
            "999999999999999999",
            "1234567890123456789",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "18446744073709551616",
            "1.5",
            "-1e3",
            "1E400",
            "-",
            "",
            "1-2",
            "--1",
            "+1",
        ] {
            assert_eq!(
                parse_number(s.as_bytes()),
                parse_number_std(s.as_bytes()),
                "{s:?}"
            );
        }
    }
}
