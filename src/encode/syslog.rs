//! Syslog headers (RFC 5424, RFC 3164) and stream framing (RFC 6587 octet counting or a
//! trailer such as LF), plus [`SyslogEncoder`], which wraps any payload encoder.
//!
//! RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [BOM]MSG` with
//! TIMESTAMP `2026-11-27T09:14:05.123Z`, MSGID the event kind (`incident`, `signin`, ...)
//! and SD `[m365fwd@32473 tenant="..." source="..." category="..."]` (or `-`).
//! RFC 3164: `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PROCID]: MSG` in UTC.
//! PRI = facility × 8 + severity, severity from OCSF severity_id: 1 Informational → 6 info,
//! 2 Low → 5 notice, 3 Medium → 4 warning, 4 High → 3 err, 5 Critical → 2 crit,
//! 6 Fatal → 1 alert, unknown/other → 5 notice.
//!
//! Header fields are reduced to printable US-ASCII (others become `_`) and cut to their
//! RFC lengths; SD parameter values escape `"`, `\` and `]` with a backslash.
//!
//! `max_message_bytes` counts the whole syslog message (header, BOM and payload, without
//! the framing): the payload encoder gets the header size as reserve.

use std::cell::RefCell;

use serde::Deserialize;

use super::fields::{push_int, push_padded, Utc, View};
pub use super::framing::{frame_octet_counting, frame_trailer, octet_frames, OctetFrames};
use super::{EncodeError, EncodeReport, Encoder, EncoderOptions, Format};
use crate::event::Event;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogHeader {
    #[default]
    Rfc5424,
    Rfc3164,
    /// No header: the bare payload (e.g. CEF over TCP), still framed.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `LEN SP MSG` (RFC 6587 3.4.1, mandatory for TLS per RFC 5425). For UDP, frame with
    /// this and send each [`octet_frames`] item as one datagram.
    #[default]
    OctetCounting,
    /// MSG then LF (RFC 6587 3.4.2); LF inside MSG becomes a space (never produced by our
    /// payload encoders).
    Lf,
    /// MSG then CR LF; CR/LF inside MSG become spaces.
    Crlf,
    /// MSG then NUL; NUL inside MSG becomes a space.
    Nul,
}

/// Which time goes into the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSource {
    /// The event time (OCSF `time`).
    #[default]
    Event,
    /// When the forwarder received the event.
    Received,
}

/// Syslog options (`[sinks.X.encoder.syslog]`), used by [`SyslogEncoder`].
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogOptions {
    /// `rfc5424` (default), `rfc3164` or `none`.
    pub header: SyslogHeader,
    /// `octet_counting` (default), `lf`, `crlf` or `nul`.
    pub framing: Framing,
    /// Facility 0-23. Default 10 (authpriv).
    pub facility: u8,
    /// HOSTNAME. Default `-` (the sink should set the machine's name).
    pub hostname: Option<String>,
    /// APP-NAME / TAG. Default `m365-forwarder`.
    pub app_name: String,
    /// PROCID. Default: this process's id.
    pub procid: Option<String>,
    /// Write the `[sd_id tenant=.. source=.. category=..]` element (RFC 5424). Default true.
    pub structured_data: bool,
    /// SD-ID of that element. Default `m365fwd@32473` (32473 is the documentation
    /// enterprise number: set your own).
    pub sd_id: String,
    /// UTF-8 BOM before MSG (RFC 5424). Default: on for JSON payloads, off for CEF/LEEF.
    pub bom: Option<bool>,
    /// `event` (default) or `received`.
    pub timestamp: TimeSource,
}

impl Default for SyslogOptions {
    fn default() -> Self {
        SyslogOptions {
            header: SyslogHeader::Rfc5424,
            framing: Framing::OctetCounting,
            facility: 10,
            hostname: None,
            app_name: "m365-forwarder".into(),
            procid: None,
            structured_data: true,
            sd_id: "m365fwd@32473".into(),
            bom: None,
            timestamp: TimeSource::Event,
        }
    }
}

impl SyslogOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.facility > 23 {
            return Err(format!("syslog facility {} is not in 0..=23", self.facility));
        }
        let bad = |c: char| !c.is_ascii_graphic() || matches!(c, '=' | ']' | '"');
        if self.sd_id.is_empty() || self.sd_id.len() > 32 || self.sd_id.chars().any(bad) {
            return Err(format!("syslog sd_id {:?} is not a valid SD-ID", self.sd_id));
        }
        Ok(())
    }
}

