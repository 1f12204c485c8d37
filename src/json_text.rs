//! JSON text helpers shared by decoding, normalization and the encoders: finding the bytes a
//! JSON string cannot hold as they are, taking out the whitespace between tokens, and
//! trimming the values read from a record.

use std::borrow::Cow;

/// `s.trim()`, without the Unicode search when the first and last bytes are visible ASCII
/// (the common case for ids, times and names read from a record: nothing to trim).
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        [only] if only.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Index of the first byte at or after `from` that ends a run of plain JSON string content
/// (below 0x20, `"` or `\`), or `b.len()` when there is none.
#[inline]
pub(crate) fn plain_run_end(b: &[u8], from: usize) -> usize {
    crate::byte_search::first_of(b, from, 0x20, [b'"', b'\\'])
}

/// The index just past the escape whose backslash is at `at` (`\"`, `\\`, `\/`, `\b`, `\f`,
/// `\n`, `\r`, `\t`, or `\u` and four hex digits); `None` when it is not a valid escape.
#[inline]
pub(crate) fn escape_end(b: &[u8], at: usize) -> Option<usize> {
    match b.get(at + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 2),
        b'u' => b
            .get(at + 2..at + 6)?
            .iter()
            .all(u8::is_ascii_hexdigit)
            .then_some(at + 6),
        _ => None,
    }
}

/// JSON text without the whitespace between tokens (a pretty-printed record on one line);
/// borrowed when there is none. Strings are copied as they are, escapes included; text that
/// is not valid JSON is handled the same way, without failing.
pub(crate) fn compact(json: &[u8]) -> Cow<'_, [u8]> {
    let b = json;
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut start) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // Jump over the string: to its closing quote, past escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or_default()) {
                        Some(k) if b[i + k] == b'\\' => i = (i + k + 2).min(b.len()),
                        Some(k) => {
                            i += k + 1;
                            break;
                        }
                        None => {
                            i = b.len();
                            break;
                        }
                    }
                }
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                let o = out.get_or_insert_with(|| Vec::with_capacity(b.len()));
                o.extend_from_slice(&b[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(json),
        Some(mut o) => {
            o.extend_from_slice(&b[start..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_is_str_trim() {
        let ends = [
            "", " ", "\t", "\n", "\u{a0}", "\u{3000}", "\u{2028}", "x", "é", "-", "\u{1}", "\u{7f}",
        ];
        for a in ends {
            for b in ["", "x", "a b", "é", " ", "0"] {
                for c in ends {
                    let s = format!("{a}{b}{c}");
                    assert_eq!(trim(&s), s.trim(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn escape_end_takes_the_escapes_json_allows() {
        for (text, end) in [
            (&br#"\"x"#[..], Some(2)),
            (br"\\", Some(2)),
            (br"\/", Some(2)),
            (br"\t", Some(2)),
            (br"\u00e9x", Some(6)),
            (br"\uD83D", Some(6)),
            (br"\u00g9", None),
            (br"\u12", None),
            (br"\x", None),
            (b"\\\n", None),
            (br"\", None),
        ] {
            assert_eq!(escape_end(text, 0), end, "{}", String::from_utf8_lossy(text));
        }
        assert_eq!(escape_end(br#"ab\"c"#, 2), Some(4));
    }

    #[test]
    fn compact_removes_whitespace_between_tokens_only() {
        assert!(matches!(compact(br#"[{"a":"b c","d":[1,2]}]"#), Cow::Borrowed(_)));
        let pretty = b"[\n  {\"a\" : \"b c\\\" \\\\\",\t\"n\": 1.5e3,\r\n \"e\":[ ] } ]";
        assert_eq!(&*compact(pretty), br#"[{"a":"b c\" \\","n":1.5e3,"e":[]}]"#);
        assert_eq!(&*compact(br#""\\" "#), br#""\\""#);
        // Not JSON: no failure, the same rule.
        assert_eq!(&*compact(b"{ 'a' : \"open "), b"{'a':\"open ");
        assert_eq!(&*compact(b"\"esc\\"), b"\"esc\\");
    }
}
