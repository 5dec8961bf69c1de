//! The byte scanner: one pass over a JSON document that checks its structure
//! and captures the scalars at the routing pointers, building nothing else.
//!
//! It exists for speed. Routing needs two scalars of every event, and parsing
//! the document into a serde_json tree to read them, or even a serde walk with
//! `IgnoredAny`, cost as much as arrow-json's whole decode. Compact ASCII or
//! UTF-8 documents without escapes take the structural-index fast path first
//! (`index`, beside this file); everything else, and every invalid document,
//! comes here, which is why the dead-letter reasons come from here.
//!
//! The SWAR and SSE2 helpers (`skip_ws`, `short_eq`, `scan_plain`) are shared
//! with the encoder's JSON reader and the pipeline, which have the same hot
//! loops over JSON bytes and topic names.

use std::borrow::Cow;

use super::{Found, RouteError, RESERVED_COLUMNS};

/// The byte scanner: the values at `targets`, or why the document cannot be routed.
pub(super) fn scan<'a>(
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

/// Nesting deeper than this is refused (serde_json's limit): hostile input must
/// not overflow the stack.
pub(super) const MAX_DEPTH: usize = 128;

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
pub(super) fn number_literal(s: &[u8]) -> Option<Found<'_>> {
    parse_number(s)?;
    // A number's grammar is ASCII.
    std::str::from_utf8(s).ok().map(Found::Num)
}

/// A JSON number as serde_json reads it: integers that fit stay exact,
/// anything else becomes a float.
pub(super) fn parse_number(s: &[u8]) -> Option<Number> {
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

/// A JSON number's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Number {
    I64(i64),
    U64(u64),
    F64(f64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{cfg, EV};
    use crate::route::{index, route, Pointer, RouteConfig};

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
