//! JSON line encoders: the normalized OCSF object (`ocsf`) and the raw source record (`raw`).
//!
//! Both write one compact JSON document followed by `\n`. A raw record never contains a raw
//! line break in the output: inside a JSON string a CR/LF becomes `\r`/`\n`, between tokens
//! a space (the message is then counted as `altered`).
//!
//! Size limit (`max_message_bytes`, minus the syslog header when wrapped): an OCSF object
//! over it is written again without `raw_data`, then also without `unmapped` (counted as
//! `truncated`); a raw record or OCSF object that still does not fit fails with
//! [`EncodeError::TooLarge`], since cut JSON is useless.

use serde_json::{Map, Value};

use super::{EncodeError, EncodeReport, Encoder, EncoderOptions, Format};
use crate::event::Event;

/// Writes the normalized OCSF object as one JSON line.
pub struct OcsfEncoder {
    max: Option<usize>,
}

impl OcsfEncoder {
    pub fn new(opts: &EncoderOptions) -> OcsfEncoder {
        OcsfEncoder {
            max: opts.max_message_bytes,
        }
    }
}

/// Attributes dropped, in this order, when an OCSF object is too large.
const DROPPABLE: [&[&str]; 2] = [&["raw_data"], &["raw_data", "unmapped"]];

fn write_without(out: &mut Vec<u8>, obj: &Map<String, Value>, skip: &[&str]) -> Result<(), EncodeError> {
    out.push(b'{');
    let mut first = true;
    for (k, v) in obj {
        if skip.contains(&k.as_str()) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, k)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, v)?;
    }
    out.push(b'}');
    Ok(())
}

