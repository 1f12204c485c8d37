//! Shared helpers: the Event Hub record envelope, tenant and time extraction, OCSF object
//! builders (user, location, endpoint, OS; the object type itself is `tree::Obj`), enum maps,
//! the stable FNV-1a 128 hash and the observables collector.

use std::borrow::Cow;

use bytestring::ByteString;
use serde::Deserialize;
use serde_json::{Map, Value};

pub(crate) use super::tree::Obj;
use super::tree::{self, Node};

use super::lenient::{Nest, Num, Str};
use super::NormalizeError;
use crate::decode::time::{parse_time, ParsedTime};
use crate::json_text::trim;

/// The fields common to every Event Hub record (Entra diagnostic logs and Defender XDR
/// streaming); `properties` is parsed into the category's own typed struct.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, P: Deserialize<'de>"))]
pub(crate) struct Envelope<'a, P> {
    #[serde(default)]
    pub time: Str<'a>,
    #[serde(default, rename = "resourceId")]
    pub resource_id: Str<'a>,
    #[serde(default, rename = "tenantId")]
    pub tenant_id: Str<'a>,
    #[serde(default, rename = "operationName")]
    pub operation_name: Str<'a>,
    #[serde(default, rename = "operationVersion")]
    pub operation_version: Str<'a>,
    #[serde(default, rename = "resultType")]
    pub result_type: Str<'a>,
    #[serde(default, rename = "resultSignature")]
    pub result_signature: Str<'a>,
    #[serde(default, rename = "resultDescription")]
    pub result_description: Str<'a>,
    #[serde(default, rename = "durationMs")]
    pub duration_ms: Num,
    #[serde(default, rename = "callerIpAddress")]
    pub caller_ip: Str<'a>,
    #[serde(default, rename = "correlationId")]
    pub correlation_id: Str<'a>,
    #[serde(default)]
    pub identity: Str<'a>,
    /// `Level` (numeric, sign-ins and risk records).
    #[serde(default, rename = "Level")]
    pub level_upper: Str<'a>,
    /// `level` (string, audit logs).
    #[serde(default)]
    pub level: Str<'a>,
    #[serde(default)]
    pub location: Str<'a>,
    #[serde(default = "Nest::default")]
    pub properties: Nest<P>,
}

impl<'a, P> Envelope<'a, P> {
    /// Tenant id from `tenantId`, else parsed out of `resourceId`; lower case.
    pub fn tenant(&self) -> Option<String> {
        tenant_of(&self.tenant_id, &self.resource_id)
    }

    /// Top-level fields that have no OCSF home, under their source names.
    pub fn unmapped_into(&self, u: &mut Obj) {
        u.s("operationName", self.operation_name.get());
        u.s("operationVersion", self.operation_version.get());
        u.s("resultType", self.result_type.get());
        u.s("resultSignature", self.result_signature.get());
        u.ov("durationMs", self.duration_ms.value());
        u.s("identity", self.identity.get());
        u.s("location", self.location.get());
        u.s("Level", self.level_upper.get().or(self.level.get()));
    }
}

/// Tenant from a `tenantId` field, else from `/tenants/<id>/...` in a resource id (any case).
pub(crate) fn tenant_of(tenant_id: &Str<'_>, resource_id: &Str<'_>) -> Option<String> {
    if let Some(t) = tenant_id.get() {
        return Some(trim(t).to_ascii_lowercase());
    }
    tenant_from_resource_id(resource_id.get()?)
}

