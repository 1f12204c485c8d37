//! The typed parse of one record (and of a Graph object's head while decoding): a serde
//! `Deserializer` over the record's text that takes
//! what serde_json takes (or less) and gives the same values, with strings searched sixteen
//! bytes at a time (`json_text::plain_run_end`) where serde_json goes eight at a time.
//! Whatever it does not take — an error of any kind, a number that is not a plain integer —
//! makes [`from_str`] parse the record again with serde_json, so results and errors are
//! always serde_json's; this is only the fast path.
//!
//! `&RawValue` members (kept as JSON text) are given to serde_json's `RawValue` the way
//! serde_json's own deserializer gives them: a newtype named by serde_json's token, read as
//! a one-member map. Should serde_json change that token, such records take the slow path
//! (a test checks that the samples take the fast one).

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Error;

use crate::json_text::{escape_end, plain_run_end};

/// The name serde_json's `RawValue` asks a deserializer for (`serde_json::raw::TOKEN`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// serde_json's nesting limit: it refuses the 128th container nested in one another.
const MAX_DEPTH: usize = 128;

/// Parses `s` as `T` like `serde_json::from_str`, faster when it can.
pub(crate) fn from_str<'a, T: Deserialize<'a>>(s: &'a str) -> Result<T, Error> {
    fast(s).or_else(|_| {
        #[cfg(test)]
        FALLBACKS.with(|n| n.set(n.get() + 1));
        serde_json::from_str(s)
    })
}

#[cfg(test)]
thread_local! {
    /// How many parses of this thread took serde_json's path.
    pub(crate) static FALLBACKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The fast path alone (an error means: ask serde_json).
pub(crate) fn fast<'a, T: Deserialize<'a>>(s: &'a str) -> Result<T, Error> {
    let mut r = Reader {
        s,
        b: s.as_bytes(),
        i: 0,
        depth: 0,
        scratch: String::new(),
    };
    let v = T::deserialize(&mut r)?;
    r.ws();
    if r.i == r.b.len() {
        Ok(v)
    } else {
        Err(fail())
    }
}

/// Parses `text` both ways as a JSON value and panics when they disagree: the fast path
/// took what serde_json refuses, or read another value (compared as values and as their
/// JSON text, so `-0.0` counts). Whether the fast path took it. For tests and fuzzing.
pub(crate) fn check_against_serde(text: &str) -> bool {
    let ours = fast::<serde_json::Value>(text);
    match (ours, serde_json::from_str::<serde_json::Value>(text)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{text}");
            assert_eq!(a.to_string(), b.to_string(), "{text}");
            true
        }
        (Ok(a), Err(e)) => panic!("the fast parse took what serde_json refuses ({e}): {text} -> {a}"),
        (Err(_), _) => false,
    }
}

/// The fast path's one error: serde_json gives the real one.
#[cold]
fn fail() -> Error {
    de::Error::custom("left to serde_json")
}

struct Reader<'de> {
    s: &'de str,
    /// `s.as_bytes()` (the string reader's unchecked slices rely on it).
    b: &'de [u8],
    i: usize,
    depth: usize,
    /// A string with escapes, unescaped.
    scratch: String,
}

