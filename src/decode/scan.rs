//! A fast scan of an object body: finds its records (the body itself, or the elements of an
//! Event Hub body's `records`) and the keys decoding needs from each (`category`,
//! `tenantId`, `resourceId`) without building anything, checking the syntax on the way. It
//! is cheap: strings are skipped sixteen bytes at a time.
//!
//! Asked to (`unchecked`), it checks less of a body that is one record: its nested objects
//! and arrays (`properties`, most of its bytes) are skipped by their brackets alone
//! (`skip`), since the normalizer's parse reads the whole record afterwards and checks them
//! there. Such a record is marked ([`Scanned::Single`]'s `checked`); decoding hands it on
//! only as it came (see `super::DecodedRecord::unchecked`), and a record the normalizer
//! refuses is decoded again in full (`super::recheck`), so it ends as it would have here.
//! The skip gives up on anything a repair would fix, so an unchecked record never needed
//! one. The records of an Event Hub body are always checked in full (a broken one fails the
//! whole body, as before).
//!
//! Whatever it does not handle returns `None` and decoding takes the serde path, which
//! reports or repairs it: syntax errors (in a checked part), Graph pages (`value`), escapes
//! in keys or in those values, a key given twice, values of those keys that are not
//! strings, nesting deeper than serde_json's limit.

use crate::json_text::{escape_end, plain_run_end};

/// The keys of one record that decoding reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub category: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub resource_id: Option<&'a str>,
}

/// What an object body holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned<'a> {
    /// The body is one record; `checked`: its nested values too (else only its brackets).
    Single { head: Head<'a>, checked: bool },
    /// An Event Hub body: each record's bytes and head.
    Records(Vec<(&'a [u8], Head<'a>)>),
}

/// Below serde_json's recursion limit (128): deeper input is left to it (and its error).
const MAX_DEPTH: usize = 120;

/// Scans `body` (starting with `{`, already trimmed; Event Hub or auto-detected input: a
/// `records` array is read as an Event Hub body); `unchecked`: a single record's nested
/// values may be skipped by their brackets.
pub(crate) fn scan(body: &[u8], unchecked: bool) -> Option<Scanned<'_>> {
    let mut s = Scanner {
        b: body,
        i: 0,
        unchecked,
        skipped: false,
    };
    let mut head = Head::default();
    let mut list = None;
    s.object(|s, key| match key {
        b"records" => {
            if list.is_some() {
                return None;
            }
            let allowed = std::mem::replace(&mut s.unchecked, false);
            list = Some(s.records()?);
            s.unchecked = allowed;
            Some(())
        }
        b"value" | b"@odata.nextLink" => None,
        _ => s.head_member(key, &mut head, 1),
    })?;
    s.ws();
    if s.i != body.len() {
        return None;
    }
    Some(match list {
        // Members beside `records` skipped unchecked: the body is checked by serde.
        Some(_) if s.skipped => return None,
        Some(l) => Scanned::Records(l),
        None => Scanned::Single {
            head,
            checked: !s.skipped,
        },
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// A nested object or array may be skipped by its brackets (`skip::container_end`).
    unchecked: bool,
    /// One was.
    skipped: bool,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The members of the object at the cursor; `member` reads each value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let (key, escaped) = self.string()?;
            self.eat(b':')?;
            self.ws();
            if escaped {
                // An escaped key might spell a key we look for: let serde decide.
                return None;
            }
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member of a record (an object nested `depth` deep): the keys decoding reads are
    /// kept, others skipped.
    fn head_member(&mut self, key: &[u8], head: &mut Head<'a>, depth: usize) -> Option<()> {
        let slot = match key {
            b"category" => &mut head.category,
            b"tenantId" => &mut head.tenant_id,
            b"resourceId" => &mut head.resource_id,
            _ => return self.value(depth),
        };
        if slot.is_some() || self.peek()? != b'"' {
            return None; // twice, or not a string
        }
        let (text, escaped) = self.string()?;
        if escaped {
            return None;
        }
        *slot = Some(std::str::from_utf8(text).ok()?);
        Some(())
    }

    /// The array of records of an Event Hub body: each an object.
    fn records(&mut self) -> Option<Vec<(&'a [u8], Head<'a>)>> {
        self.eat(b'[')?;
        let mut out = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(out);
        }
        loop {
            self.ws();
            let start = self.i;
            let mut head = Head::default();
            self.object(|s, key| s.head_member(key, &mut head, 3))?;
            out.push((&self.b[start..self.i], head));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    /// Skips one value (the cursor on its first byte), validating it; `depth` is the nesting
    /// of the value's container.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' if self.unchecked => {
                self.i = super::skip::container_end(self.b, self.i, MAX_DEPTH - depth)?;
                self.skipped = true;
                Some(())
            }
            b'{' | b'[' => self.container(depth),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Skips nested objects and arrays with an explicit stack (no recursion).
    fn container(&mut self, depth: usize) -> Option<()> {
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // At the start of a value.
            self.ws();
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    if depth + stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    stack.push(open);
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.string()?;
                            self.eat(b':')?;
                        }
                        continue;
                    }
                }
                _ => self.value(depth + stack.len())?,
            }
            // After a value: a separator, or closing brackets.
            loop {
                let Some(&top) = stack.last() else {
                    return Some(());
                };
                self.ws();
                match (top, self.peek()?) {
                    (_, b',') => {
                        self.i += 1;
                        if top == b'{' {
                            self.ws();
                            self.string()?;
                            self.eat(b':')?;
                        }
                        break;
                    }
                    (b'{', b'}') | (b'[', b']') => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// A string at the cursor: its raw content and whether it has escapes.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Straight to the next quote, backslash or control character.
            self.i = plain_run_end(self.b, self.i);
            match self.peek()? {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    return Some((s, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i = escape_end(self.b, self.i)?;
                }
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + w.len())? == w).then(|| self.i += w.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