/// Syslog severity (0-7) for an OCSF severity_id.
pub fn severity(ocsf_severity_id: u8) -> u8 {
    match ocsf_severity_id {
        1 => 6,
        2 => 5,
        3 => 4,
        4 => 3,
        5 => 2,
        6 => 1,
        _ => 5,
    }
}

/// PRIVAL = facility × 8 + severity (facility clamped to 23, severity to 7).
pub fn pri(facility: u8, severity: u8) -> u8 {
    facility.min(23) * 8 + severity.min(7)
}

fn push_pri(out: &mut Vec<u8>, pri: u8) {
    out.push(b'<');
    push_int(out, pri as i64);
    out.push(b'>');
}

/// RFC 5424 TIMESTAMP, `2026-11-27T09:14:05.123Z`.
pub fn write_timestamp_5424(out: &mut Vec<u8>, ms: i64) {
    let u = Utc::from_ms(ms);
    push_padded(out, u.year.clamp(0, 9999) as u32, 4);
    out.push(b'-');
    push_padded(out, u.month, 2);
    out.push(b'-');
    push_padded(out, u.day, 2);
    out.push(b'T');
    push_padded(out, u.hour, 2);
    out.push(b':');
    push_padded(out, u.minute, 2);
    out.push(b':');
    push_padded(out, u.second, 2);
    out.push(b'.');
    push_padded(out, u.milli, 3);
    out.push(b'Z');
}

/// RFC 3164 TIMESTAMP in UTC, `Nov  7 09:14:05` (day space-padded).
pub fn write_timestamp_3164(out: &mut Vec<u8>, ms: i64) {
    let u = Utc::from_ms(ms);
    out.extend_from_slice(u.month_abbr());
    out.push(b' ');
    if u.day < 10 {
        out.push(b' ');
        push_padded(out, u.day, 1);
    } else {
        push_padded(out, u.day, 2);
    }
    out.push(b' ');
    push_padded(out, u.hour, 2);
    out.push(b':');
    push_padded(out, u.minute, 2);
    out.push(b':');
    push_padded(out, u.second, 2);
}

/// A header field as printable US-ASCII (33-126, others → `_`), at most `max` bytes, `-`
/// when empty.
pub fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// An SD PARAM-VALUE (without quotes): `"`, `\` and `]` escaped with a backslash.
pub fn write_sd_value(out: &mut Vec<u8>, s: &str) {
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.extend_from_slice(&s.as_bytes()[start..i]);
            out.push(b'\\');
            start = i;
        }
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// The fields of an RFC 5424 header. `host`, `app`, `procid` and `msgid` must already be
/// valid header fields ([`header_field`]); `sd` is `-` or complete SD elements.
#[derive(Clone, Copy, Debug)]
pub struct Rfc5424Header<'a> {
    pub pri: u8,
    pub time_ms: i64,
    pub host: &'a str,
    pub app: &'a str,
    pub procid: &'a str,
    pub msgid: &'a str,
    pub sd: &'a [u8],
}

impl Rfc5424Header<'_> {
    /// Appends `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD ` (with the space before MSG).
    pub fn write(&self, out: &mut Vec<u8>) {
        push_pri(out, self.pri);
        out.extend_from_slice(b"1 ");
        write_timestamp_5424(out, self.time_ms);
        for f in [self.host, self.app, self.procid, self.msgid] {
            out.push(b' ');
            out.extend_from_slice(f.as_bytes());
        }
        out.push(b' ');
        out.extend_from_slice(self.sd);
        out.push(b' ');
    }
}

