//! Decoding: turns one input unit (an Event Hub message body, a Graph page, an NDJSON line)
//! into records with their category, kind and tenant, repairing what can be repaired.

pub mod graph;
pub mod repair;
mod scan;
mod skip;
pub mod time;

use std::borrow::Cow;
use std::io::Read;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::EventKind;

/// How a unit is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Detect: `{"records":[...]}` is an Event Hub body, `{"value":[...]}` a Graph page,
    /// any other object a single record.
    #[default]
    Auto,
    /// Event Hub body (`{"records":[...]}`) or a single diagnostic record.
    Eventhub,
    /// Graph list response (`{"value":[...]}`) or a single Graph object.
    Graph,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("gzip body could not be inflated: {0}")]
    Gzip(String),
    #[error("body is empty")]
    Empty,
    #[error("body is not JSON and could not be repaired: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object or array of records: {0}")]
    NotRecords(String),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Gzip(_) => "gzip",
            DecodeError::Empty => "empty_body",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotRecords(_) => "not_records",
        }
    }
}

/// One record out of a unit.
#[derive(Clone, Debug)]
pub struct DecodedRecord {
    /// The record's JSON, on one line (its nested values unchecked when `unchecked`: then it
    /// may be broken, and the normalizer's parse finds out).
    pub raw: Bytes,
    pub category: String,
    pub kind: EventKind,
    pub tenant: Option<String>,
    /// Stable entity key known at decode time (the incident id of a Graph alert).
    pub entity_key: Option<String>,
    /// `None` when the record's whole syntax was checked. `Some` for a single record whose
    /// nested values were only skipped by their brackets (see `scan`; the normalizer's parse
    /// checks them, and a record it refuses goes through [`recheck`]): the bytes that
    /// followed it in its unit (a line's end, or nothing), so that a quarantine record can
    /// hold the unit as it came.
    pub unchecked: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct DecodedUnit {
    pub records: Vec<DecodedRecord>,
    /// The repair that made the body parse, if any.
    pub repaired: Option<&'static str>,
    /// `@odata.nextLink` of a Graph page.
    pub next_link: Option<String>,
    /// A Graph page whose `value` was present (an empty page is still a page).
    pub is_graph_page: bool,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Largest inflated body we accept (Event Hub messages are at most 1 MB; Graph pages are larger).
const MAX_INFLATED: u64 = if cfg!(test) { 1 << 20 } else { 256 << 20 };

/// Decode one unit. Errors mean the unit must be quarantined whole; a single record's
/// nested values may be left to the normalizer to check ([`DecodedRecord::unchecked`]).
pub fn decode_unit(format: InputFormat, body: Bytes) -> Result<DecodedUnit, DecodeError> {
    decode_checking(format, body, false)
}

/// How much of a single record's syntax decoding checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Its own members; nested values by their brackets only ([`DecodedRecord::unchecked`],
    /// which keeps the bytes that follow the record in its unit).
    Heads(&'static str),
    /// Everything.
    All,
}

/// Whether a single record of `body` may be decoded unchecked, and what follows it in its
/// unit. Only a body as it came, on one line but for its end: an inflated one, one with a
/// byte order mark or other whitespace around it is checked in full (its quarantine record
/// holds the unit as it came, which an unchecked record found broken later could not
/// reproduce), and so is one with line breaks, which is compacted (`slice_bytes`): that
/// could join the tokens of broken JSON into valid JSON (`[1 2]` into `[12]`).
fn check_for(gzipped: bool, body: &[u8], trimmed: &[u8]) -> Check {
    if gzipped || trimmed.as_ptr() != body.as_ptr() || memchr::memchr2(b'\n', b'\r', trimmed).is_some() {
        return Check::All;
    }
    match &body[trimmed.len()..] {
        b"" => Check::Heads(""),
        b"\n" => Check::Heads("\n"),
        b"\r\n" => Check::Heads("\r\n"),
        _ => Check::All,
    }
}

/// [`decode_unit`]; `all`: check every record in full ([`recheck`]).
fn decode_checking(format: InputFormat, body: Bytes, all: bool) -> Result<DecodedUnit, DecodeError> {
    let gzipped = body.starts_with(&GZIP_MAGIC);
    let body = if gzipped {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut out)
            .map_err(|e| DecodeError::Gzip(e.to_string()))?;
        // Said as what it is (cut at the limit, it failed later as JSON ending early).
        if out.len() as u64 > MAX_INFLATED {
            return Err(DecodeError::Gzip(format!(
                "inflates to more than {} MiB",
                MAX_INFLATED >> 20
            )));
        }
        Bytes::from(out)
    } else {
        body
    };
    let trimmed = trim(&body);
    if trimmed.is_empty() {
        return Err(DecodeError::Empty);
    }
    let check = if all {
        Check::All
    } else {
        check_for(gzipped, &body, trimmed)
    };
    let body = body.slice_ref(trimmed);
    // One pass for an object (envelope keys and a single record's head together); only a
    // syntax error takes the repair path below.
    if body.starts_with(b"{") {
        match decode_object(format, &body, check) {
            Ok(unit) => return Ok(unit),
            Err(Some(e)) => return Err(e),
            Err(None) => {}
        }
    }
    let (body, repaired) = parse_or_repair(body)?;
    let mut unit = DecodedUnit {
        repaired,
        ..DecodedUnit::default()
    };
    let text = std::str::from_utf8(&body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| DecodeError::NotRecords(e.to_string()))?;
        for item in items {
            push_item(format, &body, item, &mut unit)?;
        }
        return Ok(unit);
    }
    if !text.starts_with('{') {
        return Err(DecodeError::NotRecords("top level is a scalar".into()));
    }
    // A repaired object body: the same one-pass decoding.
    // (Checked in full by the repair's parse.)
    let mut unit = decode_object(format, &body, Check::All)
        .map_err(|e| e.unwrap_or_else(|| DecodeError::NotJson("the repaired body does not parse".into())))?;
    unit.repaired = repaired;
    Ok(unit)
}