/// `/tenants/<id>/providers/Microsoft.aadiam` (any case) → `<id>` in lower case.
pub(crate) fn tenant_from_resource_id(rid: &str) -> Option<String> {
    const KEY: &[u8] = b"/tenants/";
    let b = rid.as_bytes();
    let pos = b.windows(KEY.len()).position(|w| w.eq_ignore_ascii_case(KEY))?;
    let rest = &rid[pos + KEY.len()..];
    let id = rest.split('/').next()?.trim();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

/// Pick the event time: the first candidate that is present and parses wins. Returns the
/// parsed time and the original text. Absent everywhere → `missing_field`; present but never
/// parseable → `bad_time` naming the first field that failed.
pub(crate) fn pick_time<'s>(cands: &[(&'static str, &'s Str<'_>)]) -> Result<(ParsedTime, &'s str), NormalizeError> {
    let mut first_err = None;
    for (field, s) in cands {
        let Some(text) = s.get() else { continue };
        match parse_time(text) {
            Ok(p) => return Ok((p, text)),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(NormalizeError::BadTime { field, source: e });
                }
            }
        }
    }
    Err(first_err.unwrap_or(NormalizeError::MissingField(
        cands.first().map(|c| c.0).unwrap_or("time"),
    )))
}

/// A time attribute value (epoch ms) when the text parses; unparseable secondary times are
/// simply left out.
pub(crate) fn time_ms(s: &Str<'_>) -> Option<i64> {
    s.get().and_then(|t| parse_time(t).ok()).map(|p| p.ms)
}

/// Strings of a list, as JSON, skipping absent entries.
pub(crate) fn str_list<'x>(items: impl IntoIterator<Item = &'x Str<'x>>) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|s| s.get().map(|s| Value::String(s.to_owned())))
        .collect()
}

/// Space-separated list (`roles`, `scopes`, `wids`) as a JSON array.
pub(crate) fn split_spaces(s: Option<&str>) -> Option<Value> {
    let v: Vec<Value> = s?
        .split_ascii_whitespace()
        .map(|x| Value::String(x.to_owned()))
        .collect();
    (!v.is_empty()).then_some(Value::Array(v))
}

/// OCSF `user.type_id` values used here (1.5.0: 0 Unknown, 1 User, 2 Admin, 3 System, 99 Other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserType {
    User,
    ServicePrincipal,
    ManagedIdentity,
}

/// An OCSF `user` object. `name` is the UPN or account name; `email_addr` is set when the
/// name looks like an address. Service principals and managed identities use type_id 99.
pub(crate) fn user_obj(
    uid: Option<&str>,
    name: Option<&str>,
    full_name: Option<&str>,
    domain: Option<&str>,
    kind: UserType,
) -> Obj {
    let mut u = Obj::new();
    u.s("uid", uid)
        .s("name", name)
        .s("full_name", full_name)
        .s("domain", domain);
    if let Some(n) = name.filter(|n| n.contains('@') && kind == UserType::User) {
        u.s("email_addr", Some(n));
    }
    if u.is_empty() {
        return u;
    }
    match kind {
        UserType::User => u.v("type_id", 1).c("type", "User"),
        UserType::ServicePrincipal => u.v("type_id", 99).c("type", "ServicePrincipal"),
        UserType::ManagedIdentity => u.v("type_id", 99).c("type", "ManagedIdentity"),
    };
    u
}

/// An OCSF `location` object; empty strings and (0, 0) coordinates are left out.
pub(crate) fn location_obj(
    city: Option<&str>,
    region: Option<&str>,
    country: Option<&str>,
    lat: Option<f64>,
    long: Option<f64>,
) -> Obj {
    let mut l = Obj::new();
    l.s("city", city).s("region", region).s("country", country);
    let (la, lo) = coordinates(lat, long);
    l.ov("lat", la.map(Value::Number)).ov("long", lo.map(Value::Number));
    l
}

/// Latitude and longitude as OCSF numbers: both given and not (0, 0), each when finite.
pub(crate) fn coordinates(
    lat: Option<f64>,
    long: Option<f64>,
) -> (Option<serde_json::Number>, Option<serde_json::Number>) {
    match (lat, long) {
        (Some(la), Some(lo)) if la != 0.0 || lo != 0.0 => {
            (serde_json::Number::from_f64(la), serde_json::Number::from_f64(lo))
        }
        _ => (None, None),
    }
}

