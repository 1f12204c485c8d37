//! The end of a JSON object or array found by its brackets alone, 64 bytes at a time: the
//! quotes that are not escaped mark the strings (a prefix XOR), and only the brackets
//! outside them are counted. Nothing else is checked (numbers, literals, commas, colons,
//! escapes), so this is for values whose syntax is checked later anyway — the members of a
//! single record, which the normalizer's parse reads in full (see `scan`).
//!
//! It gives up (`None`) on what one of decoding's repairs would fix, so that a record it
//! passes is either valid JSON or broken beyond repair: a control character inside a
//! string or anywhere but as whitespace, a single quote outside a string. It also gives up
//! on nesting deeper than the caller allows and at the end of the input. (A record with
//! line breaks is checked in full instead: compacting it could join broken tokens.)
//!
//! On x86-64 the masks come from SSE2 (the baseline), or from AVX2 with the string mask as
//! one carry-less multiplication when the processor has them (AVX2, PCLMULQDQ and BMI1,
//! looked up in the standard library's cached feature flags on each call); both give the
//! same masks, so the same ends.

/// One bit per byte of a 64-byte block (bit `i` for byte `i`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// `{` and `[`.
    open: u64,
    /// `}` and `]`.
    close: u64,
    /// Bytes below 0x20.
    control: u64,
    single_quote: u64,
}

impl Masks {
    /// The masks of `b[at..at + 64]`, the bytes past the end of `b` read as spaces; with
    /// AVX2 when `WIDE` (only ever set on a processor that has it: see [`container_end`]).
    #[inline(always)]
    fn of<const WIDE: bool>(b: &[u8], at: usize) -> Masks {
        match b.get(at..at + 64) {
            Some(block) => Masks::of_any::<WIDE>(block.try_into().unwrap_or(&[b' '; 64])),
            None => {
                let mut block = [b' '; 64];
                let rest = b.get(at..).unwrap_or_default();
                block[..rest.len()].copy_from_slice(rest);
                Masks::of_any::<WIDE>(&block)
            }
        }
    }

    #[inline(always)]
    fn of_any<const WIDE: bool>(block: &[u8; 64]) -> Masks {
        #[cfg(target_arch = "x86_64")]
        if WIDE {
            // SAFETY: `WIDE` is only true in `wide::container_end`, called only after the
            // processor was found to have AVX2.
            return unsafe { Masks::of_block_avx2(block) };
        }
        Masks::of_block(block)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn of_block(block: &[u8; 64]) -> Masks {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        let mut m = Masks::default();
        for lane in 0..4 {
            // SAFETY: SSE2 is part of the x86-64 baseline; the load reads 16 of the 64 bytes
            // of `block` (`lane` < 4).
            let [quote, backslash, open, close, control, single_quote] = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().add(lane * 16).cast());
                // `[` and `]` are `{` and `}` with bit 5 clear; no other byte turns into them.
                let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let below = _mm_set1_epi8(0x1f);
                let bits = |x| u64::from(_mm_movemask_epi8(x) as u16);
                [
                    bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8))),
                    bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8))),
                    bits(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8))),
                    bits(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8))),
                    bits(_mm_cmpeq_epi8(_mm_max_epu8(v, below), below)),
                    bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\'' as i8))),
                ]
            };
            let shift = lane * 16;
            m.quote |= quote << shift;
            m.backslash |= backslash << shift;
            m.open |= open << shift;
            m.close |= close << shift;
            m.control |= control << shift;
            m.single_quote |= single_quote << shift;
        }
        m
    }

    /// The same masks 32 bytes at a time.
    ///
    /// # Safety
    /// The processor must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn of_block_avx2(block: &[u8; 64]) -> Masks {
        use std::arch::x86_64::{
            _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_max_epu8, _mm256_movemask_epi8, _mm256_or_si256,
            _mm256_set1_epi8,
        };
        let mut m = Masks::default();
        for half in 0..2 {
            // The load reads 32 of the 64 bytes of `block` (`half` < 2).
            let v = _mm256_loadu_si256(block.as_ptr().add(half * 32).cast());
            let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
            let below = _mm256_set1_epi8(0x1f);
            let bits = |x| u64::from(_mm256_movemask_epi8(x) as u32);
            let shift = half * 32;
            m.quote |= bits(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8))) << shift;
            m.backslash |= bits(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8))) << shift;
            m.open |= bits(_mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'{' as i8))) << shift;
            m.close |= bits(_mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'}' as i8))) << shift;
            m.control |= bits(_mm256_cmpeq_epi8(_mm256_max_epu8(v, below), below)) << shift;
            m.single_quote |= bits(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\'' as i8))) << shift;
        }
        m
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn of_block(block: &[u8; 64]) -> Masks {
        Masks::of_block_bytewise(block)
    }

    /// The masks one byte at a time (other targets, and the tests' reference).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn of_block_bytewise(block: &[u8; 64]) -> Masks {
        let mut m = Masks::default();
        for (i, &c) in block.iter().enumerate() {
            let bit = 1u64 << i;
            match c {
                b'"' => m.quote |= bit,
                b'\\' => m.backslash |= bit,
                b'{' | b'[' => m.open |= bit,
                b'}' | b']' => m.close |= bit,
                b'\'' => m.single_quote |= bit,
                0..=0x1f => m.control |= bit,
                _ => {}
            }
        }
        m
    }
}

