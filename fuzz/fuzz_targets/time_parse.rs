//! Time parsing: every accepted text gives a time in a sane range, and an ISO 8601 rendering
//! of that instant parses back to the same millisecond.
#![no_main]

use m365_forwarder::decode::time::{civil_from_days, parse_time};

libfuzzer_sys::fuzz_target!(|text: &str| {
    let Ok(t) = parse_time(text) else { return };
    // Years 0001-9999.
    assert!((-62_135_596_800_000..=253_402_300_799_999).contains(&t.ms), "{text:?} -> {}", t.ms);
    let days = t.ms.div_euclid(86_400_000);
    let rem = t.ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let iso = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    );
    let back = parse_time(&iso).unwrap_or_else(|e| panic!("{iso} (from {text:?}) does not parse: {e}"));
    assert_eq!(back.ms, t.ms, "{text:?} -> {iso}");
    assert!(!back.assumed_utc);
});
