//! Shared model of CEF and LEEF messages: header fields plus key=value pairs, one-pass
//! escaping, exact size measurement and fitting to a byte budget with a truncation marker.

use std::borrow::Cow;
use std::cmp::Reverse;

use serde_json::Value;

use crate::byte_search::first_of;

use std::ops::Deref;

use super::fields::{flat_of, floor_boundary, int_bytes, str_at, text_at, View};
use super::{EncodeError, EncodeReport, SplitMode};
use crate::event::{Event, EventMeta};
use crate::normalize::Flat;

/// Where a string is written; decides its escaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctx {
    /// CEF header: `\` → `\\`, `|` → `\|`; line breaks and controls → space.
    CefHeader,
    /// CEF extension value: `\` → `\\`, `=` → `\=`, LF → `\n`, CR → `\r`; controls → space.
    CefValue,
    /// LEEF header: `|`, line breaks and controls → space (LEEF has no escapes).
    LeefHeader,
    /// LEEF attribute value: the delimiter, line breaks and controls → space.
    LeefValue(u8),
}

/// Byte sink: a buffer, or a counter for exact size measurement.
pub(crate) trait Sink {
    fn put(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        crate::byte_search::append_short(self, b);
    }
}

#[derive(Default)]
pub(crate) struct Count(pub usize);

impl Sink for Count {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

/// Writes `s` escaped for `ctx` in one pass; returns whether a character had to be replaced.
/// Always inlined: it runs for every value of every line, and its call cost a fifth of it.
#[inline(always)]
pub(crate) fn escape<S: Sink>(s: &str, ctx: Ctx, out: &mut S) -> bool {
    let (s1, s2) = match ctx {
        Ctx::CefHeader => (b'\\', b'|'),
        Ctx::CefValue => (b'\\', b'='),
        Ctx::LeefHeader => (b'|', b'|'),
        Ctx::LeefValue(d) => (d, d),
    };
    let b = s.as_bytes();
    let mut altered = false;
    let mut start = 0;
    let mut i = 0;
    loop {
        // Straight to the next byte that may need a replacement: a control character, DEL,
        // the lead byte of a C1 control, or one of the context's two special characters.
        i = first_of(b, i, 0x20, [0x7f, 0xc2, s1, s2]);
        let Some(&c) = b.get(i) else { break };
        let rep: &[u8] = match (c, ctx) {
            (b'\\', Ctx::CefHeader | Ctx::CefValue) => b"\\\\",
            (b'|', Ctx::CefHeader) => b"\\|",
            (b'=', Ctx::CefValue) => b"\\=",
            (b'\n', Ctx::CefValue) => b"\\n",
            (b'\r', Ctx::CefValue) => b"\\r",
            (b'|', Ctx::LeefHeader) => {
                altered = true;
                b" "
            }
            (0..=0x1f | 0x7f, _) => {
                altered = true;
                b" "
            }
            (d, Ctx::LeefValue(delim)) if d == delim => {
                altered = true;
                b" "
            }
            // C1 control characters U+0080..U+009F (UTF-8 C2 80..C2 9F).
            (0xc2, _) if matches!(b.get(i + 1), Some(0x80..=0x9f)) => {
                altered = true;
                out.put(&b[start..i]);
                out.put(b" ");
                i += 2;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.put(&b[start..i]);
        out.put(rep);
        i += 1;
        start = i;
    }
    out.put(&b[start..]);
    altered
}

/// Escaped length of `s` in `ctx`.
pub(crate) fn escaped_len(s: &str, ctx: Ctx) -> usize {
    let mut c = Count::default();
    escape(s, ctx, &mut c);
    c.0
}

/// The longest prefix of `s` whose escaped form is at most `budget` bytes.
pub(crate) fn cut_escaped(s: &str, budget: usize, ctx: Ctx) -> &str {
    let mut used = 0;
    let mut buf = [0u8; 4];
    for (i, ch) in s.char_indices() {
        used += escaped_len(ch.encode_utf8(&mut buf), ctx);
        if used > budget {
            return &s[..i];
        }
    }
    s
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
}

/// Shrink priority that is never cut or dropped.
pub(crate) const KEEP: u8 = u8::MAX;

/// One `key=value` pair, optionally preceded by its label pair (`cs1Label=url cs1=...`).
#[derive(Clone, Debug)]
pub(crate) struct Pair<'a> {
    pub key: &'static str,
    pub label: Option<(&'static str, &'static str)>,
    pub val: Val<'a>,
    /// Lower values are shortened first when the message is over budget; [`KEEP`] never.
    pub shrink: u8,
    /// Shortening makes no sense (ids, IPs, URLs): drop the pair instead.
    pub atomic: bool,
}

impl Pair<'_> {
    fn is_empty(&self) -> bool {
        matches!(&self.val, Val::Str(s) if s.is_empty())
    }
}

/// Fixed syntax of a dialect.
pub(crate) struct Syntax {
    /// `CEF:0|` or `LEEF:2.0|`.
    pub prefix: &'static [u8],
    /// Written after the last header field's `|`: empty for CEF, `<delim>|` for LEEF 2.0.
    pub header_tail: Vec<u8>,
    /// Separator between pairs.
    pub sep: u8,
    pub header_ctx: Ctx,
    pub value_ctx: Ctx,
    /// Written as the first pair(s) of a truncated message (contains `sep` if several).
    pub truncated_marker: Vec<u8>,
    /// Written after the truncation marker when a value was altered (LEEF only).
    pub altered_marker: Option<Vec<u8>>,
}

/// One message before serialization.
pub(crate) struct Record<'a> {
    pub header: Vec<Cow<'a, str>>,
    /// Index of the header field that may be shortened as a last resort (Name).
    pub cut_header: Option<usize>,
    pub pairs: Vec<Pair<'a>>,
    /// A value was shortened: the truncation marker is written.
    pub truncated: bool,
    /// A character was replaced: the altered marker (if the dialect has one) is written.
    pub altered: bool,
}

