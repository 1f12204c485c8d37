//! `Obj`: the JSON object the mappers build. An insertion-ordered list of (key, node) instead
//! of a `serde_json::Map`: no tree inserts, no allocation for literal keys, and the OCSF JSON
//! line is written straight from it. A `serde_json::Value` is only built when an encoder asks
//! for one (`Normalized::ocsf`). String members that are slices of the record being
//! normalized (set with [`with_source`]) share its buffer instead of being copied.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use bytestring::ByteString;
use serde_json::{Map, Value};

/// A member of an [`Obj`]: a string, another JSON value, or a nested object under
/// construction.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A string: a slice of the source record (no copy) or an owned buffer.
    Str(ByteString),
    Val(Value),
    Obj(Obj),
    /// An array of tree nodes (observables, lists of objects built by the mappers).
    Arr(Vec<Node>),
    /// An array or object of the record kept as its compact JSON text (see `embedded`).
    Json(ByteString),
}

thread_local! {
    /// The record being normalized on this thread: strings inside it are shared, not copied.
    static SOURCE: RefCell<Option<ByteString>> = const { RefCell::new(None) };
    /// Whether the normalization on this thread is lean (see [`lean`]).
    static LEAN: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous source and leanness when a normalization ends (also on unwind).
struct SourceGuard(Option<ByteString>, bool);

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let prev = self.0.take();
        SOURCE.with(|c| *c.borrow_mut() = prev);
        LEAN.with(|l| l.set(self.1));
    }
}

/// Runs `f` with `source` as this thread's record: string members built by `f` that are
/// slices of `source` share its buffer. `lean`: see [`lean`].
pub(crate) fn with_source<R>(source: &ByteString, lean: bool, f: impl FnOnce() -> R) -> R {
    let prev = SOURCE.with(|c| c.borrow_mut().replace(source.clone()));
    let _guard = SourceGuard(prev, LEAN.with(|l| l.replace(lean)));
    f()
}

/// A lean normalization builds only what the attribute-reading encoders (CEF, LEEF) read:
/// no `observables`, no `unmapped` ([`Obj::discarding`]; the change type they show comes
/// from the event's metadata), no ATT&CK `attacks` and no JSON of the record passed through
/// ([`Obj::embedded`]). The pipeline asks for one when every output is such an encoder and
/// the normalized form is dropped once encoded.
pub(crate) fn lean() -> bool {
    LEAN.with(Cell::get)
}

/// `v` as a shared slice of the current source when it lies inside it, else a copy.
pub(crate) fn text(v: &str) -> ByteString {
    SOURCE.with(|c| match &*c.borrow() {
        Some(src) if !v.is_empty() && contains(src, v) => src.slice_ref(v),
        _ => ByteString::from(v),
    })
}