/// The top level of an object body: an Event Hub body, a Graph page, or one record (whose
/// head is read in the same pass).
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    value: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default, rename = "@odata.nextLink")]
    next_link: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "tenantId")]
    tenant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "resourceId")]
    resource_id: Option<Cow<'a, str>>,
}

/// Decodes an object body in one parse. `Err(None)`: not valid JSON (try the repairs).
fn decode_object(format: InputFormat, body: &Bytes, check: Check) -> Result<DecodedUnit, Option<DecodeError>> {
    // The fast scan covers Event Hub bodies and single diagnostic records; anything else
    // (Graph objects and pages, what it does not handle) takes the serde pass below; Graph
    // input goes there at once instead of being scanned first.
    let scanned = (format != InputFormat::Graph)
        .then(|| scan::scan(body, check != Check::All))
        .flatten();
    let trailer = match check {
        Check::Heads(t) => t,
        Check::All => "",
    };
    if let Some(scanned) = scanned {
        let mut unit = DecodedUnit::default();
        match scanned {
            scan::Scanned::Records(list) => {
                for (bytes, head) in list {
                    push_scanned(body, bytes, head, None, &mut unit);
                }
                return Ok(unit);
            }
            scan::Scanned::Single { head, checked }
                if format == InputFormat::Eventhub
                    || (format == InputFormat::Auto && !graph::looks_like_graph_bytes(body)) =>
            {
                push_scanned(body, body, head, (!checked).then_some(trailer), &mut unit);
                return Ok(unit);
            }
            scan::Scanned::Single { .. } => {}
        }
    }
    // The fast typed parse where the body is UTF-8 (its results and errors are serde_json's).
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => crate::json_de::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    let top: Top = match parsed {
        Ok(t) => t,
        Err(e) if e.is_data() => return Err(Some(DecodeError::NotRecords(e.to_string()))),
        Err(_) => return Err(None),
    };
    let mut unit = DecodedUnit::default();
    match (top.records, top.value) {
        (Some(records), _) if format != InputFormat::Graph => {
            for r in records {
                push_eventhub_record(body, r, &mut unit).map_err(Some)?;
            }
        }
        (_, Some(value)) if format != InputFormat::Eventhub => {
            unit.is_graph_page = true;
            unit.next_link = top.next_link.map(Cow::into_owned);
            for item in value {
                graph::push_graph_item(body, item, &mut unit).map_err(Some)?;
            }
        }
        _ => {
            let text = std::str::from_utf8(body).map_err(|e| Some(DecodeError::NotJson(e.to_string())))?;
            let is_graph = match format {
                InputFormat::Graph => true,
                InputFormat::Eventhub => false,
                InputFormat::Auto => graph::looks_like_graph(text),
            };
            if is_graph {
                let whole: &RawValue =
                    serde_json::from_str(text).map_err(|e| Some(DecodeError::NotRecords(e.to_string())))?;
                graph::push_graph_item(body, whole, &mut unit).map_err(Some)?;
            } else {
                let category = top.category.as_deref().unwrap_or("Unknown").to_string();
                unit.records.push(DecodedRecord {
                    raw: slice_bytes(body, body),
                    kind: EventKind::from_category(&category),
                    category,
                    tenant: record_tenant(top.tenant_id, top.resource_id.as_deref()),
                    entity_key: None,
                    unchecked: None,
                });
            }
        }
    }
    Ok(unit)
}