impl<'a> Record<'a> {
    pub fn new(header: Vec<Cow<'a, str>>, cut_header: Option<usize>) -> Record<'a> {
        Record {
            header,
            cut_header,
            pairs: Vec::with_capacity(24),
            truncated: false,
            altered: false,
        }
    }

    /// Adds a string pair unless empty, cut to `cap` bytes (flagging truncation).
    pub fn text(&mut self, key: &'static str, v: Option<&'a str>, cap: usize, shrink: u8) {
        self.text_pair(key, None, v.map(Cow::Borrowed), cap, shrink, false);
    }

    /// Like [`Record::text`] for values that are dropped rather than shortened.
    pub fn atom(&mut self, key: &'static str, v: Option<&'a str>, shrink: u8) {
        self.text_pair(key, None, v.map(Cow::Borrowed), usize::MAX, shrink, true);
    }

    pub fn text_pair(
        &mut self,
        key: &'static str,
        label: Option<(&'static str, &'static str)>,
        v: Option<Cow<'a, str>>,
        cap: usize,
        shrink: u8,
        atomic: bool,
    ) {
        let Some(mut v) = v else { return };
        if v.is_empty() {
            return;
        }
        if v.len() > cap {
            if atomic {
                self.truncated = true;
                return;
            }
            let n = floor_boundary(&v, cap).len();
            cut_cow(&mut v, n);
            self.truncated = true;
        }
        self.pairs.push(Pair {
            key,
            label,
            val: Val::Str(v),
            shrink,
            atomic,
        });
    }

    pub fn int(&mut self, key: &'static str, label: Option<(&'static str, &'static str)>, v: i64) {
        self.pairs.push(Pair {
            key,
            label,
            val: Val::Int(v),
            shrink: KEEP,
            atomic: true,
        });
    }
}

/// Shortens a Cow string to `n` bytes (`n` on a char boundary).
pub(crate) fn cut_cow(c: &mut Cow<'_, str>, n: usize) {
    match c {
        Cow::Borrowed(s) => *s = &s[..n],
        Cow::Owned(s) => s.truncate(n),
    }
}

/// Serializes `rec`; returns whether a character was replaced.
pub(crate) fn write_record<S: Sink>(syn: &Syntax, rec: &Record<'_>, out: &mut S) -> bool {
    let mut altered = false;
    out.put(syn.prefix);
    for h in &rec.header {
        altered |= escape(h, syn.header_ctx, out);
        out.put(b"|");
    }
    out.put(&syn.header_tail);
    let sep = [syn.sep];
    let mut first = true;
    if rec.truncated {
        out.put(&syn.truncated_marker);
        first = false;
    }
    if let (true, Some(m)) = (rec.altered, &syn.altered_marker) {
        if !first {
            out.put(&sep);
        }
        out.put(m);
        first = false;
    }
    for p in &rec.pairs {
        if p.is_empty() {
            continue;
        }
        if !first {
            out.put(&sep);
        }
        first = false;
        if let Some((lk, lv)) = p.label {
            out.put(lk.as_bytes());
            out.put(b"=");
            altered |= escape(lv, syn.value_ctx, out);
            out.put(&sep);
        }
        out.put(p.key.as_bytes());
        out.put(b"=");
        match &p.val {
            Val::Str(s) => altered |= escape(s, syn.value_ctx, out),
            Val::Int(n) => out.put(int_bytes(*n, &mut [0u8; 20])),
        }
    }
    altered
}

fn measure(syn: &Syntax, rec: &Record<'_>) -> usize {
    let mut c = Count::default();
    write_record(syn, rec, &mut c);
    c.0
}

/// Outcome of [`emit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Emitted {
    pub truncated: bool,
    pub altered: bool,
}