/// The bytes escaped by a backslash (the one after each backslash that is not itself
/// escaped). `carry` holds bit 0 when the previous block's last byte escapes this block's
/// first, and is set for the next block.
#[inline(always)]
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    let mut esc = *carry;
    *carry = 0;
    let mut rest = backslash;
    while rest != 0 {
        let at = rest.trailing_zeros();
        rest &= rest - 1;
        if esc & (1 << at) != 0 {
            continue; // an escaped backslash escapes nothing
        }
        if at == 63 {
            *carry = 1;
        } else {
            esc |= 1 << (at + 1);
        }
    }
    esc
}

/// Bit `i` of the result is the XOR of bits `0..=i` of `x`: with `x` the quotes, the bytes
/// from an opening quote up to (not including) its closing one. With `WIDE`, one carry-less
/// multiplication by all ones.
#[inline(always)]
fn prefix_xor<const WIDE: bool>(x: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if WIDE {
        // SAFETY: as in `Masks::of`: `WIDE` only where the processor has PCLMULQDQ.
        return unsafe { prefix_xor_clmul(x) };
    }
    prefix_xor_shifts(x)
}

/// # Safety
/// The processor must have PCLMULQDQ (and SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
#[inline]
unsafe fn prefix_xor_clmul(x: u64) -> u64 {
    use std::arch::x86_64::{_mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set1_epi8, _mm_set_epi64x};
    _mm_cvtsi128_si64(_mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0)) as u64
}

#[inline(always)]
fn prefix_xor_shifts(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The index just past the bracket that closes the object or array opening at `start`
/// (`b[start]` is `{` or `[`), counting at most `max_depth` containers open at once; `None`
/// on the input this module gives up on (see above).
pub(crate) fn container_end(b: &[u8], start: usize, max_depth: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if wide::available() {
        // SAFETY: the processor has AVX2, PCLMULQDQ and BMI1.
        return unsafe { wide::container_end(b, start, max_depth) };
    }
    // SAFETY: the baseline variant needs nothing beyond the target's baseline.
    unsafe { walk::<false>(b, start, max_depth) }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    /// Whether the processor has what the wide variant uses.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("bmi1")
    }

    /// [`super::container_end`] compiled for AVX2 and PCLMULQDQ.
    ///
    /// # Safety
    /// [`available`] must be true.
    #[target_feature(enable = "avx2,pclmulqdq,bmi1")]
    pub(super) unsafe fn container_end(b: &[u8], start: usize, max_depth: usize) -> Option<usize> {
        // SAFETY: the caller's promise; this function is compiled with the features.
        unsafe { super::walk::<true>(b, start, max_depth) }
    }
}

