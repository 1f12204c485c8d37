//! Stream framing of syslog messages (RFC 6587): octet counting and trailer-terminated.
//! Re-exported from [`super::syslog`].

use super::fields::push_int;

/// Octet-counting frame `LEN SP` + parts (RFC 6587 3.4.1); LEN counts all parts.
pub fn frame_octet_counting(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    push_int(out, len as i64);
    out.push(b' ');
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Non-transparent frame: parts, with every byte of `trailer` inside them replaced by a
/// space, then `trailer`. Returns whether a byte was replaced.
pub fn frame_trailer(out: &mut Vec<u8>, parts: &[&[u8]], trailer: &[u8]) -> bool {
    let mut altered = false;
    for p in parts {
        if contains_any(p, trailer) {
            altered = true;
            out.extend(p.iter().map(|&b| if trailer.contains(&b) { b' ' } else { b }));
        } else {
            out.extend_from_slice(p);
        }
    }
    out.extend_from_slice(trailer);
    altered
}

/// Whether `p` holds a byte of `trailer` (one, two or three bytes: a vectorized search).
fn contains_any(p: &[u8], trailer: &[u8]) -> bool {
    match *trailer {
        [] => false,
        [a] => memchr::memchr(a, p).is_some(),
        [a, b] => memchr::memchr2(a, b, p).is_some(),
        [a, b, c] => memchr::memchr3(a, b, c, p).is_some(),
        _ => p.iter().any(|b| trailer.contains(b)),
    }
}

/// The messages of an octet-counted buffer; stops at the first malformed frame.
pub fn octet_frames(buf: &[u8]) -> OctetFrames<'_> {
    OctetFrames { rest: buf }
}

pub struct OctetFrames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OctetFrames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let sp = self.rest.iter().take(11).position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&self.rest[..sp]).ok()?.parse().ok()?;
        let body = self.rest.get(sp + 1..sp + 1 + len)?;
        self.rest = &self.rest[sp + 1 + len..];
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_helpers() {
        let mut v = Vec::new();
        frame_octet_counting(&mut v, &[b"<1>1 - - - - - ", b"hi"]);
        assert_eq!(v, b"17 <1>1 - - - - - hi");
        v.clear();
        assert!(frame_trailer(&mut v, &[b"a\nb"], b"\n"));
        assert_eq!(v, b"a b\n");
        v.clear();
        assert!(!frame_trailer(&mut v, &[b"ab"], b"\r\n"));
        assert_eq!(v, b"ab\r\n");
        let frames: Vec<_> = octet_frames(b"1 a3 b c2 \n\nx").collect();
        assert_eq!(frames, vec![&b"a"[..], b"b c", b"\n\n"]); // then "x" is malformed
    }
}