/// `<PRI>Mmm dd hh:mm:ss HOST TAG: ` (with the trailing space before MSG); `tag` is the
/// complete tag such as `m365-forwarder[4711]`.
pub fn write_rfc3164_header(out: &mut Vec<u8>, pri: u8, time_ms: i64, host: &str, tag: &str) {
    push_pri(out, pri);
    write_timestamp_3164(out, time_ms);
    out.push(b' ');
    out.extend_from_slice(host.as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b": ");
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Header builder and framer for one sink, with sanitized, preformatted fields.
pub struct SyslogWriter {
    header: SyslogHeader,
    framing: Framing,
    facility: u8,
    host: String,
    app: String,
    procid: String,
    tag: String,
    sd_id: Option<String>,
    bom: bool,
    time: TimeSource,
}

impl SyslogWriter {
    /// `payload` decides the default of the BOM.
    pub fn new(opts: &SyslogOptions, payload: Format) -> SyslogWriter {
        let procid = opts.procid.clone().unwrap_or_else(|| std::process::id().to_string());
        let host = header_field(opts.hostname.as_deref().unwrap_or("-"), 255);
        let app = header_field(&opts.app_name, 48);
        let tag_app: String = opts
            .app_name
            .chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '[' | ']' | ':'))
            .take(32)
            .collect();
        let procid = header_field(&procid, 128);
        let tag = if procid == "-" {
            tag_app
        } else {
            format!("{tag_app}[{procid}]")
        };
        let sd_id = opts
            .structured_data
            .then(|| header_field(&opts.sd_id, 32).replace(['=', ']', '"'], "_"));
        SyslogWriter {
            header: opts.header,
            framing: opts.framing,
            facility: opts.facility.min(23),
            host,
            app,
            procid,
            tag,
            sd_id,
            bom: opts.header == SyslogHeader::Rfc5424 && opts.bom.unwrap_or(payload.is_json()),
            time: opts.timestamp,
        }
    }

    /// Appends the header of `event`'s messages (including the trailing space and BOM).
    pub fn header(&self, event: &Event, out: &mut Vec<u8>) {
        let meta = &event.meta;
        let (time, sev) = match event.normalized.as_deref() {
            Some(n) => match n.flat() {
                Some(f) => (f.time_ms, f.severity_id),
                None => {
                    let v = View::new(n.root(), meta);
                    (v.time_ms(), v.severity_id())
                }
            },
            None => (meta.event_ms.unwrap_or(meta.received_ms), meta.severity_id),
        };
        let time = match self.time {
            TimeSource::Event => time,
            TimeSource::Received => meta.received_ms,
        };
        let p = pri(self.facility, severity(sev));
        match self.header {
            SyslogHeader::Rfc5424 => {
                let mut sd = Vec::with_capacity(128);
                match &self.sd_id {
                    Some(id) => {
                        sd.push(b'[');
                        sd.extend_from_slice(id.as_bytes());
                        let tenant = meta.tenant.as_deref();
                        let params = [
                            ("tenant", tenant),
                            ("source", Some(&*meta.source)),
                            ("category", Some(&*meta.category)),
                        ];
                        for (k, v) in params {
                            if let Some(v) = v.filter(|v| !v.is_empty()) {
                                sd.push(b' ');
                                sd.extend_from_slice(k.as_bytes());
                                sd.extend_from_slice(b"=\"");
                                write_sd_value(&mut sd, v);
                                sd.push(b'"');
                            }
                        }
                        sd.push(b']');
                    }
                    None => sd.push(b'-'),
                }
                Rfc5424Header {
                    pri: p,
                    time_ms: time,
                    host: &self.host,
                    app: &self.app,
                    procid: &self.procid,
                    msgid: meta.kind.as_str(),
                    sd: &sd,
                }
                .write(out);
                if self.bom {
                    out.extend_from_slice(BOM);
                }
            }
            SyslogHeader::Rfc3164 => write_rfc3164_header(out, p, time, &self.host, &self.tag),
            SyslogHeader::None => {}
        }
    }

    /// Appends one framed message: `header` + `msg`.
    pub fn frame(&self, out: &mut Vec<u8>, header: &[u8], msg: &[u8]) {
        match self.framing {
            Framing::OctetCounting => frame_octet_counting(out, &[header, msg]),
            Framing::Lf => {
                frame_trailer(out, &[header, msg], b"\n");
            }
            Framing::Crlf => {
                frame_trailer(out, &[header, msg], b"\r\n");
            }
            Framing::Nul => {
                frame_trailer(out, &[header, msg], b"\0");
            }
        }
    }
}