/// Writes `rec` plus `\n` to `out`, fitting it into `max` bytes (without the `\n`): values
/// are shortened or dropped in shrink order, then the cuttable header field; the truncation
/// marker is written first in the extension so it survives a receiver cutting the tail.
pub(crate) fn emit(
    syn: &Syntax,
    mut rec: Record<'_>,
    out: &mut Vec<u8>,
    max: Option<usize>,
) -> Result<Emitted, EncodeError> {
    let start = out.len();
    let altered = write_record(syn, &rec, out);
    let len = out.len() - start;
    let over = max.is_some_and(|m| len > m);
    let add_altered_marker = altered && syn.altered_marker.is_some() && !rec.altered;
    if over || add_altered_marker {
        out.truncate(start);
        rec.altered = altered;
        if let Some(m) = max {
            fit(syn, &mut rec, m)?;
        }
        write_record(syn, &rec, out);
    }
    out.push(b'\n');
    Ok(Emitted {
        truncated: rec.truncated,
        altered,
    })
}

/// Total size `rec` would have.
pub(crate) fn size(syn: &Syntax, rec: &Record<'_>) -> usize {
    measure(syn, rec)
}

fn fit(syn: &Syntax, rec: &mut Record<'_>, max: usize) -> Result<(), EncodeError> {
    let total = measure(syn, rec);
    if total <= max {
        return Ok(());
    }
    rec.truncated = true;
    let total = measure(syn, rec);
    if total <= max {
        return Ok(());
    }
    let mut over = total - max;
    let ctx = syn.value_ctx;
    let mut order: Vec<(u8, Reverse<usize>, usize)> = rec
        .pairs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.val {
            Val::Str(s) if p.shrink != KEEP && !s.is_empty() => Some((p.shrink, Reverse(escaped_len(s, ctx)), i)),
            _ => None,
        })
        .collect();
    order.sort_unstable();
    for (_, Reverse(vlen), i) in order {
        if over == 0 {
            break;
        }
        let p = &mut rec.pairs[i];
        let Val::Str(s) = &mut p.val else { continue };
        if p.atomic || vlen <= over {
            // Drop the pair: its separator, key, `=`, value and label pair.
            let mut c = Count::default();
            c.put(&[syn.sep]);
            c.put(p.key.as_bytes());
            c.put(b"=");
            escape(s, ctx, &mut c);
            if let Some((lk, lv)) = p.label {
                c.put(lk.as_bytes());
                c.put(b"=");
                escape(lv, ctx, &mut c);
                c.put(&[syn.sep]);
            }
            over = over.saturating_sub(c.0);
            cut_cow(s, 0);
        } else {
            let keep = cut_escaped(s, vlen - over, ctx).len();
            cut_cow(s, keep);
            over = 0;
        }
    }
    if over > 0 {
        if let Some(h) = rec.cut_header.and_then(|i| rec.header.get_mut(i)) {
            let hlen = escaped_len(h, syn.header_ctx);
            let keep = cut_escaped(h, hlen.saturating_sub(over), syn.header_ctx).len();
            cut_cow(h, keep);
        }
    }
    let size = measure(syn, rec);
    if size > max {
        return Err(EncodeError::TooLarge { size, max });
    }
    Ok(())
}

