//! JSON rows → Arrow columns for a known schema, in one pass per row.
//!
//! arrow-json first tokenises every row into a tape and then walks the tape
//! once per column; this decoder appends each value to its column as it
//! reads it, which halves the cost of the decode for the writer's rows.
//!
//! It is stricter than arrow-json where arrow-json would quietly change a
//! value: an integer column takes only integer literals that fit an `i64`
//! (arrow-json truncates `1.5` to `1` and parses the string `"12"`), numbers
//! must be JSON numbers and finite, and a field may appear once per object.
//! A number column never loses digits: an integer literal beyond ±2^53 in a Float64
//! column is a mismatch (a double cannot hold it exactly), and UInt64 columns
//! (integers above `i64::MAX`) take only non-negative integer literals.
//! A row it refuses is a [`Fail::Mismatch`]: the caller then takes the
//! row-by-row path that widens the schema (an integer column that meets
//! `1.5` becomes Float64) or dead-letters the row with this reason.
//!
//! Types it does not build (anything but Utf8, Int64, UInt64, Float64, Boolean,
//! List and non-empty Struct with nullable fields) are [`Fail::Unsupported`]
//! and the caller uses arrow-json for them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array, ListArray,
    NullBufferBuilder, RecordBatch, StringArray, StructArray, UInt64Array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, SchemaRef};

use crate::route::scan::{scan_plain, short_eq, skip_ws};

/// Why a batch was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// A row does not fit the schema (unknown or repeated field, another
    /// type, a literal that is not JSON): the reason, for a dead letter.
    Mismatch(String),
    /// The schema holds a type this decoder does not build.
    Unsupported,
}

