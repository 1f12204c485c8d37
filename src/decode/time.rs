//! Lenient time parsing into UTC epoch milliseconds for every time format Microsoft emits.
//!
//! Accepted forms (surrounding whitespace ignored):
//!
//! | Form | Example | `assumed_utc` |
//! |---|---|---|
//! | ISO 8601 / RFC 3339 with `Z` or an offset, 0-9+ fraction digits | `2026-11-27T09:14:05.1234567Z`, `...+00:00`, `...-05:00`, `...+0100` | false |
//! | the same with a one-digit hour | `2026-11-28T9:05:10.900Z` | false |
//! | ISO without a zone (date and time, or date only), `T` or space | `2026-11-27 09:14:05`, `2026-11-27` | **true** |
//! | US style, 12 h with `AM`/`PM` or 24 h, optional fraction | `3/9/2026 7:43:05 AM`, `11/27/2026 19:02:44` | **true** |
//! | epoch digits, unit by magnitude | `1732780800` (s), `1732780800123` (ms) | false |
//! | epoch seconds with a fraction | `1732780800.5` | false |
//! | .NET JSON date | `/Date(1732780800123)/`, `/Date(1732780800123+0000)/` | false |
//!
//! Epoch magnitude rule: below 10^11 seconds, below 10^14 milliseconds, below 10^17
//! microseconds, else nanoseconds. Fractions beyond milliseconds are truncated (not rounded).
//! `assumed_utc` is true when the text carried no zone: Microsoft writes UTC there, but the
//! caller must count such events instead of trusting it silently.

use crate::json_text::trim;

/// A parsed instant: epoch milliseconds (UTC) and whether the zone was assumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedTime {
    pub ms: i64,
    /// The text had no zone or offset; UTC was assumed.
    pub assumed_utc: bool,
}

/// Why a time string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("empty time string")]
    Empty,
    #[error("unrecognized time format: {0:?}")]
    Format(String),
    #[error("time value out of range: {0:?}")]
    Range(String),
}

impl TimeError {
    /// Short snake_case label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TimeError::Empty => "empty",
            TimeError::Format(_) => "format",
            TimeError::Range(_) => "range",
        }
    }
}

/// Parse a time string in any accepted form (see the module docs).
pub fn parse_time(s: &str) -> Result<ParsedTime, TimeError> {
    let t = trim(s);
    if t.is_empty() {
        return Err(TimeError::Empty);
    }
    let b = t.as_bytes();
    let res = if b.len() >= 5 && b[4] == b'-' && b[..4].iter().all(u8::is_ascii_digit) {
        parse_iso(b)
    } else if b.iter().all(u8::is_ascii_digit) {
        parse_epoch_digits(b)
    } else if b.contains(&b'/') && b[0].is_ascii_digit() {
        parse_us(b)
    } else if let Some(inner) = t.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        parse_dotnet(inner.as_bytes())
    } else if let Some((secs, frac)) = t.split_once('.') {
        parse_epoch_fraction(secs.as_bytes(), frac.as_bytes())
    } else {
        Err(Fail::Format)
    };
    // Every form is held to the years 0001-9999 once parsed: a zone offset or a leap second
    // can carry a time at their edge out of them (found by the fuzzer:
    // `0001-01-01T00:09:33+02` is in year 0 in UTC, `9999-12-31T23:59:60Z` in year 10000).
    let res = res.and_then(|p| {
        if (FIRST_MS..=LAST_MS).contains(&p.ms) {
            Ok(p)
        } else {
            Err(Fail::Range)
        }
    });
    res.map_err(|f| match f {
        Fail::Format => TimeError::Format(clip(t)),
        Fail::Range => TimeError::Range(clip(t)),
    })
}

