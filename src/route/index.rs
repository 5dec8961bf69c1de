//! The routing scan's fast path: a structural index (simdjson's first stage,
//! SSE2, 64 bytes at a time) and a walk over its tokens.
//!
//! The byte-at-a-time scanner in `scan.rs` spends most of its time between
//! tokens: skipping whitespace, dispatching on the next byte, recursing. Here
//! the bytes are classified in blocks (quotes, operators, the inside of
//! strings, the first byte of each number or literal), and the grammar walks
//! only the tokens, without recursion.
//!
//! It covers the common document: a compact JSON object of ASCII (UTF-8 only
//! inside strings), without escapes or control bytes, targets not inside
//! arrays. Anything else — including every invalid document — returns `None`,
//! and the byte scanner decides, with its reasons. So the fast path may be
//! stricter than the scanner, never more lenient, and where it accepts it must
//! find the same values (a differential test checks both).

// Elsewhere than on x86_64 the fast path always declines (the byte scanner decides).
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::borrow::Cow;

use super::scan::{number_literal, short_eq, MAX_DEPTH};
use super::{Found, RESERVED_COLUMNS};

/// Byte classes of one 64-byte block, one bit per byte.
#[derive(Default)]
struct Classes {
    quote: u64,
    /// `{ } [ ] : ,`
    op: u64,
    space: u64,
    /// Backslashes and control bytes: never on the fast path.
    bad: u64,
    high: u64,
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify(block: &[u8; 64]) -> Classes {
    use std::arch::x86_64::*;
    let mut c = Classes::default();
    for k in 0..4 {
        // SAFETY: SSE2 is part of x86_64; the 16 bytes at 16k are inside the block
        // (an unaligned load).
        unsafe {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
            let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            // '{' and '[' (0x7b, 0x5b) and '}' and ']' (0x7d, 0x5d) differ only in bit 5.
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let open = _mm_cmpeq_epi8(folded, _mm_set1_epi8(0x7b));
            let close = _mm_cmpeq_epi8(folded, _mm_set1_epi8(0x7d));
            let op = _mm_or_si128(_mm_or_si128(open, close), _mm_or_si128(eq(b':'), eq(b',')));
            // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
            let bad = _mm_or_si128(control, eq(b'\\'));
            let mask = |m: __m128i| (_mm_movemask_epi8(m) as u16 as u64) << (16 * k);
            c.quote |= mask(eq(b'"'));
            c.op |= mask(op);
            c.space |= mask(eq(b' '));
            c.bad |= mask(bad);
            c.high |= mask(v);
        }
    }
    c
}

/// [`classify`] with AVX2: two 32-byte halves instead of four 16-byte quarters.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn classify_avx2(block: &[u8; 64]) -> Classes {
    use std::arch::x86_64::*;
    let mut c = Classes::default();
    for k in 0..2 {
        // SAFETY: the 32 bytes at 32k are inside the block (an unaligned load).
        let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * k).cast()) };
        let eq = |b: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
        let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
        let open = _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(0x7b));
        let close = _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(0x7d));
        let op = _mm256_or_si256(
            _mm256_or_si256(open, close),
            _mm256_or_si256(eq(b':'), eq(b',')),
        );
        let low = _mm256_set1_epi8(0x1f);
        let control = _mm256_cmpeq_epi8(_mm256_max_epu8(v, low), low);
        let bad = _mm256_or_si256(control, eq(b'\\'));
        let mask = |m: __m256i| (_mm256_movemask_epi8(m) as u32 as u64) << (32 * k);
        c.quote |= mask(eq(b'"'));
        c.op |= mask(op);
        c.space |= mask(eq(b' '));
        c.bad |= mask(bad);
        c.high |= mask(v);
    }
    c
}

/// Bit `i` set when an odd number of bits at or below `i` are set in `x`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Token positions in document order: operators and quotes outside strings
/// (both quotes of a string; nothing between them) and the first byte of each
/// number or literal.
struct Tokens<'a> {
    b: &'a [u8],
    /// Start of the next block to classify.
    next_block: usize,
    base: usize,
    bits: u64,
    /// All ones when the previous block ended inside a string.
    in_string: u64,
    /// 1 when the previous block's last byte belonged to a number or literal.
    prev_scalar: u64,
    /// A byte outside the fast path's domain was seen.
    bail: bool,
    /// Bytes >= 0x80 were seen (inside strings): the document must be checked as UTF-8.
    high: bool,
    avx2: bool,
}

