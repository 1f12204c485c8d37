//! Output encoders: turn an [`Event`] into bytes for a SIEM (OCSF JSON, raw JSON, CEF, LEEF,
//! Splunk HEC envelopes) and wrap them in syslog headers and framing.
//!
//! Every encoder is pure and synchronous and appends to a caller-owned buffer. Line formats
//! (`ocsf`, `raw`, `cef`, `leef`) end every message with `\n` and guarantee that no message
//! contains a raw `\n` itself, so a caller may split the buffer on `\n`. HEC envelopes are
//! concatenated without separator. [`syslog::SyslogEncoder`] wraps any of them and produces
//! complete, framed syslog messages.
//!
//! On error an encoder leaves `out` exactly as it found it.

pub mod cef;
pub(crate) mod fields;
mod flat_of;
#[cfg(test)]
mod flat_tests;
mod framing;
pub mod hec;
mod json;
#[cfg(test)]
mod lean_tests;
pub mod leef;
pub(crate) mod numfmt;
pub mod parse;
mod record;
pub mod syslog;
#[cfg(test)]
pub(crate) mod testutil;

use bytes::Bytes;
use serde::Deserialize;

use crate::event::Event;

pub use cef::{CefEncoder, CefOptions};
pub use hec::{HecEncoder, HecOptions, HecPayload};
pub use json::{OcsfEncoder, RawEncoder};
pub use leef::{DevTime, LeefDelimiter, LeefEncoder, LeefOptions, LeefVersion};
pub use syslog::{Framing, SyslogEncoder, SyslogHeader, SyslogOptions};

/// Payload format of a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The normalized OCSF object, one JSON line.
    Ocsf,
    /// The raw source record, one JSON line.
    Raw,
    /// ArcSight CEF:0, one line per message.
    Cef,
    /// QRadar LEEF 1.0 / 2.0, one line per message.
    Leef,
    /// Splunk HEC `/services/collector/event` envelopes, concatenated.
    Hec,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ocsf => "ocsf",
            Format::Raw => "raw",
            Format::Cef => "cef",
            Format::Leef => "leef",
            Format::Hec => "hec",
        }
    }

    /// The payload is JSON (decides the default of the syslog UTF-8 BOM).
    pub fn is_json(self) -> bool {
        matches!(self, Format::Ocsf | Format::Raw | Format::Hec)
    }
}

/// When an incident (OCSF class 2005) is split into one message per alert and per evidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// Split only when the single message would exceed `max_message_bytes`.
    #[default]
    Auto,
    /// Always split incidents that have alerts or evidences.
    Always,
    /// Never split: an oversized incident is truncated.
    Never,
}

/// Options of all encoders; one instance per sink (destination).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderOptions {
    /// Maximum bytes of one message, without the line terminator and the syslog framing but
    /// including the syslog header when wrapped by [`SyslogEncoder`]. `None` (default):
    /// unlimited, only the per-field maximums of CEF apply. Suggested: 1472 for UDP,
    /// 2048 for RFC 3164/Fluent Bit receivers, 4096 for QRadar TCP, 8192 for TLS.
    /// CEF/LEEF messages over it are split (incidents) or truncated with a marker; JSON
    /// payloads drop `raw_data`, then `unmapped`, then fail with [`EncodeError::TooLarge`].
    /// Ignored by the HEC encoder.
    pub max_message_bytes: Option<usize>,
    /// Incident splitting for CEF and LEEF (default `auto`).
    pub split_incidents: SplitMode,
    pub cef: CefOptions,
    pub leef: LeefOptions,
    pub hec: HecOptions,
    pub syslog: SyslogOptions,
}

impl EncoderOptions {
    /// Checks values serde cannot check. Encoders built from invalid options clamp them.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.max_message_bytes {
            if m < 256 {
                return Err(format!("max_message_bytes = {m} is below the minimum of 256"));
            }
        }
        self.syslog.validate()
    }
}

/// What one `encode` call produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeReport {
    /// Complete messages appended.
    pub messages: u32,
    /// Messages that were cut (a value shortened or dropped to fit a size limit, or a value
    /// longer than the format allows); each carries an in-band marker.
    pub truncated: u32,
    /// Messages in which characters were replaced because the format cannot carry them
    /// (LEEF delimiters, pipes and line breaks; control characters; raw newlines in JSON).
    pub altered: u32,
    /// The event was split into several messages (incident parts).
    pub split: bool,
}

impl EncodeReport {
    pub(crate) fn one(truncated: bool, altered: bool) -> EncodeReport {
        EncodeReport {
            messages: 1,
            truncated: truncated as u32,
            altered: altered as u32,
            split: false,
        }
    }