fn push_item(format: InputFormat, body: &Bytes, item: &RawValue, unit: &mut DecodedUnit) -> Result<(), DecodeError> {
    let is_graph = match format {
        InputFormat::Graph => true,
        InputFormat::Eventhub => false,
        InputFormat::Auto => graph::looks_like_graph(item.get()),
    };
    if is_graph {
        graph::push_graph_item(body, item, unit)
    } else {
        push_eventhub_record(body, item, unit)
    }
}

#[derive(Deserialize)]
struct RecordHead<'a> {
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "tenantId")]
    tenant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "resourceId")]
    resource_id: Option<Cow<'a, str>>,
}

fn push_eventhub_record(body: &Bytes, item: &RawValue, unit: &mut DecodedUnit) -> Result<(), DecodeError> {
    let raw = record_bytes(body, item);
    if !item.get().starts_with('{') {
        return Err(DecodeError::NotRecords("a record in `records` is not an object".into()));
    }
    let head: RecordHead = serde_json::from_str(item.get()).map_err(|e| DecodeError::NotRecords(e.to_string()))?;
    let category = head.category.as_deref().unwrap_or("Unknown").to_string();
    unit.records.push(DecodedRecord {
        raw,
        kind: EventKind::from_category(&category),
        category,
        tenant: record_tenant(head.tenant_id, head.resource_id.as_deref()),
        entity_key: None,
        unchecked: None,
    });
    Ok(())
}

/// A record found by the fast scan (`bytes` is part of `body`).
fn push_scanned(
    body: &Bytes,
    bytes: &[u8],
    head: scan::Head<'_>,
    unchecked: Option<&'static str>,
    unit: &mut DecodedUnit,
) {
    let category = head.category.unwrap_or("Unknown").to_string();
    unit.records.push(DecodedRecord {
        // An unchecked record has no line breaks (see `check_for`): nothing to compact.
        raw: match unchecked {
            Some(_) => body.slice_ref(bytes),
            None => slice_bytes(body, bytes),
        },
        kind: EventKind::from_category(&category),
        category,
        tenant: record_tenant(head.tenant_id.map(Cow::Borrowed), head.resource_id),
        entity_key: None,
        unchecked,
    });
}

/// For a record decoded unchecked ([`DecodedRecord::unchecked`]) that the normalizer refused:
/// the error decoding it in full gives (the one it would have been quarantined with), or
/// `None` when its JSON is valid (the normalizer's error stands). It never needs a repair:
/// the scan gives up on anything one would fix.
pub fn recheck(record: &Bytes) -> Option<DecodeError> {
    match decode_checking(InputFormat::Eventhub, record.clone(), true) {
        Ok(unit) => {
            debug_assert!(unit.repaired.is_none(), "an unchecked record needed a repair");
            None
        }
        Err(e) => Some(e),
    }
}

/// `tenantId`, else the tenant in `resourceId`.
fn record_tenant(tenant_id: Option<Cow<'_, str>>, resource_id: Option<&str>) -> Option<String> {
    tenant_id
        .filter(|t| !t.is_empty())
        .map(Cow::into_owned)
        .or_else(|| resource_id.and_then(tenant_from_resource_id))
}