impl<'a> Tokens<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            next_block: 0,
            base: 0,
            bits: 0,
            in_string: 0,
            prev_scalar: 0,
            bail: false,
            high: false,
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            avx2: false,
        }
    }

    /// The next token's position; `None` at the end of the document or on a bail.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            if self.bail || !self.refill() {
                return None;
            }
        }
        let p = self.base + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(p)
    }

    /// Classify the next block; false at the end of the document.
    #[cfg(target_arch = "x86_64")]
    fn refill(&mut self) -> bool {
        let start = self.next_block;
        if start >= self.b.len() {
            return false;
        }
        let rest = &self.b[start..];
        let mut pad;
        let block: &[u8; 64] = match rest.first_chunk::<64>() {
            Some(full) => full,
            None => {
                // The last, partial block, padded with spaces (no tokens).
                pad = [b' '; 64];
                pad[..rest.len()].copy_from_slice(rest);
                &pad
            }
        };
        let c = if self.avx2 {
            // SAFETY: AVX2 was detected at run time.
            unsafe { classify_avx2(block) }
        } else {
            classify(block)
        };
        let inside = prefix_xor(c.quote) ^ self.in_string;
        self.in_string = ((inside as i64) >> 63) as u64;
        // Bits from an opening quote up to, not including, its closing quote.
        let outside = !inside;
        if c.bad != 0 || c.high & outside != 0 {
            self.bail = true;
            return false;
        }
        self.high |= c.high != 0;
        let scalar = !(c.quote | c.op | c.space) & outside;
        let starts = scalar & !((scalar << 1) | self.prev_scalar);
        self.prev_scalar = scalar >> 63;
        self.base = start;
        self.next_block = start + 64;
        self.bits = (c.op & outside) | c.quote | starts;
        true
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn refill(&mut self) -> bool {
        self.bail = true;
        false
    }
}

/// A number's bytes as the byte scanner accepts them (a sign, digits, `.`,
/// exponents; at least one digit), or `None`.
#[inline]
fn number_end(b: &[u8], p: usize) -> Option<usize> {
    let mut e = p;
    let mut digit = false;
    while let Some(&c) = b.get(e) {
        match c {
            b'0'..=b'9' => digit = true,
            b'-' | b'+' | b'.' | b'e' | b'E' => {}
            _ => break,
        }
        e += 1;
    }
    digit.then_some(e)
}

/// Whether a number or literal may end before `b[e]`: what follows must be a
/// token or a space (anything else would have continued it).
#[inline]
fn scalar_ends(b: &[u8], e: usize) -> bool {
    matches!(
        b.get(e),
        Some(b' ' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"')
    )
}

/// Scan `b` on the fast path: the values at `targets` (as `route::Scan`
/// would capture them) if `b` is a valid JSON object in the fast path's
/// domain with no reserved top-level field; `None` to let the byte scanner
/// decide.
///
/// The grammar is code position, not a state variable: a member loop (key,
/// colon, value) and, after each value, a loop over separators and closers.
pub(super) fn scan<'a>(b: &'a [u8], targets: &[&[String]]) -> Option<[Option<Found<'a>>; 2]> {
    let mut t = Tokens::new(b);
    let mut found: [Option<Found<'a>>; 2] = [None, None];
    // Per target: how many of its leading segments the current path matches.
    let mut matched = [0usize; 2];
    let n = targets.len().min(2);
    if b.get(t.next()?) != Some(&b'{') {
        return None;
    }
    // Depth of the innermost open container (the document is at 0); bit d of
    // `arrays` tells whether the container at depth d is an array.
    let mut depth = 0usize;
    let mut arrays: u128 = 0;
    let mut p = t.next()?;
    if b[p] != b'}' {
        'member: loop {
            // `p` is where a key should start, in the object at `depth`.
            if b[p] != b'"' {
                return None;
            }
            let q = t.next()?;
            let key = &b[p + 1..q];
            if depth == 0
                && key.first() == Some(&b'_')
                && RESERVED_COLUMNS.iter().any(|r| r.as_bytes() == key)
            {
                return None;
            }
            for k in 0..n {
                let seg = targets[k];
                let m = matched[k].min(depth);
                matched[k] =
                    if m == depth && seg.len() > depth && short_eq(seg[depth].as_bytes(), key) {
                        depth + 1
                    } else {
                        m
                    };
            }
            if b[t.next()?] != b':' {
                return None;
            }
            p = t.next()?;
            'value: loop {
                // `p` is a value's first token; the value is at depth + 1.
                let vd = depth + 1;
                let mut ends = 0u8;
                for k in 0..n {
                    if matched[k] == vd && targets[k].len() == vd {
                        ends |= 1 << k;
                    }
                }
                let v = match b[p] {
                    c @ (b'{' | b'[') => {
                        // The byte scanner reports the depth limit; it also keeps
                        // `arrays` within its 128 bits.
                        if vd >= MAX_DEPTH {
                            return None;
                        }
                        capture(&mut found, ends, || Found::Composite);
                        depth = vd;
                        p = t.next()?;
                        if c == b'{' {
                            arrays &= !(1 << depth);
                            if b[p] != b'}' {
                                continue 'member;
                            }
                        } else {
                            arrays |= 1 << depth;
                            // A pointer into an array needs element indices: not here.
                            for k in 0..n {
                                matched[k] = matched[k].min(depth);
                                if matched[k] == depth && targets[k].len() > depth {
                                    return None;
                                }
                            }
                            if b[p] != b']' {
                                continue 'value;
                            }
                        }
                        // Empty: the value ends here.
                        depth -= 1;
                        None
                    }
                    b'"' => {
                        let q = t.next()?;
                        if ends == 0 {
                            None
                        } else if t.high {
                            Some(Found::Str(Cow::Borrowed(
                                std::str::from_utf8(&b[p + 1..q]).ok()?,
                            )))
                        } else {
                            // SAFETY: no byte >= 0x80 so far (`Tokens::high`): ASCII.
                            Some(Found::Str(Cow::Borrowed(unsafe {
                                std::str::from_utf8_unchecked(&b[p + 1..q])
                            })))
                        }
                    }
                    b'-' | b'0'..=b'9' => {
                        let e = number_end(b, p)?;
                        if !scalar_ends(b, e) {
                            return None;
                        }
                        if ends == 0 {
                            None
                        } else {
                            Some(number_literal(&b[p..e])?)
                        }
                    }
                    c => {
                        let (word, v) = match c {
                            b't' => (&b"true"[..], Found::Bool(true)),
                            b'f' => (&b"false"[..], Found::Bool(false)),
                            b'n' => (&b"null"[..], Found::Null),
                            _ => return None,
                        };
                        if !b[p..].starts_with(word) || !scalar_ends(b, p + word.len()) {
                            return None;
                        }
                        Some(v)
                    }
                };
                if let Some(v) = v {
                    capture(&mut found, ends, || v);
                }
                // After a value: separators and closers.
                loop {
                    let c = b[t.next()?];
                    if arrays & (1 << depth) != 0 {
                        if c == b',' {
                            p = t.next()?;
                            continue 'value;
                        }
                        if c != b']' {
                            return None;
                        }
                    } else {
                        if c == b',' {
                            p = t.next()?;
                            continue 'member;
                        }
                        if c != b'}' {
                            return None;
                        }
                    }
                    if depth == 0 {
                        break 'member;
                    }
                    depth -= 1;
                }
            }
        }
    }
    // The document's object closed: only spaces may follow.
    if t.next().is_some() || t.bail || t.in_string != 0 {
        return None;
    }
    if t.high && std::str::from_utf8(b).is_err() {
        return None;
    }
    Some(found)
}