/// Wraps a payload encoder: every message it produces becomes one framed syslog message.
pub struct SyslogEncoder {
    inner: Box<dyn Encoder>,
    writer: SyslogWriter,
}

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl SyslogEncoder {
    pub fn new(inner: Box<dyn Encoder>, opts: &EncoderOptions) -> SyslogEncoder {
        let writer = SyslogWriter::new(&opts.syslog, inner.format());
        SyslogEncoder { inner, writer }
    }

    pub fn writer(&self) -> &SyslogWriter {
        &self.writer
    }

    fn run(
        &self,
        event: &Event,
        out: &mut Vec<u8>,
        reserve: usize,
        header: &mut Vec<u8>,
        payload: &mut Vec<u8>,
    ) -> Result<EncodeReport, EncodeError> {
        header.clear();
        payload.clear();
        self.writer.header(event, header);
        let report = self.inner.encode_reserving(event, payload, reserve + header.len())?;
        // One message per line of the payload (several only when an event is split); the
        // line ends found with memchr, not byte by byte (a CEF line is ~600 bytes).
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', payload).chain(std::iter::once(payload.len())) {
            if end > start {
                self.writer.frame(out, header, &payload[start..end]);
            }
            start = end + 1;
        }
        Ok(report)
    }
}

impl Encoder for SyslogEncoder {
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, reserve: usize) -> Result<EncodeReport, EncodeError> {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut g) => {
                let (h, p) = &mut *g;
                let r = self.run(event, out, reserve, h, p);
                if p.capacity() > 1 << 20 {
                    *p = Vec::new();
                }
                r
            }
            Err(_) => self.run(event, out, reserve, &mut Vec::new(), &mut Vec::new()),
        })
    }

    fn format(&self) -> Format {
        self.inner.format()
    }

    /// The header reads the event's time and severity, which every normalization builds.
    fn reads_lean(&self) -> bool {
        self.inner.reads_lean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::testutil::{alert_ocsf, event, incident_ocsf};
    use crate::encode::{encoder, syslog_encoder, SplitMode};
    use crate::event::EventKind;

    fn opts(f: impl FnOnce(&mut EncoderOptions)) -> EncoderOptions {
        let mut o = EncoderOptions::default();
        o.syslog.hostname = Some("fwd01".into());
        o.syslog.procid = Some("4711".into());
        f(&mut o);
        o
    }

    fn alert_event() -> Event {
        event(EventKind::Alert, "GraphAlert", "{\"id\":\"da637\"}", Some(alert_ocsf()))
    }

    #[test]
    fn pri_and_severity() {
        assert_eq!(pri(10, 4), 84);
        assert_eq!(pri(23, 7), 191);
        assert_eq!(pri(99, 9), 191);
        assert_eq!([0, 1, 2, 3, 4, 5, 6, 99].map(severity), [5, 6, 5, 4, 3, 2, 1, 5]);
    }

    #[test]
    fn timestamps() {
        let mut v = Vec::new();
        write_timestamp_5424(&mut v, 1_732_698_845_123);
        assert_eq!(v, b"2024-11-27T09:14:05.123Z");
        v.clear();
        write_timestamp_5424(&mut v, 5);
        assert_eq!(v, b"1970-01-01T00:00:00.005Z");
        v.clear();
        write_timestamp_3164(&mut v, 1_732_698_845_123);
        assert_eq!(v, b"Nov 27 09:14:05");
        v.clear();
        let nov7 = chrono::DateTime::parse_from_rfc3339("2024-11-07T09:04:05Z").unwrap();
        write_timestamp_3164(&mut v, nov7.timestamp_millis());
        assert_eq!(v, b"Nov  7 09:04:05");
    }

    #[test]
    fn rfc5424_cef_octet_counted() {
        let enc = syslog_encoder(Format::Cef, &opts(|_| {}));
        let mut out = Vec::new();
        let r = enc.encode(&alert_event(), &mut out).unwrap();
        assert_eq!(r.messages, 1);
        let s = String::from_utf8(out.clone()).unwrap();
        let (len, msg) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        let header = "<83>1 2024-11-27T09:14:05.123Z fwd01 m365-forwarder 4711 alert \
            [m365fwd@32473 tenant=\"t1\" source=\"graph\" category=\"GraphAlert\"] CEF:0|Microsoft|";
        let header = header.replace("tenant=\"t1\"", "tenant=\"0f0e0d0c-0000-4000-8000-000000000001\"");
        assert!(msg.starts_with(&header), "{msg}");
        assert!(!msg.contains('\n') && msg.ends_with("cn2=200401"));
        assert_eq!(octet_frames(&out).collect::<Vec<_>>(), vec![msg.as_bytes()]);
    }

    #[test]
    fn json_payload_gets_bom_by_default() {
        let enc = syslog_encoder(Format::Ocsf, &opts(|_| {}));
        let mut out = Vec::new();
        enc.encode(&alert_event(), &mut out).unwrap();
        let frame = octet_frames(&out).next().unwrap();
        let at = frame.windows(3).position(|w| w == BOM).unwrap();
        assert!(frame[..at].ends_with(b"\"] "));
        let v: serde_json::Value = serde_json::from_slice(&frame[at + 3..]).unwrap();
        assert_eq!(v["class_uid"], 2004);
        let enc = syslog_encoder(Format::Ocsf, &opts(|o| o.syslog.bom = Some(false)));
        out.clear();
        enc.encode(&alert_event(), &mut out).unwrap();
        assert!(!out.windows(3).any(|w| w == BOM));
        let enc = syslog_encoder(Format::Leef, &opts(|_| {}));
        out.clear();
        enc.encode(&alert_event(), &mut out).unwrap();
        assert!(!out.windows(3).any(|w| w == BOM));
    }

    #[test]
    fn rfc3164_lf_framed() {
        let o = opts(|o| {
            o.syslog.header = SyslogHeader::Rfc3164;
            o.syslog.framing = Framing::Lf;
            o.syslog.facility = 4;
        });
        let enc = syslog_encoder(Format::Leef, &o);
        let mut out = Vec::new();
        enc.encode(&alert_event(), &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("<35>Nov 27 09:14:05 fwd01 m365-forwarder[4711]: LEEF:2.0|Microsoft|"),
            "{s}"
        );
        assert_eq!(s.matches('\n').count(), 1);
        assert!(s.ends_with("ocsfType=200401\n"));
    }

    #[test]
    fn structured_data_escaping_and_header_sanitizing() {
        let o = opts(|o| {
            o.syslog.hostname = Some("my host\u{e9}".into());
            o.syslog.structured_data = true;
        });
        let w = SyslogWriter::new(&o.syslog, Format::Cef);
        let mut e = alert_event();
        e.meta.tenant = Some("a\"b\\c]d".into());
        let mut h = Vec::new();
        w.header(&e, &mut h);
        let h = String::from_utf8(h).unwrap();
        assert!(
            h.contains(" my_host_ m365-forwarder 4711 alert [m365fwd@32473 tenant=\"a\\\"b\\\\c\\]d\" "),
            "{h}"
        );
        assert_eq!(header_field("", 10), "-");
        assert_eq!(header_field("abcdef", 3), "abc");
        let o = opts(|o| o.syslog.structured_data = false);
        let w = SyslogWriter::new(&o.syslog, Format::Cef);
        let mut h = Vec::new();
        w.header(&e, &mut h);
        assert!(h.ends_with(b" alert - "));
        assert!(opts(|o| o.syslog.sd_id = "bad id".into()).validate().is_err());
        assert!(opts(|o| o.syslog.facility = 24).validate().is_err());
    }

    #[test]
    fn budget_includes_header_and_split_parts_share_it() {
        let mut ocsf = incident_ocsf();
        ocsf["message"] = "d".repeat(900).into();
        let e = event(EventKind::Incident, "GraphIncident", "{}", Some(ocsf));
        let o = opts(|o| {
            o.max_message_bytes = Some(700);
            o.split_incidents = SplitMode::Auto;
        });
        let enc = syslog_encoder(Format::Cef, &o);
        let mut out = Vec::new();
        let r = enc.encode(&e, &mut out).unwrap();
        let frames: Vec<_> = octet_frames(&out).collect();
        assert_eq!(frames.len(), 4);
        assert!(r.split && r.messages == 4 && r.truncated == 1);
        for f in &frames {
            assert!(f.len() <= 700, "{}", f.len());
            assert!(f.starts_with(b"<83>1 2024-11-27T09:14:05.123Z fwd01 m365-forwarder 4711 incident ["));
        }
        // Without the reserve the CEF alone would have been allowed 700 bytes.
        let mut bare = Vec::new();
        encoder(Format::Cef, &o).encode(&e, &mut bare).unwrap();
        assert_eq!(bare.split(|&b| b == b'\n').next().unwrap().len(), 700);
    }
}