/// [`container_end`] with the masks of `Masks::of::<WIDE>`.
///
/// # Safety
/// With `WIDE`, the processor must have AVX2, PCLMULQDQ and BMI1 (see `wide::available`).
#[inline(always)]
unsafe fn walk<const WIDE: bool>(b: &[u8], start: usize, max_depth: usize) -> Option<usize> {
    debug_assert!(matches!(b.get(start), Some(b'{' | b'[')));
    let mut depth = 0usize;
    let mut in_string = 0u64;
    let mut carry = 0u64;
    let mut at = start;
    while at < b.len() {
        let m = Masks::of::<WIDE>(b, at);
        let esc = escaped(m.backslash, &mut carry);
        let quotes = m.quote & !esc;
        let inside = prefix_xor::<WIDE>(quotes) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let mut end = None;
        let mut brackets = (m.open | m.close) & !inside & !esc;
        while brackets != 0 {
            let bit = brackets & brackets.wrapping_neg();
            brackets ^= bit;
            if m.open & bit != 0 {
                depth += 1;
                if depth > max_depth {
                    return None;
                }
            } else {
                // The first bracket is the opening one at `start`, so `depth` ≥ 1 here.
                depth -= 1;
                if depth == 0 {
                    end = Some(bit.trailing_zeros() as usize);
                    break;
                }
            }
        }
        // Only the bytes up to the end count (the block may run past it).
        let upto = end.map_or(u64::MAX, |e| u64::MAX >> (63 - e));
        if m.control & upto != 0 && bad_control(b, at, m.control & upto, inside) {
            return None;
        }
        if m.single_quote & !inside & upto != 0 {
            return None;
        }
        if let Some(e) = end {
            return Some(at + e + 1);
        }
        at += 64;
    }
    None
}