/// Decode `n` rows (each one JSON object) into a batch of `schema`.
///
/// All or nothing: the first row that does not fit fails the whole call.
/// `input_bytes` bounds the rows' total size (no string column can need more).
pub fn decode<'a>(
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'a [u8]>,
    n: usize,
    input_bytes: usize,
) -> Result<RecordBatch, Fail> {
    if schema.fields().is_empty() {
        return Err(Fail::Unsupported);
    }
    let mut root = Obj::new(schema.fields(), n)?;
    let mut got = 0;
    for row in rows {
        let mut p = Parser { b: row, i: 0 };
        root.object(&mut p)?;
        p.ws();
        if p.i != row.len() {
            return Err(p.mismatch("trailing characters after the object"));
        }
        got += 1;
        if got == RESERVE_AFTER && n > 2 * RESERVE_AFTER {
            root.reserve_strings(got, n, input_bytes);
        }
    }
    if got != n {
        return Err(Fail::Mismatch(format!("decoded {got} rows, expected {n}")));
    }
    let (cols, _) = root.finish()?;
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| Fail::Mismatch(e.to_string()))
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn mismatch(&self, what: &str) -> Fail {
        Fail::Mismatch(format!("{what} at byte {}", self.i))
    }

    #[inline]
    fn ws(&mut self) {
        self.i = skip_ws(self.b, self.i);
    }

    /// The next byte after whitespace (not consumed).
    #[inline]
    fn peek(&mut self) -> Result<u8, Fail> {
        self.ws();
        match self.b.get(self.i) {
            Some(&c) => Ok(c),
            None => Err(self.mismatch("unexpected end of the row")),
        }
    }

    #[inline]
    fn expect(&mut self, c: u8, what: &str) -> Result<(), Fail> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(self.mismatch(what))
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.mismatch("invalid literal"))
        }
    }

    /// The key whose opening quote is at `i`: borrowed unless it has escapes.
    #[inline]
    fn key(&mut self) -> Result<Cow<'a, [u8]>, Fail> {
        let start = self.i + 1;
        let (j, _) = scan_plain(self.b, start);
        match self.b.get(j) {
            Some(b'"') => {
                self.i = j + 1;
                Ok(Cow::Borrowed(&self.b[start..j]))
            }
            _ => {
                let mut out = Vec::new();
                self.string_into(&mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Append the string whose opening quote is at `i`, unescaped, to `out`.
    /// UTF-8 is checked by the caller over the whole column at the end.
    #[inline]
    fn string_into(&mut self, out: &mut Vec<u8>) -> Result<(), Fail> {
        let b = self.b;
        let mut j = self.i + 1;
        loop {
            let (k, _) = scan_plain(b, j);
            out.extend_from_slice(&b[j..k]);
            j = k;
            match b.get(j) {
                Some(b'"') => {
                    self.i = j + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i = j;
                    j = self.escape(j + 1, out)?;
                }
                Some(_) => {
                    self.i = j;
                    return Err(self.mismatch("control character in a string"));
                }
                None => {
                    self.i = j;
                    return Err(self.mismatch("unterminated string"));
                }
            }
        }
    }

    /// The escape whose letter is at `j`; returns the index after it.
    fn escape(&self, j: usize, out: &mut Vec<u8>) -> Result<usize, Fail> {
        let simple = match self.b.get(j) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let hi = self.hex4(j + 1)?;
                let (c, next) = match hi {
                    0xD800..=0xDBFF => {
                        if self.b.get(j + 5..j + 7) != Some(b"\\u") {
                            return Err(self.mismatch("lone surrogate in a \\u escape"));
                        }
                        let lo = self.hex4(j + 7)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.mismatch("lone surrogate in a \\u escape"));
                        }
                        (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), j + 11)
                    }
                    0xDC00..=0xDFFF => return Err(self.mismatch("lone surrogate in a \\u escape")),
                    c => (c, j + 5),
                };
                let c = char::from_u32(c).ok_or_else(|| self.mismatch("invalid \\u escape"))?;
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                return Ok(next);
            }
            _ => return Err(self.mismatch("invalid escape")),
        };
        out.push(simple);
        Ok(j + 1)
    }

    fn hex4(&self, j: usize) -> Result<u32, Fail> {
        let digits = self
            .b
            .get(j..j + 4)
            .ok_or_else(|| self.mismatch("short \\u escape"))?;
        let mut v = 0;
        for &d in digits {
            let x = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.mismatch("invalid \\u escape"))?;
            v = v * 16 + x;
        }
        Ok(v)
    }

    /// Digits at `i` (at least one); their end.
    #[inline]
    fn digits(&self, mut j: usize) -> usize {
        while self.b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    }

    /// A JSON integer literal (`-?(0|[1-9][0-9]*)`) that fits an i64; a
    /// fraction or exponent is a mismatch (the column must widen to Float64).
    #[inline]
    fn int(&mut self) -> Result<i64, Fail> {
        let b = self.b;
        let neg = b.get(self.i) == Some(&b'-');
        let start = self.i + neg as usize;
        let end = self.digits(start);
        let ds = &b[start..end];
        if ds.is_empty() || (ds.len() > 1 && ds[0] == b'0') {
            return Err(self.mismatch("invalid number"));
        }
        if matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
            return Err(self.mismatch("a fraction or exponent in an integer column"));
        }
        // Accumulate negatively so that i64::MIN fits.
        let mut v: i64 = 0;
        for &d in ds {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_sub((d - b'0') as i64))
                .ok_or_else(|| self.mismatch("integer out of the Int64 range"))?;
        }
        let v = if neg {
            v
        } else {
            v.checked_neg()
                .ok_or_else(|| self.mismatch("integer out of the Int64 range"))?
        };
        self.i = end;
        Ok(v)
    }

    /// A JSON integer literal that fits a u64; a sign, fraction or exponent is a mismatch.
    fn uint(&mut self) -> Result<u64, Fail> {
        let b = self.b;
        if b.get(self.i) == Some(&b'-') {
            return Err(self.mismatch("a negative integer in an unsigned (UInt64) column"));
        }
        let end = self.digits(self.i);
        let ds = &b[self.i..end];
        if ds.is_empty() || (ds.len() > 1 && ds[0] == b'0') {
            return Err(self.mismatch("invalid number"));
        }
        if matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
            return Err(self.mismatch("a fraction or exponent in an integer column"));
        }
        let mut v: u64 = 0;
        for &d in ds {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add((d - b'0') as u64))
                .ok_or_else(|| self.mismatch("integer out of the UInt64 range"))?;
        }
        self.i = end;
        Ok(v)
    }

    /// A number or `true`/`false` at `i` (`c` is its first byte), as written.
    fn scalar_literal(&mut self, c: u8) -> Result<&'a [u8], Fail> {
        let start = self.i;
        match c {
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'-' | b'0'..=b'9' => self.i = self.number_end()?.1,
            _ => return Err(self.mismatch("expected a string, number or boolean")),
        }
        Ok(&self.b[start..self.i])
    }

    /// The end of the JSON number at `i`
    /// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) and of its integer part.
    #[inline]
    fn number_end(&self) -> Result<(usize, usize), Fail> {
        let b = self.b;
        let mut j = self.i + (b.get(self.i) == Some(&b'-')) as usize;
        let int_end = self.digits(j);
        if int_end == j || (int_end - j > 1 && b[j] == b'0') {
            return Err(self.mismatch("invalid number"));
        }
        j = int_end;
        if b.get(j) == Some(&b'.') {
            let e = self.digits(j + 1);
            if e == j + 1 {
                return Err(self.mismatch("invalid number"));
            }
            j = e;
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let e = self.digits(j);
            if e == j {
                return Err(self.mismatch("invalid number"));
            }
            j = e;
        }
        Ok((int_end, j))
    }

    /// A JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), finite as f64.
    /// An integer literal a double cannot hold exactly (beyond ±2^53) is a
    /// mismatch: the row then goes to the path that keeps integers exact.
    #[inline]
    fn float(&mut self) -> Result<f64, Fail> {
        let b = self.b;
        let start = self.i;
        let (int_end, j) = self.number_end()?;
        // 2^53 has 16 digits: shorter integer literals are always exact.
        if int_end - start >= 16 && int_end == j {
            let exact = std::str::from_utf8(&b[start..int_end])
                .ok()
                .and_then(|s| s.parse::<i128>().ok())
                .is_some_and(|v| v.unsigned_abs() <= MAX_EXACT_INT);
            if !exact {
                return Err(self.mismatch(
                    "an integer beyond 2^53 in a Float64 column (a double cannot hold it exactly)",
                ));
            }
        }
        // The slice is ASCII digits and signs, so the conversion cannot fail.
        let v = std::str::from_utf8(&b[start..j])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .ok_or_else(|| self.mismatch("number out of the Float64 range"))?;
        self.i = j;
        Ok(v)
    }
}