/// `/tenants/<id>/providers/...` → `<id>`.
fn tenant_from_resource_id(rid: &str) -> Option<String> {
    let lower = rid.to_ascii_lowercase();
    let start = lower.find("/tenants/")? + "/tenants/".len();
    let rest = &rid[start..];
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// The record's bytes as a zero-copy slice of the body, compacted to one line if needed.
pub(crate) fn record_bytes(body: &Bytes, item: &RawValue) -> Bytes {
    slice_bytes(body, item.get().as_bytes())
}

/// `s` (a part of `body`) as a zero-copy slice, or compacted to one line if it has line
/// breaks (between tokens: raw ones inside strings are not valid JSON).
fn slice_bytes(body: &Bytes, s: &[u8]) -> Bytes {
    if memchr::memchr2(b'\n', b'\r', s).is_some() {
        Bytes::from(crate::json_text::compact(s).into_owned())
    } else {
        body.slice_ref(s)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    // A UTF-8 byte order mark is not JSON either, nor whitespace after it.
    let s = trim_whitespace(b);
    s.strip_prefix(b"\xEF\xBB\xBF").map_or(s, trim_whitespace)
}

fn trim_whitespace(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Parse as JSON; on a syntax error try the repair that matches the error.
fn parse_or_repair(body: Bytes) -> Result<(Bytes, Option<&'static str>), DecodeError> {
    let first = match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => return Ok((body, None)),
        Err(e) => e,
    };
    let msg = first.to_string();
    let attempt = |fixed: Vec<u8>, name: &'static str| {
        serde_json::from_slice::<serde::de::IgnoredAny>(&fixed)
            .ok()
            .map(|_| (Bytes::from(fixed), Some(name)))
    };
    if msg.contains("control character") {
        if let Some(fixed) = repair::escape_control_chars_in_strings(&body) {
            if let Some(ok) = attempt(fixed, "control_characters") {
                return Ok(ok);
            }
        }
    }
    if body.contains(&b'\'') {
        if let Some(fixed) = repair::single_to_double_quotes(&body) {
            if let Some(ok) = attempt(fixed.clone(), "single_quotes") {
                return Ok(ok);
            }
            // Both problems at once.
            if let Some(both) = repair::escape_control_chars_in_strings(&fixed) {
                if let Some(ok) = attempt(both, "single_quotes+control_characters") {
                    return Ok(ok);
                }
            }
        }
    }
    Err(DecodeError::NotJson(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `tests/data` (also read by the decoders' own tests).
    pub(super) fn data(path: &str) -> Bytes {
        let p = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
        Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
    }

    #[test]
    fn eventhub_body_records_become_compact_slices() {
        let unit = decode_unit(InputFormat::Auto, data("eventhub/signin_interactive.json")).unwrap();
        assert_eq!(unit.records.len(), 2);
        let r = &unit.records[0];
        assert_eq!(r.category, "SignInLogs");
        assert_eq!(r.kind, EventKind::SignIn);
        assert_eq!(r.tenant.as_deref(), Some("d13c513a-42f8-4da1-97b1-165f0971b7c4"));
        assert!(!r.raw.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&r.raw).unwrap();
        assert_eq!(v["properties"]["userPrincipalName"], "alex.wilber@fabrikam.example");
    }

    #[test]
    fn gzip_body_is_inflated() {
        use std::io::Write;
        let plain = data("eventhub/auditlogs.json");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&plain).unwrap();
        let unit = decode_unit(InputFormat::Eventhub, Bytes::from(enc.finish().unwrap())).unwrap();
        assert_eq!(unit.records.len(), 3);
        assert!(unit.records.iter().all(|r| r.category == "AuditLogs"));
    }

    #[test]
    fn single_quoted_properties_are_repaired() {
        let unit = decode_unit(
            InputFormat::Auto,
            data("eventhub/malformed/single_quoted_properties.json"),
        )
        .unwrap();
        assert_eq!(unit.repaired, Some("single_quotes"));
        let v: serde_json::Value = serde_json::from_slice(&unit.records[0].raw).unwrap();
        assert_eq!(v["properties"]["isInteractive"], false);
        assert_eq!(v["properties"]["userPrincipalName"], "megan.bowen@fabrikam.example");
    }

    #[test]
    fn raw_newline_repair_keeps_apostrophes() {
        let unit = decode_unit(InputFormat::Auto, data("eventhub/malformed/raw_newline_in_string.json")).unwrap();
        assert_eq!(unit.repaired, Some("control_characters"));
        assert_eq!(unit.records.len(), 2);
        let v: serde_json::Value = serde_json::from_slice(&unit.records[0].raw).unwrap();
        let cmd = v["properties"]["ProcessCommandLine"].as_str().unwrap();
        assert!(cmd.contains("'line one\nline two'"), "{cmd}");
    }

    #[test]
    fn placeholder_blob_is_not_repairable() {
        let err = decode_unit(InputFormat::Auto, data("eventhub/malformed/placeholder_blob.txt")).unwrap_err();
        assert_eq!(err.reason(), "not_json");
    }

    #[test]
    fn unknown_category_is_generic_and_tenant_comes_from_resource_id() {
        let body =
            br#"{"records":[{"category":"SomethingNew","resourceId":"/TENANTS/abc/PROVIDERS/MICROSOFT.AADIAM"}]}"#;
        let unit = decode_unit(InputFormat::Auto, Bytes::from_static(body)).unwrap();
        assert_eq!(unit.records[0].kind, EventKind::Generic);
        assert_eq!(unit.records[0].tenant.as_deref(), Some("abc"));
    }

    /// A body that inflates past the limit (a gzip bomb) is refused as such, not cut and
    /// then refused as broken JSON.
    #[test]
    fn a_body_inflating_past_the_limit_is_refused_as_too_large() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut body = br#"{"records":[{"category":"AuditLogs","properties":{"x":""#.to_vec();
        body.resize(body.len() + (MAX_INFLATED as usize), b'a');
        body.extend_from_slice(br#""}}]}"#);
        std::io::Write::write_all(&mut gz, &body).unwrap();
        match decode_unit(InputFormat::Eventhub, Bytes::from(gz.finish().unwrap())) {
            Err(e @ DecodeError::Gzip(_)) => assert!(e.to_string().contains("more than 1 MiB"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    /// A single record is decoded unchecked only as it came (but for a line's end, kept for
    /// its quarantine record); anything decoding alters is checked in full, and a record
    /// broken inside is then refused as before.
    #[test]
    fn which_single_records_are_decoded_unchecked() {
        let record = r#"{"category":"AuditLogs","tenantId":"t","properties":{"a":[1,2],"b":{"c":"d"}}}"#;
        let unchecked = |body: Vec<u8>| {
            let unit = decode_unit(InputFormat::Eventhub, Bytes::from(body)).unwrap();
            assert_eq!(unit.records.len(), 1);
            assert_eq!(&unit.records[0].raw[..], record.as_bytes(), "the record, trimmed");
            unit.records[0].unchecked
        };
        assert_eq!(unchecked(record.into()), Some(""));
        assert_eq!(unchecked(format!("{record}\n").into()), Some("\n"));
        assert_eq!(unchecked(format!("{record}\r\n").into()), Some("\r\n"));
        assert_eq!(unchecked(format!("{record} \n").into()), None);
        assert_eq!(unchecked(format!(" {record}").into()), None);
        assert_eq!(unchecked(format!("\u{feff}{record}").into()), None);
        assert_eq!(
            unchecked(format!("\u{feff}\n {record}").into()),
            None,
            "whitespace after the mark"
        );
        let body = format!("\u{feff}\n{{\"records\":[{record}]}}");
        assert_eq!(
            decode_unit(InputFormat::Eventhub, Bytes::from(body))
                .unwrap()
                .records
                .len(),
            1
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, record.as_bytes()).unwrap();
        assert_eq!(unchecked(gz.finish().unwrap()), None, "inflated");
        // In an Event Hub body, records are checked.
        let body = format!(r#"{{"records":[{record}]}}"#);
        let unit = decode_unit(InputFormat::Eventhub, Bytes::from(body)).unwrap();
        assert_eq!(unit.records[0].unchecked, None);
        // Repaired, the record was checked by the repair's parse.
        let unit = decode_unit(InputFormat::Eventhub, Bytes::from(record.replace("\"d\"", "'d'"))).unwrap();
        assert_eq!(
            (unit.repaired, unit.records[0].unchecked),
            (Some("single_quotes"), None)
        );
        // With line breaks the record is compacted, which would join broken tokens: checked.
        let pretty = "{\"category\":\"AuditLogs\",\n\"properties\":{\"n\":[1,\n2]}}";
        let unit = decode_unit(InputFormat::Eventhub, Bytes::from(pretty)).unwrap();
        assert_eq!(unit.records[0].unchecked, None);
        assert_eq!(
            &unit.records[0].raw[..],
            br#"{"category":"AuditLogs","properties":{"n":[1,2]}}"#
        );
        for broken in [
            "{\"category\":\"AuditLogs\",\n\"properties\":{\"n\":[1 2]}}",
            "{\"category\":\"AuditLogs\",\n\"properties\":{\"b\":tr ue}}",
        ] {
            let err = decode_unit(InputFormat::Eventhub, Bytes::from(broken)).unwrap_err();
            assert_eq!(err.reason(), "not_json", "{broken}");
        }
        // Broken inside, on one line: decoded unchecked, refused by the full decoding.
        let broken = record.replace("[1,2]", "[1 2]");
        let unit = decode_unit(InputFormat::Eventhub, Bytes::from(broken.clone())).unwrap();
        assert_eq!(unit.records[0].unchecked, Some(""));
        assert_eq!(recheck(&unit.records[0].raw).map(|e| e.reason()), Some("not_json"));
        assert!(recheck(&Bytes::from(record)).is_none());
    }
}