#[inline(always)]
fn capture<'a>(found: &mut [Option<Found<'a>>; 2], ends: u8, v: impl FnOnce() -> Found<'a>) {
    match ends {
        0 => {}
        1 => found[0] = Some(v()),
        2 => found[1] = Some(v()),
        _ => {
            let v = v();
            found[1] = Some(v.clone());
            found[0] = Some(v);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn prefix_xor_marks_the_inside_of_quote_pairs() {
        // Quotes at 1 and 4: bits 1..=3 inside.
        assert_eq!(prefix_xor(0b1_0010), 0b0_1110);
        assert_eq!(prefix_xor(1 << 63), 1 << 63);
        assert_eq!(prefix_xor(1), u64::MAX);
    }

    /// Both classifiers against a byte-at-a-time reference on random blocks.
    #[test]
    fn classifiers_agree_with_a_byte_loop() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut r = SmallRng::seed_from_u64(3);
        let alphabet = b"{}[]:,\" \\\t\n\x00\x1f\x20\x7f\x80\xffazAZ09;<=>@`|~";
        for _ in 0..5_000 {
            let mut block = [0u8; 64];
            for x in &mut block {
                *x = if r.random_bool(0.5) {
                    alphabet[r.random_range(0..alphabet.len())]
                } else {
                    r.random()
                };
            }
            let bit =
                |f: &dyn Fn(u8) -> bool| (0..64).fold(0u64, |m, i| m | (f(block[i]) as u64) << i);
            let want = [
                bit(&|c| c == b'"'),
                bit(&|c| b"{}[]:,".contains(&c)),
                bit(&|c| c == b' '),
                bit(&|c| c == b'\\' || c < 0x20),
                bit(&|c| c >= 0x80),
            ];
            let got = |c: Classes| [c.quote, c.op, c.space, c.bad, c.high];
            assert_eq!(got(classify(&block)), want, "{block:?}");
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected.
                assert_eq!(got(unsafe { classify_avx2(&block) }), want, "{block:?}");
            }
        }
    }

    #[test]
    fn tokens_skip_string_contents_across_blocks() {
        let mut doc = br#"{"a":"#.to_vec();
        doc.push(b'"');
        doc.extend(std::iter::repeat_n(b'{', 100));
        doc.extend_from_slice(br#"","b":123,"c":true}"#);
        let mut t = Tokens::new(&doc);
        let mut got = Vec::new();
        while let Some(p) = t.next() {
            got.push(doc[p]);
        }
        assert!(!t.bail);
        assert_eq!(got, b"{\"\":\"\",\"\":1,\"\":t}".to_vec());
    }
}