/// One column being built.
enum Col {
    Utf8 {
        offsets: Vec<i32>,
        values: Vec<u8>,
        nulls: NullBufferBuilder,
        /// Numbers and booleans are taken as their literal text (the
        /// event-type column, marked with [`crate::encode::TEXT`]).
        scalars: bool,
    },
    Int64 {
        values: Vec<i64>,
        nulls: NullBufferBuilder,
    },
    UInt64 {
        values: Vec<u64>,
        nulls: NullBufferBuilder,
    },
    Float64 {
        values: Vec<f64>,
        nulls: NullBufferBuilder,
    },
    Boolean {
        values: BooleanBufferBuilder,
        nulls: NullBufferBuilder,
    },
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        child: Box<Col>,
        nulls: NullBufferBuilder,
    },
    Struct(Obj),
}

/// An object's fields: the root row or a struct column.
struct Obj {
    fields: Fields,
    cols: Vec<Col>,
    /// For wide objects: field name → index (narrow ones are searched in order).
    index: Option<HashMap<Box<[u8]>, usize>>,
    /// `seen[k] == stamp` when field `k` was set in the current object.
    seen: Vec<u32>,
    stamp: u32,
    nulls: NullBufferBuilder,
}

/// The largest integer magnitude a double holds exactly (2^53).
pub const MAX_EXACT_INT: u128 = 1 << 53;

/// After this many rows, string columns reserve room for the rest at the
/// rate seen so far (growing by doubling would copy each column ~twice).
const RESERVE_AFTER: usize = 64;

/// Above this many fields, keys are looked up in a map.
const LINEAR_FIELDS: usize = 16;