/// Whether a control character of the block at `at` is one a repair would fix or serde_json
/// refuses: any inside a string, and any but tab, line feed and carriage return outside.
#[cold]
fn bad_control(b: &[u8], at: usize, control: u64, inside: u64) -> bool {
    if control & inside != 0 {
        return true;
    }
    let mut rest = control;
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        // Bytes past the end are read as spaces, never as control characters.
        if !matches!(b.get(at + i), Some(b'\t' | b'\n' | b'\r')) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end by the baseline variant and, where the processor has it, the wide one, which
    /// must agree.
    fn both(b: &[u8], start: usize, max_depth: usize) -> Option<usize> {
        // SAFETY: the baseline variant.
        let narrow = unsafe { walk::<false>(b, start, max_depth) };
        #[cfg(target_arch = "x86_64")]
        if wide::available() {
            // SAFETY: just checked.
            let wide = unsafe { wide::container_end(b, start, max_depth) };
            assert_eq!(wide, narrow, "{}", String::from_utf8_lossy(b));
        }
        assert_eq!(container_end(b, start, max_depth), narrow);
        narrow
    }

    /// Every mask variant of `block` against the bytewise one.
    fn masks_agree(block: &[u8; 64]) {
        let want = Masks::of_block_bytewise(block);
        assert_eq!(Masks::of_block(block), want);
        #[cfg(target_arch = "x86_64")]
        if wide::available() {
            // SAFETY: just checked.
            assert_eq!(unsafe { Masks::of_block_avx2(block) }, want);
        }
    }

    #[test]
    fn prefix_xor_variants_agree() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..10_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if i < 64 { 1 << i } else { x };
            let want = (0..64).fold(0u64, |acc, k| {
                let bit = (v & (u64::MAX >> (63 - k))).count_ones() as u64 & 1;
                acc | bit << k
            });
            assert_eq!(prefix_xor_shifts(v), want);
            assert_eq!(prefix_xor::<false>(v), want);
            #[cfg(target_arch = "x86_64")]
            if wide::available() {
                // SAFETY: just checked.
                assert_eq!(unsafe { prefix_xor_clmul(v) }, want);
            }
        }
    }

    /// The end by a byte-at-a-time walk with the same rules (the reference).
    fn reference_end(b: &[u8], start: usize, max_depth: usize) -> Option<usize> {
        let (mut depth, mut in_string, mut escape) = (0usize, false, false);
        for (i, &c) in b.iter().enumerate().skip(start) {
            let whitespace = matches!(c, b'\t' | b'\n' | b'\r');
            if c < 0x20 && (in_string || !whitespace) || c == b'\'' && !in_string {
                return None;
            }
            if std::mem::take(&mut escape) {
                continue;
            }
            match c {
                b'\\' => escape = true,
                b'"' => in_string = !in_string,
                _ if in_string => {}
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max_depth {
                        return None;
                    }
                }
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }

    #[test]
    fn the_block_masks_match_the_bytewise_ones() {
        let mut block = [0u8; 64];
        for round in 0..4u8 {
            for (i, c) in block.iter_mut().enumerate() {
                *c = (i as u8).wrapping_mul(37).wrapping_add(round.wrapping_mul(64));
            }
            masks_agree(&block);
        }
        let all: Vec<u8> = (0..=255).collect();
        for chunk in all.chunks(64) {
            let block: [u8; 64] = chunk.try_into().unwrap();
            masks_agree(&block);
        }
    }

    #[test]
    fn ends_where_the_byte_walk_ends() {
        let parts = [
            r#"{"a":"x\"]}","b":[1,{"c":"\\"}]}"#,
            r#"["\\\\\"[",{"k":"}{"},[[[]]],"x\\"]"#,
            r#"{"s":"a\\\\\\\"b}","t":"'","u":{"v":"\u00e9"}}"#,
            "{\"a\":\n[1,\t2]\r}",
            r#"{"q":"\""}"#,
        ];
        for pad in 0..140 {
            for p in parts {
                // Shifted so that quotes, backslash runs and brackets cross block edges.
                let text = format!("{}{p}{}", " ".repeat(pad), " tail");
                let b = text.as_bytes();
                let want = reference_end(b, pad, 128);
                assert!(want.is_some(), "{text}");
                assert_eq!(both(b, pad, 128), want, "{text}");
                // Cut anywhere before the end: no end found.
                for cut in pad + 1..want.unwrap() {
                    assert_eq!(both(&b[..cut], pad, 128), None, "{}", &text[..cut]);
                }
            }
        }
    }

    #[test]
    fn gives_up_on_what_a_repair_would_fix() {
        for pad in 0..70 {
            let key = "k".repeat(pad);
            for bad in [
                format!("{{\"{key}\":\"a\nb\"}}"),
                format!("{{\"{key}\":\"a\u{1}b\"}}"),
                format!("{{\"{key}\":1,\u{1}\"b\":2}}"),
                format!("{{\"{key}\":'x'}}"),
                format!("{{'{key}':1}}"),
            ] {
                assert_eq!(both(bad.as_bytes(), 0, 128), None, "{bad:?}");
                assert_eq!(reference_end(bad.as_bytes(), 0, 128), None, "{bad:?}");
            }
            // A single quote inside a string is a plain character.
            let ok = format!("{{\"{key}\":\"O'Brien\"}}");
            assert_eq!(both(ok.as_bytes(), 0, 128), Some(ok.len()));
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(both(deep(5).as_bytes(), 0, 5), Some(10));
        assert_eq!(both(deep(6).as_bytes(), 0, 5), None);
        assert_eq!(both(deep(200).as_bytes(), 0, 300), Some(400));
    }

    #[test]
    fn generated_values_end_where_the_byte_walk_ends() {
        let mut g = crate::test_json::Gen(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut v = String::from("{\"a\":");
            g.value(&mut v, 1);
            v.push_str("} ");
            let b = v.as_bytes();
            assert_eq!(both(b, 0, 128), reference_end(b, 0, 128), "{v}");
            let changed = g.change(b, b",:{}[]\"\\ x'\n\x01");
            if let Some(b'{' | b'[') = changed.first() {
                assert_eq!(
                    both(&changed, 0, 128),
                    reference_end(&changed, 0, 128),
                    "{}",
                    String::from_utf8_lossy(&changed)
                );
            }
        }
    }
}
