//! Number, time and text-boundary formatting shared by the encoders: UTC civil dates,
//! zero-padded and plain integers without `fmt`, and cutting UTF-8 text at a byte limit.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
/// Public as `decode::time::civil_from_days`, next to its inverse.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

/// Broken-down UTC time of epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub milli: u32,
}

impl Utc {
    pub fn from_ms(ms: i64) -> Utc {
        let days = ms.div_euclid(86_400_000);
        let rest = ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (rest / 3_600_000) as u32,
            minute: (rest / 60_000 % 60) as u32,
            second: (rest / 1000 % 60) as u32,
            milli: (rest % 1000) as u32,
        }
    }

    pub fn month_abbr(&self) -> &'static [u8] {
        const M: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
        ];
        M[(self.month as usize).clamp(1, 12) - 1]
    }
}

/// Appends `n` as exactly `width` zero-padded decimal digits (n must fit).
pub(crate) fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = n;
    for i in (0..width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Appends an integer in decimal.
pub(crate) fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(int_bytes(n, &mut buf));
}

/// Formats an integer into `buf`, returning the digits.
pub(crate) fn int_bytes(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn floor_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};

    #[test]
    fn civil_matches_chrono() {
        for ms in [
            0i64,
            951_782_400_000,
            1_732_698_845_123,
            1_798_363_645_999,
            -1,
            -86_400_001,
            4_102_444_800_000,
            1_709_164_800_000,
        ] {
            let c = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            let u = Utc::from_ms(ms);
            assert_eq!(
                (u.year, u.month, u.day, u.hour, u.minute, u.second, u.milli),
                (
                    c.year() as i64,
                    c.month(),
                    c.day(),
                    c.hour(),
                    c.minute(),
                    c.second(),
                    c.timestamp_subsec_millis()
                ),
                "{ms}"
            );
        }
    }

    #[test]
    fn ints_and_boundaries() {
        let mut v = Vec::new();
        push_int(&mut v, -1234);
        push_int(&mut v, 0);
        push_int(&mut v, i64::MIN);
        assert_eq!(v, b"-12340-9223372036854775808");
        assert_eq!(floor_boundary("aé", 2), "a");
        assert_eq!(floor_boundary("aé", 3), "aé");
        let mut p = Vec::new();
        push_padded(&mut p, 7, 3);
        assert_eq!(p, b"007");
    }
}