    pub(crate) fn add(&mut self, other: EncodeReport) {
        self.messages += other.messages;
        self.truncated += other.truncated;
        self.altered += other.altered;
        self.split |= other.split;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The event has no normalized form but the format needs it.
    #[error("event has no normalized (OCSF) form")]
    NotNormalized,
    /// The normalized form is not a JSON object.
    #[error("normalized event is not a JSON object")]
    InvalidOcsf,
    /// The raw record cannot be written in this format.
    #[error("raw record unusable: {0}")]
    InvalidRaw(&'static str),
    /// A message cannot be made to fit the size limit.
    #[error("message of {size} bytes cannot fit max_message_bytes = {max}")]
    TooLarge { size: usize, max: usize },
    #[error("JSON serialization failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl EncodeError {
    /// Short snake_case label for metrics and quarantine reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            EncodeError::NotNormalized => "not_normalized",
            EncodeError::InvalidOcsf => "invalid_ocsf",
            EncodeError::InvalidRaw(_) => "invalid_raw",
            EncodeError::TooLarge { .. } => "too_large",
            EncodeError::Json(_) => "json_error",
        }
    }
}

/// Turns events into bytes.
pub trait Encoder: Send + Sync {
    /// Appends one or more complete messages for `event` to `out` (each followed by `\n` for
    /// line formats). On error `out` is unchanged.
    fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<EncodeReport, EncodeError> {
        self.encode_reserving(event, out, 0)
    }

    /// Like [`Encoder::encode`], but `reserve` bytes of the `max_message_bytes` budget of
    /// every message are taken by a prefix the caller adds (a syslog header).
    fn encode_reserving(&self, event: &Event, out: &mut Vec<u8>, reserve: usize) -> Result<EncodeReport, EncodeError>;

    /// The payload format.
    fn format(&self) -> Format;

    /// Whether this encoder reads nothing a lean normalization leaves out (observables, the
    /// record's JSON passed through into `unmapped`; see
    /// [`crate::normalize::NormalizeOptions::lean`]). CEF and LEEF read a fixed set of
    /// attributes and say so; formats that write the whole OCSF event do not.
    fn reads_lean(&self) -> bool {
        false
    }
}

/// An event's message(s) for one sink, encoded ahead of the sink (the pipeline does it right
/// after routing, so only these bytes wait in the sink's buffer): exactly what
/// [`Encoder::encode`] appended, with its report.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub data: Bytes,
    pub report: EncodeReport,
}

/// Appends `event`'s message(s) to `out`: the bytes encoded ahead when there are some
/// ([`Event::encoded`]), else `encoder`'s output. Sinks call this instead of `encode`.
pub fn append(encoder: &dyn Encoder, event: &Event, out: &mut Vec<u8>) -> Result<EncodeReport, EncodeError> {
    match &event.encoded {
        Some(enc) => {
            out.extend_from_slice(&enc.data);
            Ok(enc.report)
        }
        None => encoder.encode(event, out),
    }
}

/// The encoder of a payload format (no syslog header or framing).
pub fn encoder(format: Format, opts: &EncoderOptions) -> Box<dyn Encoder> {
    match format {
        Format::Ocsf => Box::new(OcsfEncoder::new(opts)),
        Format::Raw => Box::new(RawEncoder::new(opts)),
        Format::Cef => Box::new(CefEncoder::new(opts)),
        Format::Leef => Box::new(LeefEncoder::new(opts)),
        Format::Hec => Box::new(HecEncoder::new(opts)),
    }
}

/// A payload encoder wrapped in syslog header and framing per `opts.syslog`; for example
/// "RFC 5424 with JSON payload" is `syslog_encoder(Format::Ocsf, opts)` with the default
/// `syslog.header = "rfc5424"`.
pub fn syslog_encoder(format: Format, opts: &EncoderOptions) -> Box<dyn Encoder> {
    Box::new(SyslogEncoder::new(encoder(format, opts), opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_deserialize_with_defaults_and_reject_unknown() {
        let o: EncoderOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(o.max_message_bytes, None);
        assert_eq!(o.split_incidents, SplitMode::Auto);
        let o: EncoderOptions = serde_json::from_str(
            r#"{"max_message_bytes": 1472, "split_incidents": "always",
                "cef": {"vendor": "Contoso"}, "leef": {"version": "1.0"},
                "syslog": {"header": "rfc3164", "framing": "lf"}}"#,
        )
        .unwrap();
        assert_eq!(o.max_message_bytes, Some(1472));
        assert_eq!(o.split_incidents, SplitMode::Always);
        assert_eq!(o.cef.vendor, "Contoso");
        assert!(o.validate().is_ok());
        assert!(serde_json::from_str::<EncoderOptions>(r#"{"bogus": 1}"#).is_err());
        assert!(serde_json::from_str::<EncoderOptions>(r#"{"cef": {"bogus": 1}}"#).is_err());
        let f: Format = serde_json::from_str(r#""leef""#).unwrap();
        assert_eq!(f, Format::Leef);
        let small = EncoderOptions {
            max_message_bytes: Some(100),
            ..Default::default()
        };
        assert!(small.validate().is_err());
    }

    #[test]
    fn error_reasons_are_snake_case() {
        assert_eq!(EncodeError::NotNormalized.reason(), "not_normalized");
        assert_eq!(EncodeError::TooLarge { size: 2, max: 1 }.reason(), "too_large");
    }
}