impl Encoder for OcsfEncoder {
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, reserve: usize) -> Result<EncodeReport, EncodeError> {
        let n = event.normalized.as_deref().ok_or(EncodeError::NotNormalized)?;
        let start = out.len();
        let max = self.max.map(|m| m.saturating_sub(reserve));
        let r = (|| {
            // Written straight from the normalizer's object; the JSON value is only built
            // when the line is too large and attributes must be dropped.
            n.write_json(out)?;
            if out.get(start) != Some(&b'{') {
                return Err(EncodeError::InvalidOcsf);
            }
            let size = out.len() - start;
            let Some(m) = max.filter(|&m| size > m) else {
                return Ok(EncodeReport::one(false, false));
            };
            let obj = n.ocsf().as_object().ok_or(EncodeError::InvalidOcsf)?;
            for skip in DROPPABLE {
                if !skip.iter().any(|k| obj.contains_key(*k)) {
                    continue;
                }
                out.truncate(start);
                write_without(out, obj, skip)?;
                if out.len() - start <= m {
                    return Ok(EncodeReport::one(true, false));
                }
            }
            Err(EncodeError::TooLarge { size, max: m })
        })();
        match r {
            Ok(rep) => {
                out.push(b'\n');
                Ok(rep)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    fn format(&self) -> Format {
        Format::Ocsf
    }
}

/// Writes the raw source record as one line.
pub struct RawEncoder {
    max: Option<usize>,
}

impl RawEncoder {
    pub fn new(opts: &EncoderOptions) -> RawEncoder {
        RawEncoder {
            max: opts.max_message_bytes,
        }
    }
}

/// The raw record without surrounding whitespace, checked to be UTF-8.
pub(crate) fn raw_text(raw: &[u8]) -> Result<&str, EncodeError> {
    let s = std::str::from_utf8(raw).map_err(|_| EncodeError::InvalidRaw("not UTF-8"))?;
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if s.is_empty() {
        return Err(EncodeError::InvalidRaw("empty record"));
    }
    Ok(s)
}

/// Appends JSON text with raw CR/LF removed: escaped inside strings, spaces between tokens.
/// Returns whether anything was changed.
pub(crate) fn write_json_line(out: &mut Vec<u8>, json: &str) -> bool {
    let b = json.as_bytes();
    if !b.iter().any(|&c| c == b'\n' || c == b'\r') {
        out.extend_from_slice(b);
        return false;
    }
    let mut in_str = false;
    let mut esc = false;
    for &c in b {
        match c {
            b'\n' | b'\r' if in_str => {
                // A raw line break inside a string; a preceding lone backslash would make
                // `\` + LF, so it is completed as an escaped backslash.
                if esc {
                    out.push(b'\\');
                    esc = false;
                }
                out.extend_from_slice(if c == b'\n' { b"\\n" } else { b"\\r" });
                continue;
            }
            b'\n' | b'\r' => {
                out.push(b' ');
                continue;
            }
            b'"' if !esc => in_str = !in_str,
            _ => {}
        }
        esc = in_str && c == b'\\' && !esc;
        out.push(c);
    }
    true
}

impl Encoder for RawEncoder {
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, reserve: usize) -> Result<EncodeReport, EncodeError> {
        let raw = raw_text(&event.raw)?;
        let start = out.len();
        let altered = write_json_line(out, raw);
        let size = out.len() - start;
        if let Some(m) = self.max.map(|m| m.saturating_sub(reserve)) {
            if size > m {
                out.truncate(start);
                return Err(EncodeError::TooLarge { size, max: m });
            }
        }
        out.push(b'\n');
        Ok(EncodeReport::one(false, altered))
    }

    fn format(&self) -> Format {
        Format::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{alert_ocsf, event};
    use crate::event::EventKind;

    fn opts(max: Option<usize>) -> EncoderOptions {
        EncoderOptions {
            max_message_bytes: max,
            ..Default::default()
        }
    }

    #[test]
    fn ocsf_one_line() {
        let e = event(
            EventKind::Alert,
            "GraphAlert",
            "{}",
            Some(serde_json::json!({"b": 1, "a": "x\ny"})),
        );
        let mut out = b"prev".to_vec();
        let r = OcsfEncoder::new(&opts(None)).encode(&e, &mut out).unwrap();
        assert_eq!(out, b"prev{\"a\":\"x\\ny\",\"b\":1}\n");
        assert_eq!(r, EncodeReport::one(false, false));
    }

    #[test]
    fn ocsf_errors_leave_buffer_alone() {
        let e = event(EventKind::Alert, "GraphAlert", "{}", None);
        let mut out = b"prev".to_vec();
        let err = OcsfEncoder::new(&opts(None)).encode(&e, &mut out).unwrap_err();
        assert_eq!(err.reason(), "not_normalized");
        let e = event(EventKind::Alert, "GraphAlert", "{}", Some(serde_json::json!([1])));
        let err = OcsfEncoder::new(&opts(None)).encode(&e, &mut out).unwrap_err();
        assert_eq!(err.reason(), "invalid_ocsf");
        assert_eq!(out, b"prev");
    }

    #[test]
    fn ocsf_drops_raw_data_then_unmapped_then_fails() {
        let mut o = alert_ocsf();
        o["raw_data"] = Value::String("r".repeat(2000));
        o["unmapped"] = serde_json::json!({"x": "u".repeat(600)});
        let e = event(EventKind::Alert, "GraphAlert", "{}", Some(o));
        let mut out = Vec::new();
        let r = OcsfEncoder::new(&opts(Some(1600))).encode(&e, &mut out).unwrap();
        assert_eq!(r.truncated, 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("raw_data").is_none() && v.get("unmapped").is_some());
        out.clear();
        let r = OcsfEncoder::new(&opts(Some(900))).encode(&e, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("unmapped").is_none() && v["finding_info"]["uid"] == "da637");
        assert!(out.len() <= 901 && r.truncated == 1);
        out.clear();
        let err = OcsfEncoder::new(&opts(Some(300))).encode(&e, &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { max: 300, .. }));
        assert!(out.is_empty());
    }

    #[test]
    fn raw_line_and_newlines() {
        let e = event(EventKind::SignIn, "SignInLogs", "{\"a\":\"b\"}\r\n", None);
        let mut out = Vec::new();
        let r = RawEncoder::new(&opts(None)).encode(&e, &mut out).unwrap();
        assert_eq!(out, b"{\"a\":\"b\"}\n");
        assert_eq!(r.altered, 0);
        let e = event(EventKind::SignIn, "SignInLogs", "{\"a\":\n\"x\ny\\\\\r\\\"z\"}", None);
        out.clear();
        let r = RawEncoder::new(&opts(None)).encode(&e, &mut out).unwrap();
        assert_eq!(r.altered, 1);
        assert_eq!(out.iter().filter(|&&c| c == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], "x\ny\\\r\"z");
        let e = event(EventKind::SignIn, "SignInLogs", "  ", None);
        assert_eq!(
            RawEncoder::new(&opts(None)).encode(&e, &mut out).unwrap_err().reason(),
            "invalid_raw"
        );
        let e = event(EventKind::SignIn, "SignInLogs", "{\"a\":\"0123456789\"}", None);
        let err = RawEncoder::new(&opts(Some(256)))
            .encode_reserving(&e, &mut out, 250)
            .unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { size: 18, max: 6 }));
    }
}