/// What a main record carries besides the event itself.
pub(crate) enum Extra {
    /// A single message; for an incident, the comma-separated uids of its alerts.
    Whole(Option<String>),
    /// Part `i/n` of a split incident.
    Part(String),
}

/// Builds the messages of one dialect; [`encode_parts`] decides about splitting.
pub(crate) trait Builder {
    fn syntax(&self) -> &Syntax;
    /// `max_message_bytes` and incident splitting.
    fn limits(&self) -> (Option<usize>, SplitMode);
    fn main<'a, S: Deref<Target = str>>(&'a self, f: &'a Flat<S>, meta: &'a EventMeta, extra: Extra) -> Record<'a>;
    fn alert<'a, S: Deref<Target = str>>(
        &'a self,
        f: &'a Flat<S>,
        meta: &'a EventMeta,
        alert: &'a Value,
        part: String,
    ) -> Record<'a>;
    fn evidence<'a, S: Deref<Target = str>>(
        &'a self,
        f: &'a Flat<S>,
        meta: &'a EventMeta,
        ev: &'a Value,
        part: String,
    ) -> Record<'a>;
}

/// Appends `event`'s message(s) in `b`'s dialect ([`encode_parts`]), `reserve` bytes of each
/// message's size limit taken by a prefix (a syslog header); on an error nothing of the
/// event is left in `out`.
pub(crate) fn encode_event<B: Builder>(
    b: &B,
    event: &Event,
    out: &mut Vec<u8>,
    reserve: usize,
) -> Result<EncodeReport, EncodeError> {
    let (max, split) = b.limits();
    let max = max.map(|m| m.saturating_sub(reserve));
    let n = event.normalized.as_deref().ok_or(EncodeError::NotNormalized)?;
    let start = out.len();
    let r = match n.flat() {
        // Normalized without a tree: never an incident (Graph incidents keep their tree),
        // so one message.
        Some(f) => {
            debug_assert_ne!(f.class_uid, 2005, "incidents are normalized with a tree");
            emit(b.syntax(), b.main(f, &event.meta, Extra::Whole(None)), out, max)
                .map(|e| EncodeReport::one(e.truncated, e.altered))
        }
        None if !n.is_object() => return Err(EncodeError::InvalidOcsf),
        None => encode_parts(b, &View::new(n.root(), &event.meta), out, max, split),
    };
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Encodes an event as one message, or, for an incident (class 2005) with alerts
/// (`finding_info_list`) or `evidences`, as a summary plus one part per alert and evidence
/// when `split` says so (always, or `auto` and the single message is over `max`).
fn encode_parts<B: Builder>(
    b: &B,
    v: &View<'_>,
    out: &mut Vec<u8>,
    max: Option<usize>,
    split: SplitMode,
) -> Result<EncodeReport, EncodeError> {
    let syn = b.syntax();
    let f = flat_of(v);
    let (alerts, evidences) = if v.class_uid() == 2005 {
        (v.array("finding_info_list"), v.array("evidences"))
    } else {
        (&[][..], &[][..])
    };
    let parts = alerts.len() + evidences.len();
    let try_whole = match split {
        SplitMode::Never => true,
        SplitMode::Always => parts == 0,
        SplitMode::Auto => true,
    };
    if try_whole {
        let ids = (!alerts.is_empty()).then(|| {
            let mut s = String::new();
            for a in alerts {
                if let Some(uid) = text_at(a, "uid") {
                    if !s.is_empty() {
                        s.push(',');
                    }
                    s.push_str(&uid);
                }
            }
            s
        });
        let rec = b.main(&f, v.meta, Extra::Whole(ids));
        let fits = match max {
            Some(m) if split == SplitMode::Auto && parts > 0 => size(syn, &rec) <= m,
            _ => true,
        };
        if fits {
            let e = emit(syn, rec, out, max)?;
            return Ok(EncodeReport::one(e.truncated, e.altered));
        }
    }
    let n = parts + 1;
    let mut report = EncodeReport {
        split: true,
        ..EncodeReport::default()
    };
    let mut add = |e: Emitted| report.add(EncodeReport::one(e.truncated, e.altered));
    add(emit(syn, b.main(&f, v.meta, Extra::Part(format!("1/{n}"))), out, max)?);
    for (i, a) in alerts.iter().enumerate() {
        add(emit(syn, b.alert(&f, v.meta, a, format!("{}/{n}", i + 2)), out, max)?);
    }
    for (i, e) in evidences.iter().enumerate() {
        let part = format!("{}/{n}", i + 2 + alerts.len());
        add(emit(syn, b.evidence(&f, v.meta, e, part), out, max)?);
    }
    Ok(report)
}

/// A short type name of an OCSF evidence object.
pub(crate) fn evidence_type(ev: &Value) -> &str {
    if let Some(t) = str_at(ev, "data.entity_type").or_else(|| str_at(ev, "type")) {
        return t;
    }
    const KEYS: [(&str, &str); 8] = [
        ("process", "process"),
        ("file", "file"),
        ("url", "url"),
        ("email", "email"),
        ("user", "user"),
        ("device", "device"),
        ("src_endpoint", "ip"),
        ("dst_endpoint", "ip"),
    ];
    KEYS.iter()
        .find(|(k, _)| ev.get(*k).is_some())
        .map_or("other", |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, ctx: Ctx) -> (String, bool) {
        let mut v = Vec::new();
        let a = escape(s, ctx, &mut v);
        assert_eq!(v.len(), escaped_len(s, ctx));
        (String::from_utf8(v).unwrap(), a)
    }

    #[test]
    fn cef_escaping_rules() {
        assert_eq!(
            esc("Ransomware | lateral movement", Ctx::CefHeader).0,
            r"Ransomware \| lateral movement"
        );
        assert_eq!(esc(r"a\b=c", Ctx::CefHeader).0, r"a\\b=c");
        assert_eq!(esc("a\nb", Ctx::CefHeader), ("a b".into(), true));
        assert_eq!(
            esc(r"C:\Users\kim\a=b.ps1", Ctx::CefValue).0,
            r"C:\\Users\\kim\\a\=b.ps1"
        );
        assert_eq!(
            esc("First line.\nSecond line.\r", Ctx::CefValue),
            (r"First line.\nSecond line.\r".into(), false)
        );
        assert_eq!(esc("a|b", Ctx::CefValue).0, "a|b");
        assert_eq!(esc("t\tb\u{0}\u{85}é", Ctx::CefValue), ("t b  é".into(), true));
    }

    #[test]
    fn leef_replacement_rules() {
        assert_eq!(esc("a|b\nc", Ctx::LeefHeader), ("a b c".into(), true));
        assert_eq!(esc("a^b=c|d", Ctx::LeefValue(b'^')), ("a b=c|d".into(), true));
        assert_eq!(esc("a\tb", Ctx::LeefValue(b'\t')), ("a b".into(), true));
        assert_eq!(esc("plain é", Ctx::LeefValue(b'^')), ("plain é".into(), false));
    }

    #[test]
    fn cut_respects_escapes_and_utf8() {
        assert_eq!(cut_escaped(r"ab\c", 3, Ctx::CefValue), "ab");
        assert_eq!(cut_escaped(r"ab\c", 4, Ctx::CefValue), r"ab\");
        assert_eq!(cut_escaped("aéb", 2, Ctx::CefValue), "a");
        assert_eq!(cut_escaped("aéb", 3, Ctx::CefValue), "aé");
    }
}