/// Entra `signInLocation` shape: `{city, state, countryOrRegion, geoCoordinates{latitude, longitude}}`.
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(crate) struct SignInLocation<'a> {
    #[serde(default)]
    pub city: Str<'a>,
    #[serde(default)]
    pub state: Str<'a>,
    #[serde(default, rename = "countryOrRegion")]
    pub country: Str<'a>,
    #[serde(default, rename = "geoCoordinates")]
    pub geo: Nest<Geo>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Geo {
    #[serde(default)]
    pub latitude: Num,
    #[serde(default)]
    pub longitude: Num,
}

impl SignInLocation<'_> {
    pub fn to_obj(&self) -> Obj {
        let (lat, long) = self.coordinates();
        location_obj(self.city.get(), self.state.get(), self.country.get(), lat, long)
    }

    pub fn coordinates(&self) -> (Option<f64>, Option<f64>) {
        self.geo
            .as_ref()
            .map(|g| (g.latitude.f64(), g.longitude.f64()))
            .unwrap_or((None, None))
    }
}

/// OCSF `os` object from a free-text platform name (`Windows10`, `Windows 11`, `Linux`, ...).
pub(crate) fn os_obj(name: Option<&str>) -> Obj {
    let mut o = Obj::new();
    let Some(n) = name else { return o };
    let l = n.to_ascii_lowercase();
    let type_id = if l.contains("windows") {
        100
    } else if l.contains("android") {
        201
    } else if l.contains("linux") || l.contains("ubuntu") {
        200
    } else if l.contains("ios") && !l.contains("ipados") {
        301
    } else if l.contains("ipados") {
        302
    } else if l.contains("mac") {
        300
    } else {
        0
    };
    o.s("name", Some(n)).v("type_id", type_id);
    o
}

/// Graph / Defender severity text → OCSF severity_id.
pub(crate) fn severity_from_text(s: Option<&str>) -> u8 {
    let Some(s) = s else { return 0 };
    if s.eq_ignore_ascii_case("informational") {
        1
    } else if s.eq_ignore_ascii_case("low") {
        2
    } else if s.eq_ignore_ascii_case("medium") {
        3
    } else if s.eq_ignore_ascii_case("high") {
        4
    } else if s.eq_ignore_ascii_case("critical") {
        5
    } else if s.eq_ignore_ascii_case("unknown") {
        0
    } else {
        99
    }
}

/// Identity Protection `riskLevel` → OCSF severity_id (none → 1, hidden → 0).
pub(crate) fn severity_from_risk(s: Option<&str>) -> u8 {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("low") => 2,
        Some("medium") => 3,
        Some("high") => 4,
        Some("none") => 1,
        _ => 0,
    }
}

/// Identity Protection `riskLevel` → OCSF `risk_level_id` and caption.
pub(crate) fn risk_level(s: Option<&str>) -> Option<(u8, String)> {
    let s = s?;
    Some(match s.to_ascii_lowercase().as_str() {
        "none" => (0, "Info".to_owned()),
        "low" => (1, "Low".to_owned()),
        "medium" => (2, "Medium".to_owned()),
        "high" => (3, "High".to_owned()),
        _ => (99, s.to_owned()),
    })
}

/// OCSF severity caption.
pub(crate) fn severity_caption(id: u8) -> &'static str {
    match id {
        0 => "Unknown",
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        _ => "Other",
    }
}

/// FNV-1a 128-bit: a cheap, stable, non-cryptographic hash (used for `metadata.uid` and
/// cache keys). Parts written with [`Fnv128::part`] are separated by 0x1F.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv128(u128);

