//! The first byte of a small set in a byte string (a control character or one of a few
//! given bytes), and copying a string with those bytes replaced: sixteen bytes at a time
//! with SSE2 on x86-64, then eight at a time (SWAR), the last few one by one. Shared by
//! JSON string scanning and writing and by CEF / LEEF escaping, where it is the inner loop
//! over every string of every event.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether `c` is below `below` or one of `any`.
#[inline(always)]
fn is_member<const N: usize>(c: u8, below: u8, any: &[u8; N]) -> bool {
    c < below || any.contains(&c)
}

/// High bits marking the bytes of `w` (eight bytes read little endian) below `below` or
/// equal to one of `any`. The lowest marked byte is exact (a borrow only marks bytes above
/// a true one), so `trailing_zeros() / 8` is its index.
#[inline(always)]
fn word_members<const N: usize>(w: u64, below: u8, any: &[u8; N]) -> u64 {
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut m = w.wrapping_sub(LO * u64::from(below)) & !w & HI;
    for &c in any {
        m |= zero(w ^ (LO * u64::from(c)));
    }
    m
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_storeu_si128,
    };

    /// A byte set compared with sixteen bytes at once (SSE2, part of the x86-64 baseline).
    pub(super) struct Set<const N: usize> {
        /// `below - 1` in every lane: `max(v, top) == top` exactly for the bytes below `below`.
        top: __m128i,
        needles: [__m128i; N],
    }

    /// Sixteen bytes of the input, held in a register.
    pub(super) struct Block(__m128i);

    impl Block {
        /// Writes the sixteen bytes at the end of `out` and keeps the first `n` (`n` ≤ 16).
        #[inline(always)]
        pub(super) fn append(&self, out: &mut Vec<u8>, n: usize) {
            out.reserve(16);
            let len = out.len();
            // SAFETY: the store writes 16 bytes into the spare capacity of `out` (reserved
            // just before), and the length grows only over (at most 16 of) those bytes.
            unsafe {
                _mm_storeu_si128(out.as_mut_ptr().add(len).cast::<__m128i>(), self.0);
                out.set_len(len + n.min(16));
            }
        }

        /// Keeps the first `n` bytes (`n` < 16) followed by the two bytes of `pair`.
        #[inline(always)]
        pub(super) fn append_pair(&self, out: &mut Vec<u8>, n: usize, pair: [u8; 2]) {
            let n = n.min(15);
            out.reserve(18);
            let len = out.len();
            // SAFETY: 18 bytes of spare capacity were reserved just before: the store writes
            // the first 16, the pair goes to `n` and `n + 1` (at most 16), and the length
            // grows only over the `n + 2` bytes written.
            unsafe {
                let at = out.as_mut_ptr().add(len);
                _mm_storeu_si128(at.cast::<__m128i>(), self.0);
                *at.add(n) = pair[0];
                *at.add(n + 1) = pair[1];
                out.set_len(len + n + 2);
            }
        }
    }

    impl<const N: usize> Set<N> {
        #[inline(always)]
        pub(super) fn new(below: u8, any: [u8; N]) -> Self {
            // SAFETY: SSE2 is part of the x86-64 baseline.
            unsafe {
                Set {
                    top: _mm_set1_epi8(below.wrapping_sub(1) as i8),
                    needles: any.map(|c| _mm_set1_epi8(c as i8)),
                }
            }
        }

        /// The sixteen bytes `b[at..at + 16]` and one bit per byte, set for the members of
        /// the set.
        ///
        /// # Safety
        /// `at + 16 <= b.len()`.
        #[inline(always)]
        pub(super) unsafe fn block(&self, b: &[u8], at: usize) -> (Block, u32) {
            // SAFETY: SSE2 is part of the x86-64 baseline; the load reads `b[at..at + 16]`,
            // inside `b` by the caller's promise.
            unsafe {
                let v = _mm_loadu_si128(b.as_ptr().add(at).cast::<__m128i>());
                let mut m = _mm_cmpeq_epi8(_mm_max_epu8(v, self.top), self.top);
                for n in self.needles {
                    m = _mm_or_si128(m, _mm_cmpeq_epi8(v, n));
                }
                (Block(v), _mm_movemask_epi8(m) as u32)
            }
        }
    }
}