/// A string read: borrowed from the text, or unescaped into the scratch buffer.
enum Text<'de, 's> {
    Borrowed(&'de str),
    Copied(&'s str),
}

impl<'de> Reader<'de> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, which must be there.
    #[inline(always)]
    fn next_token(&mut self) -> Result<u8, Error> {
        self.ws();
        self.peek().ok_or_else(fail)
    }

    fn literal(&mut self, w: &[u8]) -> Result<(), Error> {
        if self.b.get(self.i..self.i + w.len()) == Some(w) {
            self.i += w.len();
            Ok(())
        } else {
            Err(fail())
        }
    }

    /// The string at the cursor (on its opening quote). Always inlined: out of line, its
    /// entry and exit cost more than reading a short string (left to the compiler, it was
    /// not inlined once the string search grew); a string with an escape goes on in
    /// [`Reader::escaped_string`].
    #[inline(always)]
    fn string(&mut self) -> Result<Text<'de, '_>, Error> {
        if self.peek() != Some(b'"') {
            return Err(fail());
        }
        let start = self.i + 1;
        let end = plain_run_end(self.b, start);
        if self.b.get(end) != Some(&b'"') {
            return self.escaped_string(start, end);
        }
        self.i = end + 1;
        // SAFETY: `b` is `s`'s bytes; `b[start - 1]` and `b[end]` are ASCII quotes (just
        // checked), so `start` and `end` are character boundaries of `s`; `end < s.len()` by
        // the check, and `start <= end` since `plain_run_end` never goes back (`start` is at
        // most `b.len()`: the cursor was on a quote).
        Ok(Text::Borrowed(unsafe { self.s.get_unchecked(start..end) }))
    }

    /// [`Reader::string`] on: `start` is just after the opening quote, `end` where its first
    /// plain run stopped on something other than a quote — a backslash goes on, anything
    /// else (a control character, the end of the text) is an error.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, end: usize) -> Result<Text<'de, '_>, Error> {
        if self.b.get(end) != Some(&b'\\') {
            return Err(fail());
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        out.push_str(self.s.get(start..end).ok_or_else(fail)?);
        self.i = end;
        let done = self.unescape_rest(&mut out);
        self.scratch = out;
        done?;
        Ok(Text::Copied(&self.scratch))
    }

    /// Unescapes from the backslash at the cursor to the closing quote into `out`.
    fn unescape_rest(&mut self, out: &mut String) -> Result<(), Error> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let c = self.escape()?;
                    out.push(c);
                }
                _ => return Err(fail()),
            }
            let end = plain_run_end(self.b, self.i);
            out.push_str(self.s.get(self.i..end).ok_or_else(fail)?);
            self.i = end;
        }
    }

    /// The character of the escape at the cursor (a backslash); surrogate pairs joined, a
    /// lone surrogate refused.
    fn escape(&mut self) -> Result<char, Error> {
        let c = *self.b.get(self.i + 1).ok_or_else(fail)?;
        self.i += 2;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(fail());
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(fail());
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(fail()),
                    n => n,
                };
                char::from_u32(code).ok_or_else(fail)?
            }
            _ => return Err(fail()),
        })
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let h = self.b.get(self.i..self.i + 4).ok_or_else(fail)?;
        let mut n = 0;
        for &c in h {
            n = n * 16 + char::from(c).to_digit(16).ok_or_else(fail)?;
        }
        self.i += 4;
        Ok(n)
    }

    /// Skips the string at the cursor, checking its escapes.
    fn skip_string(&mut self) -> Result<(), Error> {
        self.i += 1;
        loop {
            self.i = plain_run_end(self.b, self.i);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.i = escape_end(self.b, self.i).ok_or_else(fail)?,
                _ => return Err(fail()),
            }
        }
    }

    /// The end of the number at the cursor and whether it is a plain integer (no fraction,
    /// no exponent).
    fn number_end(&self) -> Result<(usize, bool), Error> {
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |mut i: usize| {
            let start = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            (i, i - start)
        };
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i).0,
            _ => return Err(fail()),
        }
        let mut plain = true;
        if b.get(i) == Some(&b'.') {
            let (end, n) = digits(i + 1);
            if n == 0 {
                return Err(fail());
            }
            (i, plain) = (end, false);
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let (end, n) = digits(i);
            if n == 0 {
                return Err(fail());
            }
            (i, plain) = (end, false);
        }
        Ok((i, plain))
    }

    /// Gives the number at the cursor to `visitor` as serde_json would: `u64` when it is a
    /// non-negative integer that fits, `i64` for a negative one, else `f64` (read by
    /// serde_json itself, so the same float).
    fn number<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        let (end, plain) = self.number_end()?;
        let text = self.s.get(self.i..end).ok_or_else(fail)?;
        self.i = end;
        if plain {
            if let Some(digits) = text.strip_prefix('-') {
                if let Ok(m) = digits.parse::<u64>() {
                    if m != 0 && m <= 1 << 63 {
                        return visitor.visit_i64((m as i64).wrapping_neg());
                    }
                }
            } else if let Ok(n) = text.parse::<u64>() {
                return visitor.visit_u64(n);
            }
        }
        visitor.visit_f64(serde_json::from_str::<f64>(text)?)
    }

    /// Skips the value at the cursor, checking it.
    fn skip_value(&mut self) -> Result<(), Error> {
        match self.next_token()? {
            b'"' => self.skip_string(),
            b'{' => self.skip_container(b'}'),
            b'[' => self.skip_container(b']'),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number_end().map(|(end, _)| self.i = end),
        }
    }

    /// Skips the object or array at the cursor (`close` ends it).
    fn skip_container(&mut self, close: u8) -> Result<(), Error> {
        self.enter()?;
        self.i += 1;
        if self.next_token()? == close {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if close == b'}' {
                if self.next_token()? != b'"' {
                    return Err(fail());
                }
                self.skip_string()?;
                if self.next_token()? != b':' {
                    return Err(fail());
                }
                self.i += 1;
            }
            self.skip_value()?;
            match self.next_token()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(fail()),
            }
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(fail());
        }
        Ok(())
    }

    /// Before the next member or element of the container that `close` ends: past the
    /// comma (none before the first); false at the end, whose closing byte stays for
    /// [`Reader::close`].
    fn next_item(&mut self, first: &mut bool, close: u8) -> Result<bool, Error> {
        let c = self.next_token()?;
        if c == close {
            return Ok(false);
        }
        if !std::mem::take(first) {
            if c != b',' {
                return Err(fail());
            }
            self.i += 1;
        }
        Ok(true)
    }

    /// After a container's visitor: its closing byte.
    fn close(&mut self, c: u8) -> Result<(), Error> {
        if self.next_token()? != c {
            return Err(fail());
        }
        self.i += 1;
        self.depth -= 1;
        Ok(())
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.next_token()? {
            b'"' => match self.string()? {
                Text::Borrowed(s) => visitor.visit_borrowed_str(s),
                Text::Copied(s) => visitor.visit_str(s),
            },
            b'{' => {
                self.enter()?;
                self.i += 1;
                let v = visitor.visit_map(Members {
                    r: &mut *self,
                    first: true,
                })?;
                self.close(b'}')?;
                Ok(v)
            }
            b'[' => {
                self.enter()?;
                self.i += 1;
                let v = visitor.visit_seq(Elements {
                    r: &mut *self,
                    first: true,
                })?;
                self.close(b']')?;
                Ok(v)
            }
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            _ => self.number(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.next_token()? == b'n' {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        if name != RAW_VALUE_TOKEN {
            return visitor.visit_newtype_struct(self);
        }
        self.ws();
        let start = self.i;
        self.skip_value()?;
        let raw = self.s.get(start..self.i).ok_or_else(fail)?;
        visitor.visit_map(RawMember(Some(raw)))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // A unit variant by name; the other forms are left to serde_json.
        if self.next_token()? != b'"' {
            return Err(fail());
        }
        match self.string()? {
            Text::Borrowed(s) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            Text::Copied(_) => Err(fail()),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The members of an object (the cursor after its `{`).
struct Members<'a, 'de> {
    r: &'a mut Reader<'de>,
    first: bool,
}

impl<'de> MapAccess<'de> for Members<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        if !self.r.next_item(&mut self.first, b'}')? {
            return Ok(None);
        }
        self.r.ws();
        if self.r.peek() != Some(b'"') {
            return Err(fail());
        }
        seed.deserialize(Key(&mut *self.r)).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        if self.r.next_token()? != b':' {
            return Err(fail());
        }
        self.r.i += 1;
        seed.deserialize(&mut *self.r)
    }
}

/// The elements of an array (the cursor after its `[`).
struct Elements<'a, 'de> {
    r: &'a mut Reader<'de>,
    first: bool,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
        if !self.r.next_item(&mut self.first, b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.r).map(Some)
    }
}

/// An object key (the cursor on its opening quote): a string, whatever is asked for.
struct Key<'a, 'de>(&'a mut Reader<'de>);

impl<'de> de::Deserializer<'de> for Key<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.string()? {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Copied(s) => visitor.visit_str(s),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// serde_json's form of a raw value: one member, named by the token, whose value is the
/// value's text.
struct RawMember<'de>(Option<&'de str>);

impl<'de> MapAccess<'de> for RawMember<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.0 {
            Some(_) => seed
                .deserialize(BorrowedStrDeserializer::new(RAW_VALUE_TOKEN))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let raw = self.0.take().ok_or_else(fail)?;
        seed.deserialize(BorrowedStrDeserializer::new(raw))
    }
}

#[cfg(test)]
#[path = "json_de_tests.rs"]
mod tests;