/// Parse a JSON time value: a string in any accepted form, or a number of epoch
/// seconds / milliseconds (unit by magnitude; fractional seconds allowed).
pub fn parse_time_json(v: &serde_json::Value) -> Option<ParsedTime> {
    match v {
        serde_json::Value::String(s) => parse_time(s).ok(),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                epoch_by_magnitude(i).ok()
            } else if let Some(u) = n.as_u64() {
                i64::try_from(u).ok().and_then(|i| epoch_by_magnitude(i).ok())
            } else {
                let f = n.as_f64()?;
                if !f.is_finite() || !(0.0..1e11).contains(&f) {
                    return None;
                }
                Some(ParsedTime {
                    ms: (f * 1000.0) as i64,
                    assumed_utc: false,
                })
            }
        }
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`] (defined with the encoders, which format dates).
pub use crate::encode::numfmt::civil_from_days;

enum Fail {
    Format,
    Range,
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Small cursor over ASCII bytes.
struct Cur<'b> {
    b: &'b [u8],
    i: usize,
}

impl<'b> Cur<'b> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
    /// Between `min` and `max` digits as a number.
    fn digits(&mut self, min: usize, max: usize) -> Result<u32, Fail> {
        let start = self.i;
        let mut v: u32 = 0;
        while self.i - start < max {
            match self.peek() {
                Some(c) if c.is_ascii_digit() => {
                    v = v * 10 + u32::from(c - b'0');
                    self.i += 1;
                }
                _ => break,
            }
        }
        if self.i - start < min {
            Err(Fail::Format)
        } else {
            Ok(v)
        }
    }
    /// A fraction after the separator: milliseconds (truncated), any number of digits >= 1.
    fn fraction_ms(&mut self) -> Result<u32, Fail> {
        let start = self.i;
        let mut ms = 0u32;
        while let Some(c) = self.peek() {
            if !c.is_ascii_digit() {
                break;
            }
            let n = self.i - start;
            if n < 3 {
                ms = ms * 10 + u32::from(c - b'0');
            }
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 {
            return Err(Fail::Format);
        }
        for _ in n..3 {
            ms *= 10;
        }
        Ok(ms)
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn to_ms(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Result<i64, Fail> {
    let y = i64::from(y);
    if !(1..=9999).contains(&y) || !(1..=12).contains(&mo) {
        return Err(Fail::Range);
    }
    if d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return Err(Fail::Range);
    }
    let days = days_from_civil(y, mo, d);
    Ok(((days * 24 + i64::from(h)) * 60 + i64::from(mi)) * 60_000 + i64::from(s) * 1000 + i64::from(ms))
}

/// `YYYY-MM-DD[(T| )H[H]:MM[:SS[.frac]]][Z|±HH[:MM]|±HHMM]`
fn parse_iso(b: &[u8]) -> Result<ParsedTime, Fail> {
    let mut c = Cur { b, i: 0 };
    let y = c.digits(4, 4)?;
    if !c.eat(b'-') {
        return Err(Fail::Format);
    }
    let mo = c.digits(1, 2)?;
    if !c.eat(b'-') {
        return Err(Fail::Format);
    }
    let d = c.digits(1, 2)?;
    if c.done() {
        return Ok(ParsedTime {
            ms: to_ms(y, mo, d, 0, 0, 0, 0)?,
            assumed_utc: true,
        });
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(Fail::Format);
    }
    let h = c.digits(1, 2)?;
    if !c.eat(b':') {
        return Err(Fail::Format);
    }
    let mi = c.digits(2, 2)?;
    let (mut s, mut ms) = (0, 0);
    if c.eat(b':') {
        s = c.digits(2, 2)?;
        if c.eat(b'.') || c.eat(b',') {
            ms = c.fraction_ms()?;
        }
    }
    let base = to_ms(y, mo, d, h, mi, s, ms)?;
    c.skip_spaces();
    if c.done() {
        return Ok(ParsedTime {
            ms: base,
            assumed_utc: true,
        });
    }
    if c.eat(b'Z') || c.eat(b'z') {
        return if c.done() {
            Ok(ParsedTime {
                ms: base,
                assumed_utc: false,
            })
        } else {
            Err(Fail::Format)
        };
    }
    let sign: i64 = if c.eat(b'+') {
        1
    } else if c.eat(b'-') {
        -1
    } else {
        return Err(Fail::Format);
    };
    let oh = c.digits(2, 2)?;
    let om = if c.eat(b':') {
        c.digits(2, 2)?
    } else if c.done() {
        0
    } else {
        c.digits(2, 2)?
    };
    if !c.done() {
        return Err(Fail::Format);
    }
    if oh > 23 || om > 59 {
        return Err(Fail::Range);
    }
    let off_ms = sign * (i64::from(oh) * 60 + i64::from(om)) * 60_000;
    Ok(ParsedTime {
        ms: base - off_ms,
        assumed_utc: false,
    })
}

/// 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, the instants a time may name.
const FIRST_MS: i64 = -62_135_596_800_000;
const LAST_MS: i64 = 253_402_300_799_999;

/// `M/D/YYYY[ h:mm[:ss[.frac]][ AM|PM]]`
fn parse_us(b: &[u8]) -> Result<ParsedTime, Fail> {
    let mut c = Cur { b, i: 0 };
    let mo = c.digits(1, 2)?;
    if !c.eat(b'/') {
        return Err(Fail::Format);
    }
    let d = c.digits(1, 2)?;
    if !c.eat(b'/') {
        return Err(Fail::Format);
    }
    let y = c.digits(4, 4)?;
    let (mut h, mut mi, mut s, mut ms) = (0, 0, 0, 0);
    if !c.done() {
        if !(c.eat(b' ') || c.eat(b'T')) {
            return Err(Fail::Format);
        }
        c.skip_spaces();
        h = c.digits(1, 2)?;
        if !c.eat(b':') {
            return Err(Fail::Format);
        }
        mi = c.digits(2, 2)?;
        if c.eat(b':') {
            s = c.digits(2, 2)?;
            if c.eat(b'.') {
                ms = c.fraction_ms()?;
            }
        }
        c.skip_spaces();
        if !c.done() {
            let rest = &b[c.i..];
            let pm = if rest.eq_ignore_ascii_case(b"PM") {
                true
            } else if rest.eq_ignore_ascii_case(b"AM") {
                false
            } else {
                return Err(Fail::Format);
            };
            if !(1..=12).contains(&h) {
                return Err(Fail::Range);
            }
            h = match (h, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, true) => h + 12,
                (h, false) => h,
            };
        }
    }
    Ok(ParsedTime {
        ms: to_ms(y, mo, d, h, mi, s, ms)?,
        assumed_utc: true,
    })
}

fn parse_u64(b: &[u8]) -> Result<u64, Fail> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return Err(Fail::Format);
    }
    let mut v: u64 = 0;
    for &c in b {
        v = v.checked_mul(10).ok_or(Fail::Range)? + u64::from(c - b'0');
    }
    Ok(v)
}

fn epoch_by_magnitude(v: i64) -> Result<ParsedTime, Fail> {
    if v < 0 {
        return Err(Fail::Range);
    }
    let ms = if v < 100_000_000_000 {
        v * 1000
    } else if v < 100_000_000_000_000 {
        v
    } else if v < 100_000_000_000_000_000 {
        v / 1000
    } else {
        v / 1_000_000
    };
    Ok(ParsedTime { ms, assumed_utc: false })
}

fn parse_epoch_digits(b: &[u8]) -> Result<ParsedTime, Fail> {
    let v = parse_u64(b)?;
    epoch_by_magnitude(i64::try_from(v).map_err(|_| Fail::Range)?)
}

/// `SECONDS.FRACTION` (epoch seconds with a fraction).
fn parse_epoch_fraction(secs: &[u8], frac: &[u8]) -> Result<ParsedTime, Fail> {
    let s = parse_u64(secs)?;
    if s >= 100_000_000_000 {
        return Err(Fail::Range);
    }
    let mut c = Cur { b: frac, i: 0 };
    let ms = c.fraction_ms()?;
    if !c.done() {
        return Err(Fail::Format);
    }
    Ok(ParsedTime {
        ms: s as i64 * 1000 + i64::from(ms),
        assumed_utc: false,
    })
}

/// Inside `/Date(...)/`: epoch ms, optionally followed by `±HHMM` (informational only).
fn parse_dotnet(b: &[u8]) -> Result<ParsedTime, Fail> {
    let end = b.iter().position(|&c| c == b'+' || c == b'-').unwrap_or(b.len());
    let (num, off) = b.split_at(end);
    if !off.is_empty() && (off.len() != 5 || !off[1..].iter().all(u8::is_ascii_digit)) {
        return Err(Fail::Format);
    }
    let v = parse_u64(num)?;
    Ok(ParsedTime {
        ms: i64::try_from(v).map_err(|_| Fail::Range)?,
        assumed_utc: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference value computed with chrono.
    fn chrono_ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn ok(s: &str) -> ParsedTime {
        parse_time(s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}"))
    }

    #[test]
    fn iso_with_seven_fraction_digits_and_z() {
        let p = ok("2026-11-27T09:14:05.1234567Z");
        assert_eq!(p.ms, chrono_ms("2026-11-27T09:14:05.123Z"));
        assert!(!p.assumed_utc);
    }

    #[test]
    fn iso_fraction_lengths_zero_to_nine() {
        let base = chrono_ms("2026-11-27T09:14:05Z");
        assert_eq!(ok("2026-11-27T09:14:05Z").ms, base);
        assert_eq!(ok("2026-11-27T09:14:05.1Z").ms, base + 100);
        assert_eq!(ok("2026-11-27T09:14:05.12Z").ms, base + 120);
        assert_eq!(ok("2026-11-27T09:14:05.123Z").ms, base + 123);
        assert_eq!(ok("2026-11-27T09:14:05.126442Z").ms, base + 126);
        assert_eq!(ok("2026-11-27T09:14:05.999999999Z").ms, base + 999);
    }

    #[test]
    fn iso_offsets() {
        let z = ok("2026-11-27T06:11:58.126442+00:00");
        assert_eq!(z.ms, chrono_ms("2026-11-27T06:11:58.126Z"));
        assert!(!z.assumed_utc);
        let west = ok("2026-11-27T01:11:58-05:00");
        assert_eq!(west.ms, chrono_ms("2026-11-27T06:11:58Z"));
        let compact = ok("2026-11-27T07:41:58+0130");
        assert_eq!(compact.ms, chrono_ms("2026-11-27T06:11:58Z"));
        let hours_only = ok("2026-11-27T08:11:58+02");
        assert_eq!(hours_only.ms, chrono_ms("2026-11-27T06:11:58Z"));
    }

    #[test]
    fn iso_one_digit_hour() {
        let p = ok("2026-11-28T9:05:10.900Z");
        assert_eq!(p.ms, chrono_ms("2026-11-28T09:05:10.900Z"));
        assert!(!p.assumed_utc);
    }

    #[test]
    fn iso_without_zone_is_assumed_utc() {
        let p = ok("2026-11-27T09:14:05.5");
        assert_eq!(p.ms, chrono_ms("2026-11-27T09:14:05.5Z"));
        assert!(p.assumed_utc);
        let spaced = ok("2026-11-27 09:14:05");
        assert_eq!(spaced.ms, chrono_ms("2026-11-27T09:14:05Z"));
        assert!(spaced.assumed_utc);
        let date = ok("2026-11-27");
        assert_eq!(date.ms, chrono_ms("2026-11-27T00:00:00Z"));
        assert!(date.assumed_utc);
        assert_eq!(ok("2026-11-27T09:14").ms, chrono_ms("2026-11-27T09:14:00Z"));
    }

    #[test]
    fn us_style_am_pm() {
        let p = ok("3/9/2026 7:43:05 AM");
        assert_eq!(p.ms, chrono_ms("2026-03-09T07:43:05Z"));
        assert!(p.assumed_utc);
        assert_eq!(ok("11/26/2026 9:47:02 PM").ms, chrono_ms("2026-11-26T21:47:02Z"));
        assert_eq!(ok("11/27/2026 12:02:44 AM").ms, chrono_ms("2026-11-27T00:02:44Z"));
        assert_eq!(ok("11/27/2026 12:02:44 PM").ms, chrono_ms("2026-11-27T12:02:44Z"));
        assert_eq!(ok("8/22/2022 6:07:16 pm").ms, chrono_ms("2022-08-22T18:07:16Z"));
        assert_eq!(ok("11/27/2026 19:02:44").ms, chrono_ms("2026-11-27T19:02:44Z"));
        assert_eq!(
            ok("11/27/2026 7:02:44.250 AM").ms,
            chrono_ms("2026-11-27T07:02:44.250Z")
        );
    }

    #[test]
    fn epoch_digits_by_magnitude() {
        let s = ok("1732780800");
        assert_eq!(s.ms, 1_732_780_800_000);
        assert!(!s.assumed_utc);
        assert_eq!(ok("1732780800123").ms, 1_732_780_800_123);
        assert_eq!(ok("1732780800123456").ms, 1_732_780_800_123);
        assert_eq!(ok("1732780800.25").ms, 1_732_780_800_250);
        assert_eq!(ok("0").ms, 0);
    }

    #[test]
    fn dotnet_json_date() {
        assert_eq!(ok("/Date(1732780800123)/").ms, 1_732_780_800_123);
        assert_eq!(ok("/Date(1732780800123+0000)/").ms, 1_732_780_800_123);
    }

    #[test]
    fn json_values() {
        use serde_json::json;
        assert_eq!(parse_time_json(&json!(1_732_780_800)).unwrap().ms, 1_732_780_800_000);
        assert_eq!(
            parse_time_json(&json!(1_732_780_800_123i64)).unwrap().ms,
            1_732_780_800_123
        );
        assert_eq!(parse_time_json(&json!(1_732_780_800.5)).unwrap().ms, 1_732_780_800_500);
        assert_eq!(
            parse_time_json(&json!("2026-11-27T09:14:05Z")).unwrap().ms,
            chrono_ms("2026-11-27T09:14:05Z")
        );
        assert!(parse_time_json(&json!(null)).is_none());
        assert!(parse_time_json(&json!(true)).is_none());
        assert!(parse_time_json(&json!("garbage")).is_none());
        assert!(parse_time_json(&json!(-5)).is_none());
    }

    #[test]
    fn leap_day_and_pre_epoch() {
        assert_eq!(ok("2024-02-29T00:00:00Z").ms, chrono_ms("2024-02-29T00:00:00Z"));
        assert_eq!(ok("1969-12-31T23:59:59Z").ms, -1000);
    }

    #[test]
    fn rejects() {
        assert_eq!(parse_time(""), Err(TimeError::Empty));
        assert_eq!(parse_time("   "), Err(TimeError::Empty));
        for bad in [
            "garbage",
            "227 B blob data",
            "2026-11-27T09:14:05+",
            "2026-11-27T09:14:05Zjunk",
            "2026-11-27T09:14:05.Z",
            "2026/11/27",
            "11/27/26 7:02:44 AM",
            "11/27/2026 7:02:44 XM",
            "{PII Removed}",
            "-1732780800",
        ] {
            assert!(
                matches!(parse_time(bad), Err(TimeError::Format(_))),
                "{bad:?} should be a format error, got {:?}",
                parse_time(bad)
            );
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T09:61:00Z",
            "13/9/2026 7:43:05 AM",
            "3/9/2026 13:43:05 PM",
            "3/9/2026 0:43:05 AM",
            "2026-11-27T09:14:05+25:00",
            // An offset that moves the instant out of the years 0001-9999.
            "0001-01-01T00:09:33+02",
            "9999-12-31T23:30:00-01:00",
            "/Date(253402300800000)/",
            "9999-12-31T23:59:60Z",
            "9999-12-31 23:59:60",
            "12/31/9999 11:59:60 PM",
        ] {
            assert!(
                matches!(parse_time(bad), Err(TimeError::Range(_))),
                "{bad:?} should be a range error, got {:?}",
                parse_time(bad)
            );
        }
    }

    #[test]
    fn error_reason_labels() {
        assert_eq!(TimeError::Empty.reason(), "empty");
        assert_eq!(parse_time("x").unwrap_err().reason(), "format");
    }
}