fn contains(outer: &str, inner: &str) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// A JSON object under construction. Keys are unique: inserting an existing key replaces its
/// value (like `Map::insert`); absent values (`None`, empty objects and arrays) are skipped.
#[derive(Default, Debug, Clone)]
pub(crate) struct Obj {
    items: Vec<(Cow<'static, str>, Node)>,
    /// One bit per key hash: a key whose bit is clear is certainly new (no scan).
    mask: u64,
}

/// The key mask of an [`Obj::discarding`].
const DISCARD: u64 = u64::MAX;

#[inline(always)]
fn bit(k: &str) -> u64 {
    let b = k.as_bytes();
    let at = |i: usize| usize::from(b.get(i).copied().unwrap_or(0));
    let n = b.len();
    let h = (n.wrapping_mul(37)
        ^ at(0).wrapping_mul(7)
        ^ at(n / 2).wrapping_mul(13)
        ^ at(n.wrapping_sub(1)).wrapping_mul(3))
        & 63;
    1u64 << h
}

/// JSON escape of each byte: 0 none, `u` as `\u00XX`, else the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Append a member's key: the mappers' constant keys are plain names, written as they are;
/// keys taken from a record are escaped.
#[allow(clippy::ptr_arg)] // whether the key is a constant is the point
fn write_key(out: &mut Vec<u8>, k: &Cow<'static, str>) {
    match k {
        Cow::Borrowed(k) => {
            debug_assert_eq!(crate::json_text::plain_run_end(k.as_bytes(), 0), k.len(), "{k:?}");
            out.reserve(k.len() + 3);
            out.push(b'"');
            crate::byte_search::append_short(out, k.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(k) => write_str(out, k),
    }
}

/// Append `s` as a JSON string (same output as serde_json).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Plain runs are copied whole; only the bytes that end them are looked at.
    crate::byte_search::copy_replacing(
        out,
        bytes,
        0x20,
        [b'"', b'\\'],
        |b| Some(ESCAPE[usize::from(b)]).filter(|e| *e != b'u'),
        |b, out| {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ])
        },
    );
    out.push(b'"');
}

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    /// An object with room for `n` members (no regrowth while the mapper fills it).
    pub fn with_capacity(n: usize) -> Obj {
        Obj {
            items: Vec::with_capacity(n),
            mask: 0,
        }
    }

    /// An object that keeps nothing put into it: a lean normalization's `unmapped` (no
    /// attribute-reading encoder looks there). Marked by a full key mask on an object that
    /// never had room for a member, which no other object has.
    pub fn discarding() -> Obj {
        Obj {
            items: Vec::new(),
            mask: DISCARD,
        }
    }

    fn discards(&self) -> bool {
        self.mask == DISCARD && self.items.capacity() == 0
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Insert or replace. The usual case (a new key, room left) is inlined into the mapper,
    /// where a constant key's bit is folded and the member is built in its slot: called out
    /// of line, the key and node went through memory and were read back wider than written
    /// (a stalled store forward per member, ~8 % of a saturated OCSF run's time in perf).
    #[inline(always)]
    fn put(&mut self, k: Cow<'static, str>, n: Node) {
        let b = bit(&k);
        if self.mask & b != 0 || self.items.len() == self.items.capacity() {
            return self.put_slow(k, n, b);
        }
        self.mask |= b;
        self.items.push((k, n));
    }

    #[inline(never)]
    fn put_slow(&mut self, k: Cow<'static, str>, n: Node, b: u64) {
        if self.mask & b != 0 {
            if let Some(slot) = self.items.iter_mut().find(|(x, _)| *x == k) {
                slot.1 = n;
                return;
            }
        }
        if self.items.capacity() == 0 {
            if self.mask == DISCARD {
                return;
            }
            // Most objects are small (a product, a user, an endpoint); grown by doubling.
            self.items.reserve(4);
        }
        self.mask |= b;
        self.items.push((k, n));
    }

    /// Insert a constant string (no allocation).
    pub fn c(&mut self, k: &'static str, v: &'static str) -> &mut Obj {
        self.put(Cow::Borrowed(k), Node::Str(ByteString::from_static(v)));
        self
    }
    /// Insert a string when present. Inlined like [`Obj::put`], so that a constant key's bit
    /// is folded.
    #[inline(always)]
    pub fn s(&mut self, k: &'static str, v: Option<&str>) -> &mut Obj {
        if let Some(v) = v.filter(|_| !self.discards()) {
            self.put(Cow::Borrowed(k), Node::Str(text(v)));
        }
        self
    }
    /// Insert any value.
    pub fn v(&mut self, k: &'static str, v: impl Into<Value>) -> &mut Obj {
        self.put(Cow::Borrowed(k), Node::Val(v.into()));
        self
    }
    /// Insert a value when present.
    pub fn ov(&mut self, k: &'static str, v: Option<Value>) -> &mut Obj {
        if let Some(v) = v {
            self.put(Cow::Borrowed(k), Node::Val(v));
        }
        self
    }
    pub fn i(&mut self, k: &'static str, v: Option<i64>) -> &mut Obj {
        if let Some(v) = v {
            self.put(Cow::Borrowed(k), Node::Val(Value::from(v)));
        }
        self
    }
    pub fn b(&mut self, k: &'static str, v: Option<bool>) -> &mut Obj {
        if let Some(v) = v {
            self.put(Cow::Borrowed(k), Node::Val(Value::Bool(v)));
        }
        self
    }
    /// Insert a nested object when it is not empty.
    pub fn o(&mut self, k: &'static str, v: Obj) -> &mut Obj {
        if !v.is_empty() {
            self.put(Cow::Borrowed(k), Node::Obj(v));
        }
        self
    }
    /// Insert a non-empty array.
    pub fn arr(&mut self, k: &'static str, v: Vec<Value>) -> &mut Obj {
        if !v.is_empty() {
            self.put(Cow::Borrowed(k), Node::Val(Value::Array(v)));
        }
        self
    }
    /// Insert a string already held as a [`ByteString`] (shared or static: no copy).
    pub fn text(&mut self, k: &'static str, v: ByteString) -> &mut Obj {
        self.put(Cow::Borrowed(k), Node::Str(v));
        self
    }
    /// Insert a node when present.
    pub fn on(&mut self, k: &'static str, v: Option<Node>) -> &mut Obj {
        if let Some(v) = v {
            self.put(Cow::Borrowed(k), v);
        }
        self
    }
    /// Insert a field of the record that may hold JSON, passed through for OCSF consumers
    /// (kept as text, see [`super::embedded::embedded`]); left out of a [`lean`]
    /// normalization, so only for members no CEF or LEEF field reads (`unmapped`).
    pub fn embedded(&mut self, k: &'static str, raw: Option<&serde_json::value::RawValue>) -> &mut Obj {
        if lean() {
            return self;
        }
        self.on(k, super::embedded::embedded(raw))
    }
    /// Insert a nested object that only OCSF consumers read (no CEF or LEEF field does: a
    /// session, an OS, an autonomous system, the API call, the HTTP response): left out of
    /// a [`lean`] normalization without being built. The lean test compares CEF and LEEF of
    /// every sample record both ways, so an object an encoder starts reading fails it.
    pub fn ocsf_only(&mut self, k: &'static str, build: impl FnOnce() -> Obj) -> &mut Obj {
        if lean() {
            return self;
        }
        self.o(k, build())
    }
    /// Insert a non-empty array of tree nodes.
    pub fn nodes(&mut self, k: &'static str, v: Vec<Node>) -> &mut Obj {
        if !v.is_empty() {
            self.put(Cow::Borrowed(k), Node::Arr(v));
        }
        self
    }
    /// Move every member of `other` in (replacing equal keys).
    pub fn append(&mut self, other: Obj) {
        if self.discards() {
            return;
        }
        self.items.reserve(other.items.len());
        for (k, n) in other.items {
            self.put(k, n);
        }
    }
    /// Insert under a key known only at run time (source field names), replacing.
    pub fn insert_owned(&mut self, k: String, v: Value) {
        self.put(Cow::Owned(k), Node::Val(v));
    }
    /// Insert under a run-time key unless the key is already there.
    pub fn insert_absent(&mut self, k: String, v: Value) {
        if !self.has(&k) {
            self.put(Cow::Owned(k), Node::Val(v));
        }
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn has(&self, k: &str) -> bool {
        self.mask & bit(k) != 0 && self.items.iter().any(|(x, _)| x == k)
    }
    /// A member by key.
    pub fn get(&self, k: &str) -> Option<&Node> {
        if self.mask & bit(k) == 0 {
            return None;
        }
        self.items.iter().find(|(x, _)| x == k).map(|(_, n)| n)
    }
    /// Members in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.items.iter().map(|(k, n)| (&**k, n))
    }
    /// A string member.
    pub fn get_str(&self, k: &str) -> Option<&str> {
        self.items.iter().find_map(|(x, n)| match n {
            Node::Str(s) if x == k => Some(&**s),
            Node::Val(Value::String(s)) if x == k => Some(s.as_str()),
            _ => None,
        })
    }
    /// A string member of a nested object.
    pub fn get_str_in(&self, obj: &str, k: &str) -> Option<&str> {
        self.items.iter().find_map(|(x, n)| match n {
            Node::Obj(o) if x == obj => o.get_str(k),
            _ => None,
        })
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.into_map())
    }

    fn into_map(self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, n) in self.items {
            m.insert(k.into_owned(), n.into_value());
        }
        m
    }

    /// The object as a `serde_json::Value` (copying).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        for (k, n) in &self.items {
            m.insert(k.to_string(), n.to_value());
        }
        Value::Object(m)
    }

    /// Append the object as compact JSON (members in insertion order).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.push(b'{');
        for (i, (k, n)) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(out, k);
            out.push(b':');
            n.write_json(out)?;
        }
        out.push(b'}');
        Ok(())
    }
}