/// Appends `s` to `out` like `extend_from_slice`, but a string shorter than 16 bytes (most
/// keys and values of an event) is moved as two overlapping words (or bytes) instead of
/// through a call to `memcpy`, whose call and size dispatch cost more than the copy.
#[inline(always)]
pub(crate) fn append_short(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n >= 16 {
        out.extend_from_slice(s);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve` made room for `n` bytes after `len`. Each branch reads only inside
    // `s` (pairs of reads start at 0 and end at `n`, with `n` at least their width) and
    // writes the same offsets in that room; together they cover `0..n`, so the length grows
    // only over bytes written.
    unsafe {
        let (src, dst) = (s.as_ptr(), out.as_mut_ptr().add(len));
        if n >= 8 {
            let (a, b) = (
                src.cast::<u64>().read_unaligned(),
                src.add(n - 8).cast::<u64>().read_unaligned(),
            );
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let (a, b) = (
                src.cast::<u32>().read_unaligned(),
                src.add(n - 4).cast::<u32>().read_unaligned(),
            );
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            let (a, m, z) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = m;
            *dst.add(n - 1) = z;
        }
        out.set_len(len + n);
    }
}

/// Index of the first byte at or after `from` that is below `below` (`below` ≥ 1) or equal
/// to one of `any`; `b.len()` when there is none (`from` itself when it is past the end).
#[inline(always)]
pub(crate) fn first_of<const N: usize>(b: &[u8], from: usize, below: u8, any: [u8; N]) -> usize {
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    {
        let set = simd::Set::new(below, any);
        while i + 16 <= b.len() {
            // SAFETY: the loop condition.
            let (_, mask) = unsafe { set.block(b, i) };
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
        // The last bytes of a string of 16 or more: the block that ends it, without the
        // bytes already looked at (`i` is past its start here).
        if i < b.len() && b.len() >= 16 {
            let start = b.len() - 16;
            // SAFETY: `start + 16 == b.len()`.
            let (_, mask) = unsafe { set.block(b, start) };
            let mask = mask >> (i - start);
            return if mask == 0 {
                b.len()
            } else {
                i + mask.trailing_zeros() as usize
            };
        }
    }
    while let Some(w) = b.get(i..i + 8) {
        let m = word_members(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])), below, &any);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !is_member(b[i], below, &any) {
        i += 1;
    }
    i
}

/// Appends `b` to `out` with every byte of the set (below `below` or one of `any`)
/// replaced: by a backslash and `pair(c)` when that gives one (a JSON `\"`), else by what
/// `other` appends. On x86-64 each 16-byte block is stored whole into the reserved tail of
/// `out` and only its bytes before the first member are kept, and a two-byte replacement is
/// written into the same reserved room: one capacity check per replaced byte instead of
/// three (JSON text inside a JSON string, `raw_data`, has a quote every few bytes).
#[inline(always)]
pub(crate) fn copy_replacing<const N: usize>(
    out: &mut Vec<u8>,
    b: &[u8],
    below: u8,
    any: [u8; N],
    pair: impl Fn(u8) -> Option<u8>,
    other: impl Fn(u8, &mut Vec<u8>),
) {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        let set = simd::Set::new(below, any);
        while i + 16 <= b.len() {
            // SAFETY: the loop condition.
            let (block, mask) = unsafe { set.block(b, i) };
            if mask == 0 {
                block.append(out, 16);
                i += 16;
                continue;
            }
            let n = mask.trailing_zeros() as usize;
            let c = b[i + n];
            match pair(c) {
                Some(e) => block.append_pair(out, n, [b'\\', e]),
                None => {
                    block.append(out, n);
                    other(c, out);
                }
            }
            i += n + 1;
        }
    }
    loop {
        let k = first_of(b, i, below, any);
        append_short(out, &b[i..k]);
        let Some(&c) = b.get(k) else { break };
        match pair(c) {
            Some(e) => out.extend_from_slice(&[b'\\', e]),
            None => other(c, out),
        }
        i = k + 1;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_appends_are_extends() {
        let src: Vec<u8> = (0u8..40).map(|i| b'a' + i % 26).collect();
        for start in 0..3 {
            for n in 0..=20 {
                let mut a = b"xy".to_vec();
                let mut b = a.clone();
                super::append_short(&mut a, &src[start..start + n]);
                b.extend_from_slice(&src[start..start + n]);
                assert_eq!(a, b, "{start} {n}");
            }
        }
    }

    use super::*;

    /// Every member at every position of buffers around the 8- and 16-byte steps, searched
    /// from every start, against a byte-by-byte search; with bytes around the set's edges.
    #[test]
    fn agrees_with_a_byte_by_byte_search() {
        let fill = [b'a', 0x20, 0x7e, 0x80, 0xc3, 0xff, b'"' + 1, b'\\' - 1];
        for len in 0..40 {
            for special in [0u8, 0x01, 0x1f, b'"', b'\\', 0x7f, 0xc2] {
                for at in 0..=len {
                    let mut b: Vec<u8> = (0..len).map(|k| fill[k % fill.len()]).collect();
                    if at < len {
                        b[at] = special;
                    }
                    for from in 0..=len {
                        let json = (from..len).find(|&k| is_member(b[k], 0x20, b"\"\\")).unwrap_or(len);
                        assert_eq!(first_of(&b, from, 0x20, [b'"', b'\\']), json, "{b:?} from {from}");
                        let cef = [0x7f, 0xc2, b'\\', b'='];
                        let want = (from..len).find(|&k| is_member(b[k], 0x20, &cef)).unwrap_or(len);
                        assert_eq!(first_of(&b, from, 0x20, cef), want, "{b:?} from {from}");
                    }
                }
            }
        }
    }

    /// Replacing every member, at every position and in runs, from buffers around the 16-byte
    /// step: the same bytes as a byte-by-byte replacement.
    #[test]
    fn replacing_agrees_with_a_byte_by_byte_replacement() {
        let pair = |c: u8| (c != 0x01).then_some(c.to_ascii_uppercase());
        let other = |c: u8, out: &mut Vec<u8>| out.extend_from_slice(&[b'<', c, b'>']);
        let fill = [b'a', 0x20, 0x7e, 0x80, 0xc3, b'"' + 1];
        for len in 0..48 {
            for special in [0x01u8, 0x1f, b'"', b'\\'] {
                for at in 0..=len {
                    // Alone, in runs, and every third byte (several in one block).
                    for (run, step) in [(1, 1), (2, 1), (17, 1), (12, 3)] {
                        let mut b: Vec<u8> = (0..len).map(|k| fill[k % fill.len()]).collect();
                        for k in (at..(at + run).min(len)).step_by(step) {
                            b[k] = special;
                        }
                        let mut want = b"x".to_vec();
                        for &c in &b {
                            if is_member(c, 0x20, b"\"\\") {
                                match pair(c) {
                                    Some(e) => want.extend_from_slice(&[b'\\', e]),
                                    None => other(c, &mut want),
                                }
                            } else {
                                want.push(c);
                            }
                        }
                        let mut out = b"x".to_vec();
                        copy_replacing(&mut out, &b, 0x20, [b'"', b'\\'], pair, other);
                        assert_eq!(out, want, "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn words_mark_the_first_member_exactly() {
        for (text, first) in [
            (*b"abcdefgh", None),
            (*b"abc\"defg", Some(3)),
            (*b"\\bcdefgh", Some(0)),
            (*b"abcdefg\n", Some(7)),
            (*b"ab\x01\"\\\x1f\"x", Some(2)),
            (*b"\xc3\xa9\xe2\x82\xac\x7f !", None),
        ] {
            let m = word_members(u64::from_le_bytes(text), 0x20, b"\"\\");
            let got = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
            assert_eq!(got, first, "{text:?}");
        }
    }
}