impl Obj {
    fn new(fields: &Fields, cap: usize) -> Result<Self, Fail> {
        let cols = fields
            .iter()
            .map(|f| {
                if !f.is_nullable() {
                    return Err(Fail::Unsupported);
                }
                Col::new(f, cap)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index = (fields.len() > LINEAR_FIELDS).then(|| {
            fields
                .iter()
                .enumerate()
                .map(|(k, f)| (f.name().as_bytes().into(), k))
                .collect()
        });
        Ok(Obj {
            fields: fields.clone(),
            cols,
            index,
            seen: vec![0; fields.len()],
            stamp: 0,
            nulls: NullBufferBuilder::new(cap),
        })
    }

    /// The finished columns and the object's own validity.
    fn finish(mut self) -> Result<(Vec<ArrayRef>, Option<NullBuffer>), Fail> {
        let nulls = self.nulls.finish();
        let cols = self
            .cols
            .into_iter()
            .map(Col::finish)
            .collect::<Result<_, _>>()?;
        Ok((cols, nulls))
    }

    /// Reserve string bytes for `total` rows from what `done` rows took (+1/8),
    /// never more than `cap` (the input's size: a few long rows first must not
    /// make a million short ones reserve gigabytes).
    fn reserve_strings(&mut self, done: usize, total: usize, cap: usize) {
        for c in &mut self.cols {
            match c {
                Col::Utf8 { values, .. } => {
                    let more = (values.len() / done).saturating_mul(total - done);
                    let more = more.saturating_add(more / 8);
                    values.reserve(more.min(cap.saturating_sub(values.len())));
                }
                Col::Struct(o) => o.reserve_strings(done, total, cap),
                _ => {}
            }
        }
    }

    /// The index of field `key`; `hint` is where the previous key's successor sits
    /// (producers mostly write fields in one order).
    #[inline]
    fn find(&self, key: &[u8], hint: usize) -> Option<usize> {
        if let Some(f) = self.fields.get(hint) {
            if short_eq(f.name().as_bytes(), key) {
                return Some(hint);
            }
        }
        match &self.index {
            Some(m) => m.get(key).copied(),
            None => self
                .fields
                .iter()
                .position(|f| short_eq(f.name().as_bytes(), key)),
        }
    }

    fn object(&mut self, p: &mut Parser<'_>) -> Result<(), Fail> {
        p.expect(b'{', "expected an object")?;
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.fill(0);
            self.stamp = 1;
        }
        let mut set = 0;
        let mut hint = 0;
        if p.peek()? == b'}' {
            p.i += 1;
        } else {
            loop {
                if p.peek()? != b'"' {
                    return Err(p.mismatch("expected a field name"));
                }
                let key = p.key()?;
                let Some(k) = self.find(&key, hint) else {
                    return Err(p.mismatch(&format!(
                        "field {:?} is not in the schema",
                        String::from_utf8_lossy(&key)
                    )));
                };
                if self.seen[k] == self.stamp {
                    return Err(p.mismatch(&format!(
                        "field {:?} appears twice",
                        String::from_utf8_lossy(&key)
                    )));
                }
                self.seen[k] = self.stamp;
                set += 1;
                hint = k + 1;
                p.expect(b':', "expected ':'")?;
                self.cols[k].value(p)?;
                match p.peek()? {
                    b',' => p.i += 1,
                    b'}' => {
                        p.i += 1;
                        break;
                    }
                    _ => return Err(p.mismatch("expected ',' or '}'")),
                }
            }
        }
        if set < self.cols.len() {
            for (col, &s) in self.cols.iter_mut().zip(&self.seen) {
                if s != self.stamp {
                    col.null();
                }
            }
        }
        self.nulls.append_non_null();
        Ok(())
    }
}

impl Col {
    fn new(f: &Field, cap: usize) -> Result<Self, Fail> {
        Ok(match f.data_type() {
            DataType::Utf8 => {
                let mut offsets = Vec::with_capacity(cap + 1);
                offsets.push(0);
                Col::Utf8 {
                    offsets,
                    values: Vec::new(),
                    nulls: NullBufferBuilder::new(cap),
                    scalars: f.metadata().contains_key(crate::encode::TEXT),
                }
            }
            DataType::Int64 => Col::Int64 {
                values: Vec::with_capacity(cap),
                nulls: NullBufferBuilder::new(cap),
            },
            DataType::UInt64 => Col::UInt64 {
                values: Vec::with_capacity(cap),
                nulls: NullBufferBuilder::new(cap),
            },
            DataType::Float64 => Col::Float64 {
                values: Vec::with_capacity(cap),
                nulls: NullBufferBuilder::new(cap),
            },
            DataType::Boolean => Col::Boolean {
                values: BooleanBufferBuilder::new(cap),
                nulls: NullBufferBuilder::new(cap),
            },
            DataType::List(f) if f.is_nullable() => Col::List {
                field: f.clone(),
                offsets: vec![0],
                child: Box::new(Col::new(f, 0)?),
                nulls: NullBufferBuilder::new(cap),
            },
            DataType::Struct(fs) if !fs.is_empty() => Col::Struct(Obj::new(fs, cap)?),
            _ => return Err(Fail::Unsupported),
        })
    }