impl Default for Fnv128 {
    fn default() -> Self {
        Fnv128(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }
}

impl Fnv128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    pub fn write(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 ^= u128::from(x);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        self
    }
    /// Write a part followed by the 0x1F separator.
    pub fn part(&mut self, s: &str) -> &mut Self {
        self.write(s.as_bytes()).write(&[0x1f])
    }
    /// Write a part in ASCII lower case (for case-insensitive ids).
    pub fn part_lower(&mut self, s: &str) -> &mut Self {
        for &x in s.as_bytes() {
            self.0 ^= u128::from(x.to_ascii_lowercase());
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
        self.write(&[0x1f])
    }
    pub fn finish(&self) -> u128 {
        self.0
    }
}

/// Hash of parts, e.g. `uid_of(&["graph.incident", tenant, id, version])`.
pub(crate) fn uid_of(parts: &[&str]) -> u128 {
    let mut h = Fnv128::default();
    for p in parts {
        h.part(p);
    }
    h.finish()
}

/// 32 lower-case hex digits.
pub(crate) fn hex128(v: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    // Two 64-bit halves: shifts of a u128 cost several instructions each.
    for (digits, half) in out.chunks_exact_mut(16).zip([(v >> 64) as u64, v as u64]) {
        for (i, d) in digits.iter_mut().enumerate() {
            *d = HEX[((half >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Observables found in an event, deduplicated by (type_id, value); `name` is the attribute
/// path of the first occurrence.
#[derive(Default, Debug)]
pub(crate) struct Observables {
    items: Vec<(u8, Cow<'static, str>, ByteString)>,
}

impl Observables {
    /// Adds an observable unless one of the same type and value is there. `name` is the
    /// attribute path (a literal, or a `String` for indexed paths).
    pub fn add(&mut self, type_id: u8, name: impl Into<Cow<'static, str>>, value: Option<&str>) {
        if super::tree::lean() {
            return;
        }
        let Some(value) = value else { return };
        if self.items.iter().any(|(t, _, v)| *t == type_id && &**v == value) {
            return;
        }
        self.items.push((type_id, name.into(), tree::text(value)));
    }
    pub fn extend(&mut self, other: Observables) {
        for (t, n, v) in other.items {
            if !self.items.iter().any(|(t2, _, v2)| *t2 == t && *v2 == v) {
                self.items.push((t, n, v));
            }
        }
    }
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// The OCSF `observables` array as tree nodes (empty when there are none).
    pub fn into_nodes(self) -> Vec<Node> {
        self.items
            .into_iter()
            .map(|(t, n, v)| {
                let name = match n {
                    Cow::Borrowed(s) => ByteString::from_static(s),
                    Cow::Owned(s) => ByteString::from(s),
                };
                // Members in the order the JSON output always had (sorted).
                let mut o = Obj::new();
                o.text("name", name)
                    .text("type", ByteString::from_static(observable_caption(t)))
                    .v("type_id", t)
                    .text("value", v);
                Node::Obj(o)
            })
            .collect()
    }
}

/// Observable type ids used here (stable across OCSF 1.x).
pub(crate) mod obs {
    pub const HOSTNAME: u8 = 1;
    pub const IP: u8 = 2;
    pub const USER_NAME: u8 = 4;
    pub const EMAIL: u8 = 5;
    pub const URL: u8 = 6;
    pub const FILE_NAME: u8 = 7;
    pub const HASH: u8 = 8;
    pub const RESOURCE_UID: u8 = 10;
    /// Observable of the dictionary attribute `cmd_line` (OCSF 1.5.0 `dictionary.json`).
    pub const COMMAND_LINE: u8 = 13;
}

fn observable_caption(t: u8) -> &'static str {
    match t {
        1 => "Hostname",
        2 => "IP Address",
        4 => "User Name",
        5 => "Email Address",
        6 => "URL String",
        7 => "File Name",
        8 => "Hash",
        9 => "Process Name",
        10 => "Resource UID",
        13 => "Command Line",
        _ => "Other",
    }
}

/// Add the observables of an OCSF `user` object found at `path`.
pub(crate) fn observe_user(obs: &mut Observables, path: &str, user: &Obj) {
    if super::tree::lean() {
        return;
    }
    if let Some(n) = user.get_str("name") {
        obs.add(obs::USER_NAME, member_path(path, "name"), Some(n));
    }
    if let Some(e) = user.get_str("email_addr") {
        obs.add(obs::EMAIL, member_path(path, "email_addr"), Some(e));
    }
}

/// `path.member`: a constant for the user paths most events have, else built.
fn member_path(path: &str, member: &'static str) -> Cow<'static, str> {
    Cow::Borrowed(match (path, member) {
        ("user", "name") => "user.name",
        ("user", "email_addr") => "user.email_addr",
        ("actor.user", "name") => "actor.user.name",
        ("actor.user", "email_addr") => "actor.user.email_addr",
        _ => return Cow::Owned(format!("{path}.{member}")),
    })
}

/// A file hash object (`algorithm_id` 1 MD5, 2 SHA-1, 3 SHA-256).
pub(crate) fn hash_obj(algorithm_id: u8, value: &str) -> Value {
    let caption = match algorithm_id {
        1 => "MD5",
        2 => "SHA-1",
        3 => "SHA-256",
        _ => "Other",
    };
    let mut o = Map::new();
    o.insert("algorithm_id".into(), Value::from(algorithm_id));
    o.insert("algorithm".into(), Value::String(caption.into()));
    o.insert("value".into(), Value::String(value.to_owned()));
    Value::Object(o)
}

/// Join a folder and a file name with the folder's separator unless the folder already ends
/// with the name.
pub(crate) fn join_path(folder: Option<&str>, name: Option<&str>) -> Option<String> {
    match (folder, name) {
        (Some(f), Some(n)) if f.ends_with(n) => Some(f.to_owned()),
        (Some(f), Some(n)) => {
            let sep = if f.contains('\\') { '\\' } else { '/' };
            Some(format!("{}{sep}{n}", f.trim_end_matches(['\\', '/'])))
        }
        (Some(f), None) => Some(f.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex128_is_32_lowercase_digits() {
        for v in [0u128, 1, 0xabc, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(hex128(v), format!("{v:032x}"));
        }
    }

    #[test]
    fn tenant_from_resource_id_any_case() {
        assert_eq!(
            tenant_from_resource_id("/TENANTS/D13C513A-42F8-4DA1-97B1-165F0971B7C4/PROVIDERS/MICROSOFT.AADIAM")
                .as_deref(),
            Some("d13c513a-42f8-4da1-97b1-165f0971b7c4")
        );
        assert_eq!(
            tenant_from_resource_id("/tenants/abc/providers/microsoft.aadiam").as_deref(),
            Some("abc")
        );
        assert_eq!(tenant_from_resource_id("/subscriptions/x"), None);
        assert_eq!(tenant_from_resource_id("/tenants//x"), None);
    }

    #[test]
    fn fnv128_known_vectors() {
        // Reference values of FNV-1a 128 for "" and "a".
        assert_eq!(Fnv128::default().finish(), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(
            Fnv128::default().write(b"a").finish(),
            0xd228cb696f1a8caf78912b704e4a8964
        );
        assert_eq!(hex128(1).len(), 32);
        assert_ne!(uid_of(&["a", "bc"]), uid_of(&["ab", "c"]));
    }

    #[test]
    fn pick_time_falls_back_and_reports() {
        let bad = Str::from_static("garbage");
        let good = Str::from_static("11/27/2026 7:02:44 AM");
        let none = Str::default();
        let (p, orig) = pick_time(&[("a", &bad), ("b", &good)]).unwrap();
        assert!(p.assumed_utc);
        assert_eq!(orig, "11/27/2026 7:02:44 AM");
        let e = pick_time(&[("a", &bad), ("b", &none)]).unwrap_err();
        assert_eq!(e.reason(), "bad_time");
        let e = pick_time(&[("a", &none)]).unwrap_err();
        assert_eq!(e.reason(), "missing_field");
    }

    #[test]
    fn observables_dedup() {
        let mut o = Observables::default();
        o.add(obs::IP, "a.ip", Some("192.0.2.1"));
        o.add(obs::IP, "b.ip", Some("192.0.2.1"));
        o.add(obs::IP, "b.ip", None);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn paths_join() {
        assert_eq!(
            join_path(Some("C:\\Windows"), Some("explorer.exe")).as_deref(),
            Some("C:\\Windows\\explorer.exe")
        );
        assert_eq!(
            join_path(Some("C:\\x\\a.exe"), Some("a.exe")).as_deref(),
            Some("C:\\x\\a.exe")
        );
        assert_eq!(join_path(Some("/usr/bin/"), Some("sh")).as_deref(), Some("/usr/bin/sh"));
    }
}