impl Obj {
    /// Binary form for the disk buffer: members in order, each a key and its node (see
    /// `Node::encode` for the tags), so [`Obj::decode`] rebuilds the same tree.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        use crate::buffer::wire;
        wire::put_u32(out, self.items.len() as u32);
        for (k, n) in &self.items {
            wire::put_str(out, k);
            n.encode(out);
        }
    }

    /// Read what [`Obj::encode`] wrote.
    pub(crate) fn decode(
        r: &mut crate::buffer::wire::Reader<'_>,
        depth: u32,
    ) -> Result<Obj, crate::buffer::wire::WireError> {
        use crate::buffer::wire::WireError;
        if depth > 64 {
            return Err(WireError::Invalid("object nested too deep"));
        }
        let n = r.u32()? as usize;
        let mut o = Obj::new();
        for _ in 0..n {
            let k = Cow::Owned(r.str()?.to_owned());
            o.put(k, Node::decode(r, depth)?);
        }
        Ok(o)
    }
}

/// The value of JSON text held by [`Node::Json`] (valid by construction).
fn json_value(j: &str) -> Value {
    serde_json::from_str(j).unwrap_or_else(|_| Value::String(j.to_owned()))
}

impl Node {
    /// The node as a `serde_json::Value`.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Str(s) => Value::String(s.into()),
            Node::Val(v) => v,
            Node::Obj(o) => o.into_value(),
            Node::Arr(a) => Value::Array(a.into_iter().map(Node::into_value).collect()),
            Node::Json(j) => json_value(&j),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Node::Str(s) => Value::String(s.to_string()),
            Node::Val(v) => v.clone(),
            Node::Obj(o) => o.to_value(),
            Node::Arr(a) => Value::Array(a.iter().map(Node::to_value).collect()),
            Node::Json(j) => json_value(j),
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Node::Str(s) => write_str(out, s),
            Node::Val(Value::String(s)) => write_str(out, s),
            // Integers (most numbers of an event) without serde's serializer; the digits are
            // the same (`tests::scalars_are_written_as_serde_json_writes_them`).
            Node::Val(Value::Number(n)) if n.is_i64() => crate::byte_search::append_short(
                out,
                itoa::Buffer::new().format(n.as_i64().unwrap_or_default()).as_bytes(),
            ),
            Node::Val(Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Node::Val(v) => serde_json::to_writer(&mut *out, v)?,
            Node::Obj(o) => o.write_json(out)?,
            Node::Json(j) => out.extend_from_slice(j.as_bytes()),
            Node::Arr(a) => {
                out.push(b'[');
                for (i, n) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    n.write_json(out)?;
                }
                out.push(b']');
            }
        }
        Ok(())
    }

    /// Tags: 0 a JSON value, 1 a tree object, 2 a string, 3 an array of nodes, 4 JSON text.
    fn encode(&self, out: &mut Vec<u8>) {
        use crate::buffer::wire;
        match self {
            Node::Val(v) => {
                wire::put_u8(out, 0);
                wire::put_value(out, v);
            }
            Node::Obj(o) => {
                wire::put_u8(out, 1);
                o.encode(out);
            }
            Node::Str(s) => {
                wire::put_u8(out, 2);
                wire::put_str(out, s);
            }
            Node::Arr(a) => {
                wire::put_u8(out, 3);
                wire::put_u32(out, a.len() as u32);
                a.iter().for_each(|n| n.encode(out));
            }
            Node::Json(j) => {
                wire::put_u8(out, 4);
                wire::put_str(out, j);
            }
        }
    }

    fn decode(r: &mut crate::buffer::wire::Reader<'_>, depth: u32) -> Result<Node, crate::buffer::wire::WireError> {
        use crate::buffer::wire::WireError;
        Ok(match r.u8()? {
            0 => Node::Val(r.value()?),
            1 => Node::Obj(Obj::decode(r, depth + 1)?),
            2 => Node::Str(ByteString::from(r.str()?)),
            3 => {
                if depth > 64 {
                    return Err(WireError::Invalid("array nested too deep"));
                }
                let n = r.u32()? as usize;
                let mut a = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    a.push(Node::decode(r, depth + 1)?);
                }
                Node::Arr(a)
            }
            4 => {
                let j = r.str()?;
                if serde_json::from_str::<&serde_json::value::RawValue>(j).is_err() {
                    return Err(WireError::Invalid("JSON text"));
                }
                Node::Json(ByteString::from(j))
            }
            _ => return Err(WireError::Invalid("tree node tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_written_as_serde_json_writes_them() {
        use serde_json::json;
        for v in [
            json!(0),
            json!(-1),
            json!(7),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1.5),
            json!(-0.0),
            json!(1e300),
            json!(true),
            json!(false),
            Value::Null,
            json!("a\"b"),
            json!([1, "x", {"k": -2}]),
        ] {
            let mut out = Vec::new();
            Node::Val(v.clone()).write_json(&mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
        }
    }

    #[test]
    fn keys_are_unique_and_absent_values_skipped() {
        let mut o = Obj::new();
        o.s("a", Some("1"))
            .s("b", None)
            .v("a", 2)
            .o("empty", Obj::new())
            .arr("none", vec![]);
        let mut inner = Obj::new();
        inner.b("t", Some(true));
        o.o("inner", inner);
        o.insert_owned("dyn".to_owned(), Value::from("x"));
        o.insert_absent("dyn".to_owned(), Value::from("y"));
        o.insert_absent("new".to_owned(), Value::from("z"));
        assert!(o.has("a") && !o.has("b") && !o.has("empty"));
        let v = o.to_value();
        assert_eq!(
            v,
            serde_json::json!({"a": 2, "inner": {"t": true}, "dyn": "x", "new": "z"})
        );
        let mut out = Vec::new();
        o.write_json(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":2,"inner":{"t":true},"dyn":"x","new":"z"}"#
        );
        assert_eq!(o.get_str_in("inner", "t"), None);
        assert_eq!(o.into_value(), v);
    }

    #[test]
    fn a_discarding_object_keeps_nothing_and_ordinary_objects_are_unaffected() {
        let mut d = Obj::discarding();
        let mut inner = Obj::new();
        inner.s("x", Some("1"));
        d.s("a", Some("1"))
            .c("b", "c")
            .v("n", 2)
            .o("inner", inner.clone())
            .nodes("list", vec![Node::Obj(inner.clone())]);
        d.insert_owned("dyn".to_owned(), Value::from("x"));
        d.append(inner.clone());
        assert!(d.is_empty() && !d.has("a") && d.get("inner").is_none());
        assert_eq!(d.to_value(), serde_json::json!({}));
        // An ordinary object that ever held every key bit still keeps what it is given.
        let mut full = Obj::new();
        for i in 0..200 {
            full.insert_owned(format!("k{i}"), Value::from(i));
        }
        full.mask = DISCARD; // as many keys of other names would leave it
        full.s("a", Some("1")).append(inner);
        assert_eq!(full.len(), 202);
        assert_eq!(full.get_str("x"), Some("1"));
        // A clone of an empty ordinary object is ordinary.
        let mut e = Obj::new().clone();
        e.s("a", Some("1"));
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn many_keys_with_colliding_bits_stay_unique() {
        let mut o = Obj::new();
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            o.insert_owned(k.clone(), Value::from(i));
        }
        for (i, k) in keys.iter().enumerate() {
            o.insert_owned(k.clone(), Value::from(i * 2));
        }
        let v = o.to_value();
        assert_eq!(v.as_object().unwrap().len(), 200);
        assert_eq!(v["k7"], 14);
        let mut out = Vec::new();
        o.write_json(&mut out).unwrap();
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn strings_inside_the_source_are_shared_and_others_copied() {
        let src = ByteString::from("{\"upn\":\"kim@fabrikam.example\"}");
        let upn = &src[8..28];
        let other = String::from("kim@fabrikam.example");
        let ptr_of = |o: &Obj, k: &str| o.get_str(k).map(|s| s.as_ptr() as usize);
        let o = with_source(&src, false, || {
            let mut o = Obj::new();
            o.s("shared", Some(upn)).s("copied", Some(&other)).s("empty", Some(""));
            // A nested normalization gets its own source and gives the outer one back.
            let inner = ByteString::from("x");
            with_source(&inner, false, || Obj::new().s("x", Some(&inner[..])).is_empty());
            o.s("again", Some(upn));
            o
        });
        assert_eq!(ptr_of(&o, "shared"), Some(upn.as_ptr() as usize));
        assert_eq!(ptr_of(&o, "again"), Some(upn.as_ptr() as usize));
        assert_ne!(ptr_of(&o, "copied"), Some(other.as_ptr() as usize));
        assert_eq!(o.get_str("copied"), Some("kim@fabrikam.example"));
        assert_eq!(o.get_str("empty"), Some(""));
        // Outside a source nothing is shared.
        let mut p = Obj::new();
        p.s("upn", Some(upn));
        assert_ne!(ptr_of(&p, "upn"), Some(upn.as_ptr() as usize));
        // The shared slices keep the buffer alive and render like any string.
        drop(src);
        let mut out = Vec::new();
        o.write_json(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"shared":"kim@fabrikam.example","copied":"kim@fabrikam.example","empty":"","again":"kim@fabrikam.example"}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        for s in [
            "",
            "plain",
            "a\"b\\c\nd\u{1}\u{1f}\t\r\u{8}\u{c}é€\u{7f}",
            "\"",
            "end\\",
        ]
        .into_iter()
        .map(str::to_owned)
        // Longer than a block, escapes in runs and at block edges (JSON text as `raw_data`).
        .chain((0..40).map(|n| {
            format!(
                "{}{}",
                "x".repeat(n),
                r#"{"a":"b\n","c":["\u00e9"]}"#.repeat(3) + "\u{1}\u{1f}\""
            )
        })) {
            let s = s.as_str();
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
        let mut o = Obj::new();
        o.s("q", Some("a\"b\\c\nd\u{1}"));
        o.insert_owned("we\"ird".to_owned(), Value::Null);
        let mut out = Vec::new();
        o.write_json(&mut out).unwrap();
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, o.to_value());
    }
}