    fn len(&self) -> usize {
        match self {
            Col::Utf8 { nulls, .. }
            | Col::Int64 { nulls, .. }
            | Col::UInt64 { nulls, .. }
            | Col::Float64 { nulls, .. }
            | Col::Boolean { nulls, .. }
            | Col::List { nulls, .. } => nulls.len(),
            Col::Struct(o) => o.nulls.len(),
        }
    }

    fn null(&mut self) {
        match self {
            Col::Utf8 { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
            Col::Int64 { values, nulls } => {
                values.push(0);
                nulls.append_null();
            }
            Col::UInt64 { values, nulls } => {
                values.push(0);
                nulls.append_null();
            }
            Col::Float64 { values, nulls } => {
                values.push(0.0);
                nulls.append_null();
            }
            Col::Boolean { values, nulls } => {
                values.append(false);
                nulls.append_null();
            }
            Col::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
            Col::Struct(o) => {
                // Children stay aligned with the parent: null under a null struct.
                for c in &mut o.cols {
                    c.null();
                }
                o.nulls.append_null();
            }
        }
    }

    fn value(&mut self, p: &mut Parser<'_>) -> Result<(), Fail> {
        let c = p.peek()?;
        if c == b'n' {
            p.literal(b"null")?;
            self.null();
            return Ok(());
        }
        match self {
            Col::Utf8 {
                offsets,
                values,
                nulls,
                scalars,
            } => {
                if c == b'"' {
                    p.string_into(values)?;
                } else if *scalars {
                    values.extend_from_slice(p.scalar_literal(c)?);
                } else {
                    return Err(p.mismatch("expected a string"));
                }
                let end = i32::try_from(values.len()).map_err(|_| Fail::Unsupported)?;
                offsets.push(end);
                nulls.append_non_null();
            }
            Col::Int64 { values, nulls } => {
                if c != b'-' && !c.is_ascii_digit() {
                    return Err(p.mismatch("expected an integer"));
                }
                values.push(p.int()?);
                nulls.append_non_null();
            }
            Col::UInt64 { values, nulls } => {
                if c != b'-' && !c.is_ascii_digit() {
                    return Err(p.mismatch("expected an integer"));
                }
                values.push(p.uint()?);
                nulls.append_non_null();
            }
            Col::Float64 { values, nulls } => {
                if c != b'-' && !c.is_ascii_digit() {
                    return Err(p.mismatch("expected a number"));
                }
                values.push(p.float()?);
                nulls.append_non_null();
            }
            Col::Boolean { values, nulls } => {
                match c {
                    b't' => p.literal(b"true").map(|()| values.append(true))?,
                    b'f' => p.literal(b"false").map(|()| values.append(false))?,
                    _ => return Err(p.mismatch("expected a boolean")),
                }
                nulls.append_non_null();
            }
            Col::List {
                offsets,
                child,
                nulls,
                ..
            } => {
                if c != b'[' {
                    return Err(p.mismatch("expected an array"));
                }
                p.i += 1;
                if p.peek()? == b']' {
                    p.i += 1;
                } else {
                    loop {
                        child.value(p)?;
                        match p.peek()? {
                            b',' => p.i += 1,
                            b']' => {
                                p.i += 1;
                                break;
                            }
                            _ => return Err(p.mismatch("expected ',' or ']'")),
                        }
                    }
                }
                let end = i32::try_from(child.len()).map_err(|_| Fail::Unsupported)?;
                offsets.push(end);
                nulls.append_non_null();
            }
            Col::Struct(o) => {
                if c != b'{' {
                    return Err(p.mismatch("expected an object"));
                }
                o.object(p)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, Fail> {
        let bad = |e: arrow::error::ArrowError| Fail::Mismatch(e.to_string());
        Ok(match self {
            Col::Utf8 {
                offsets,
                values,
                mut nulls,
                ..
            } => {
                // Checks UTF-8 over the whole column at once (and the offsets).
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                Arc::new(
                    StringArray::try_new(offsets, Buffer::from_vec(values), nulls.finish())
                        .map_err(bad)?,
                )
            }
            Col::Int64 { values, mut nulls } => {
                Arc::new(Int64Array::try_new(values.into(), nulls.finish()).map_err(bad)?)
            }
            Col::UInt64 { values, mut nulls } => {
                Arc::new(UInt64Array::try_new(values.into(), nulls.finish()).map_err(bad)?)
            }
            Col::Float64 { values, mut nulls } => {
                Arc::new(Float64Array::try_new(values.into(), nulls.finish()).map_err(bad)?)
            }
            Col::Boolean {
                mut values,
                mut nulls,
            } => Arc::new(BooleanArray::new(values.finish(), nulls.finish())),
            Col::List {
                field,
                offsets,
                child,
                mut nulls,
            } => {
                let values = child.finish()?;
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                Arc::new(ListArray::try_new(field, offsets, values, nulls.finish()).map_err(bad)?)
            }
            Col::Struct(o) => {
                let fields = o.fields.clone();
                let (children, nulls) = o.finish()?;
                Arc::new(StructArray::try_new(fields, children, nulls).map_err(bad)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use arrow::json::ReaderBuilder;

    fn schema() -> SchemaRef {
        let inner = Fields::from(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
        ]);
        Arc::new(Schema::new(vec![
            Field::new("p", DataType::Struct(inner.clone()), true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            ),
            Field::new(
                "items",
                DataType::List(Arc::new(Field::new_list_field(
                    DataType::Struct(inner),
                    true,
                ))),
                true,
            ),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    fn ours(s: &SchemaRef, rows: &[&str]) -> Result<RecordBatch, Fail> {
        decode(s, rows.iter().map(|r| r.as_bytes()), rows.len(), usize::MAX)
    }

    fn arrow_json(s: &SchemaRef, rows: &[&str]) -> RecordBatch {
        let mut d = ReaderBuilder::new(s.clone())
            .with_batch_size(rows.len().max(1))
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        let text = rows.join("\n");
        assert_eq!(d.decode(text.as_bytes()).unwrap(), text.len());
        d.flush().unwrap().unwrap()
    }

    #[test]
    fn string_reservations_never_exceed_the_input() {
        // 64 rows of 20 KB first, then (as the estimate goes) a million short ones:
        // reserving at the first rows' rate asked for ~20 GB and aborted.
        let s = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let long = format!(r#"{{"s":"{}"}}"#, "x".repeat(20_000));
        let mut obj = Obj::new(s.fields(), 0).unwrap();
        for _ in 0..RESERVE_AFTER {
            let mut p = Parser {
                b: long.as_bytes(),
                i: 0,
            };
            obj.object(&mut p).unwrap();
        }
        let input = RESERVE_AFTER * long.len() + 1_000_000 * 10;
        obj.reserve_strings(RESERVE_AFTER, 1_000_000, input);
        let Col::Utf8 { values, .. } = &obj.cols[0] else {
            panic!("a string column")
        };
        assert!(
            values.capacity() <= input,
            "{} > {input}",
            values.capacity()
        );
        // And the whole decode of such rows works.
        let mut rows: Vec<String> = vec![long.clone(); RESERVE_AFTER];
        rows.extend((0..1000).map(|i| format!(r#"{{"s":"{i}"}}"#)));
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let total: usize = refs.iter().map(|r| r.len()).sum();
        let b = decode(&s, refs.iter().map(|r| r.as_bytes()), refs.len(), total).unwrap();
        assert_eq!(b.num_rows(), RESERVE_AFTER + 1000);
    }

    #[test]
    fn same_arrays_as_arrow_json_for_rows_both_accept() {
        let s = schema();
        let rows = [
            r#"{"p":{"id":1,"name":"a","score":1.5,"ok":true},"tags":["x","y"],"n":-9223372036854775808}"#,
            r#"{"n":9223372036854775807,"p":{"ok":false,"name":"b\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00c"}}"#,
            r#" { "p" : null , "tags" : [ ] , "items" : [ {"id":2} , null , {} ] } "#,
            r#"{"p":{"id":null,"name":null,"score":-0.0,"ok":null},"tags":null,"items":null,"n":null}"#,
            r#"{"p":{"score":12,"id":0},"tags":[null,"über",""],"items":[]}"#,
            r#"{"p":{"score":1e-7,"name":"日本語"},"n":-0}"#,
            r#"{"p":{"score":6.02E+23}}"#,
            r#"{}"#,
        ];
        let a = ours(&s, &rows).unwrap();
        let b = arrow_json(&s, &rows);
        assert_eq!(a, b);
        assert_eq!(a.num_rows(), rows.len());
    }

    #[test]
    fn every_row_shape_the_batch_takes_matches_arrow_json_one_by_one() {
        // Field order, missing fields and nulls vary per row: the hint and the
        // null filling must keep every column aligned.
        let s = schema();
        let mut rows = Vec::new();
        for i in 0..200 {
            let id = if i % 3 == 0 {
                "null".to_string()
            } else {
                i.to_string()
            };
            rows.push(match i % 4 {
                0 => format!(r#"{{"n":{i},"p":{{"id":{id},"name":"u{i}"}}}}"#),
                1 => format!(r#"{{"p":{{"name":"u{i}","id":{id},"ok":true}},"n":{i}}}"#),
                2 => format!(r#"{{"tags":["t{i}"],"items":[{{"score":{i}.25}}]}}"#),
                _ => format!(r#"{{"p":{{"score":{i}}},"items":[null]}}"#),
            });
        }
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        assert_eq!(ours(&s, &rows).unwrap(), arrow_json(&s, &rows));
    }

    fn reason(s: &SchemaRef, row: &str) -> String {
        match ours(s, &[row]) {
            Err(Fail::Mismatch(m)) => m,
            other => panic!("{row}: expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn rows_arrow_json_would_bend_are_mismatches_with_reasons() {
        let s = schema();
        let cases = [
            // arrow-json truncates this to 1, and reads the string as 12.
            (r#"{"n":1.5}"#, "fraction or exponent in an integer column"),
            (r#"{"n":1e3}"#, "fraction or exponent in an integer column"),
            (r#"{"n":"12"}"#, "expected an integer"),
            (r#"{"n":9223372036854775808}"#, "out of the Int64 range"),
            (r#"{"n":-9223372036854775809}"#, "out of the Int64 range"),
            (r#"{"n":01}"#, "invalid number"),
            (r#"{"n":-}"#, "invalid number"),
            (r#"{"p":{"score":1e400}}"#, "out of the Float64 range"),
            (r#"{"p":{"score":1.}}"#, "invalid number"),
            (r#"{"p":{"score":.5}}"#, "expected a number"),
            (r#"{"p":{"score":1e}}"#, "invalid number"),
            (r#"{"p":{"name":5}}"#, "expected a string"),
            (r#"{"p":{"ok":"true"}}"#, "expected a boolean"),
            (r#"{"p":{"ok":tru}}"#, "invalid literal"),
            (r#"{"p":"x"}"#, "expected an object"),
            (r#"{"tags":"x"}"#, "expected an array"),
            (r#"{"tags":["a" "b"]}"#, "expected ',' or ']'"),
            (r#"{"q":1}"#, "\"q\" is not in the schema"),
            (r#"{"n":1,"n":2}"#, "\"n\" appears twice"),
            (r#"{"p":{"name":"\ud800"}}"#, "lone surrogate"),
            (r#"{"p":{"name":"\udc00x"}}"#, "lone surrogate"),
            (r#"{"p":{"name":"\x"}}"#, "invalid escape"),
            (r#"{"p":{"name":"\u12"}}"#, "invalid \\u escape"),
            (r#"{"p":{"name":"a"#, "unterminated string"),
            ("{\"p\":{\"name\":\"a\u{1}\"}}", "control character"),
            (r#"{"n":1} x"#, "trailing characters"),
            (r#"{"n":1"#, "unexpected end of the row"),
            (r#"{"n" 1}"#, "expected ':'"),
            (r#"{"n":1 "p":null}"#, "expected ',' or '}'"),
            (r#"{1:2}"#, "expected a field name"),
            (r#"[1]"#, "expected an object"),
        ];
        for (row, want) in cases {
            let got = reason(&s, row);
            assert!(got.contains(want), "{row}: {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn invalid_utf8_and_unsupported_types_are_refused() {
        let s = schema();
        let row = b"{\"p\":{\"name\":\"\xff\"}}".as_slice();
        assert!(matches!(
            decode(&s, std::iter::once(row), 1, row.len()),
            Err(Fail::Mismatch(m)) if m.contains("utf-8") || m.contains("UTF-8") || m.contains("utf8")
        ));
        let ts = Arc::new(Schema::new(vec![Field::new(
            "t",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        )]));
        assert_eq!(ours(&ts, &["{}"]).unwrap_err(), Fail::Unsupported);
        let strict = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        assert_eq!(ours(&strict, &["{}"]).unwrap_err(), Fail::Unsupported);
        assert_eq!(
            ours(&Arc::new(Schema::empty()), &["{}"]).unwrap_err(),
            Fail::Unsupported
        );
    }

    #[test]
    fn wide_objects_use_the_index_and_fill_missing_fields_with_nulls() {
        let fields: Vec<Field> = (0..40)
            .map(|k| Field::new(format!("f{k}"), DataType::Int64, true))
            .collect();
        let s = Arc::new(Schema::new(fields));
        let rows = [r#"{"f39":39,"f0":0,"f17":17}"#, r#"{"f\u0031":1}"#];
        let a = ours(&s, &rows).unwrap();
        assert_eq!(a, arrow_json(&s, &rows));
        assert_eq!(a.column(0).null_count(), 1);
        assert_eq!(a.column(5).null_count(), 2);
    }

    /// Rows of `schema()`'s shape with random values, field order and gaps.
    fn random_row(rng: &mut rand::rngs::SmallRng) -> String {
        use rand::Rng;
        let pick = |rng: &mut rand::rngs::SmallRng, opts: &[&str]| -> String {
            opts[rng.random_range(0..opts.len())].to_string()
        };
        let strings = [
            "\"a\"",
            "\"\"",
            "\"x\\\"y\"",
            "\"\\u00e9t\\u00e9\"",
            "\"日本\"",
            "null",
        ];
        let ints = ["0", "-1", "42", "9223372036854775807", "null"];
        let floats = ["0.5", "-1e3", "7", "2.5E-3", "null"];
        let inner = |rng: &mut rand::rngs::SmallRng| {
            let mut fields = vec![
                format!("\"id\":{}", pick(rng, &ints)),
                format!("\"name\":{}", pick(rng, &strings)),
                format!("\"score\":{}", pick(rng, &floats)),
                format!("\"ok\":{}", pick(rng, &["true", "false", "null"])),
            ];
            fields.retain(|_| rng.random_bool(0.7));
            let k = fields.len();
            if k > 1 {
                let a = rng.random_range(0..k);
                fields.swap(a, k - 1);
            }
            format!("{{{}}}", fields.join(","))
        };
        let mut top = vec![
            format!(
                "\"p\":{}",
                if rng.random_bool(0.1) {
                    "null".into()
                } else {
                    inner(rng)
                }
            ),
            format!(
                "\"tags\":[{}]",
                (0..rng.random_range(0..3))
                    .map(|_| pick(rng, &strings))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!(
                "\"items\":[{}]",
                (0..rng.random_range(0..3))
                    .map(|_| inner(rng))
                    .collect::<Vec<_>>()
                    .join(" , ")
            ),
            format!("\"n\":{}", pick(rng, &ints)),
        ];
        top.retain(|_| rng.random_bool(0.8));
        format!("{{{}}}", top.join(","))
    }

    #[test]
    fn random_rows_decode_as_arrow_json_does_and_mutated_rows_never_panic() {
        use rand::{Rng, SeedableRng};
        let s = schema();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let rows: Vec<String> = (0..2000).map(|_| random_row(&mut rng)).collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        assert_eq!(ours(&s, &refs).unwrap(), arrow_json(&s, &refs));

        // Mutations: whatever the bytes, a result or a refusal, never a panic; and
        // a mutated row we accept is one arrow-json reads the same way.
        let noise = b"\"\\{}[],:0-e.E+ntfu\x80\xff\x01 ";
        let mut accepted = 0;
        for i in 0..20_000 {
            let mut row = rows[i % rows.len()].clone().into_bytes();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=row.len());
                let c = noise[rng.random_range(0..noise.len())];
                match rng.random_range(0..3) {
                    0 => row.insert(at, c),
                    1 if at < row.len() => {
                        row.remove(at);
                    }
                    _ if at < row.len() => row[at] = c,
                    _ => row.push(c),
                }
            }
            let Ok(ours) = decode(&s, std::iter::once(row.as_slice()), 1, row.len()) else {
                continue;
            };
            accepted += 1;
            let mut d = ReaderBuilder::new(s.clone())
                .with_strict_mode(true)
                .build_decoder()
                .unwrap();
            let theirs = d.decode(&row).and_then(|_| d.flush()).unwrap_or_else(|e| {
                panic!("{}: arrow-json refused: {e}", String::from_utf8_lossy(&row))
            });
            assert_eq!(Some(ours), theirs, "{}", String::from_utf8_lossy(&row));
        }
        assert!(
            accepted > 300,
            "only {accepted} mutated rows were still valid"
        );
    }
}
