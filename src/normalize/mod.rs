//! OCSF normalization (schema 1.5.0): entry point, dispatch by category, base-event
//! attributes, `raw_data`, and the error type. Mapping per input kind: `schemas/README.md`.

mod common;
mod correlate;
mod ctx;
mod defender;
mod direct;
mod embedded;
mod entra_audit;
mod entra_signin;
mod flat;
mod generic;
mod graph;
mod graph_activity;
mod graph_evidence;
mod identity_protection;
use crate::json_de;
mod lenient;
mod mitre;
mod ocsf;
mod seen;
mod tree;
mod user_cache;

use bytes::Bytes;
use bytestring::ByteString;

use crate::decode::time::TimeError;
use crate::event::{EventMeta, Normalized};

pub use correlate::{Correlated, Via};
pub use ocsf::OCSF_VERSION;

use common::{hex128, Fnv128};
use correlate::Correlator;
pub(crate) use ctx::Ctx;
pub(crate) use flat::{Flat, FlatUser};
use ocsf::Draft;
use seen::SeenCache;
pub(crate) use tree::{Node, Obj};
use user_cache::UserCache;

/// Default bound of `raw_data` (bytes of the source record).
pub const DEFAULT_RAW_DATA_MAX_BYTES: usize = 262_144;
/// Default number of users kept for user restoration.
pub const DEFAULT_USER_CACHE_CAPACITY: usize = 200_000;
/// Default number of findings kept for first-seen / update decisions.
pub const DEFAULT_SEEN_CACHE_CAPACITY: usize = 200_000;

/// Whether to copy the source record into `raw_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawData {
    #[default]
    Keep,
    Drop,
}

/// Normalization settings.
#[derive(Clone, Debug)]
pub struct NormalizeOptions {
    pub raw_data: RawData,
    /// Records larger than this get no `raw_data` (a hash and the size instead).
    pub raw_data_max_bytes: usize,
    /// Correlate detections seen through Graph and through Event Hub (`correlate.rs`).
    pub correlate_detections: bool,
    /// Build only what CEF and LEEF read: no `observables`, no `unmapped`, no `attacks`, no
    /// hash of an oversized record (see `tree::lean`), and for the families mapped flat no
    /// tree at all (see `direct`). For pipelines whose every output is such an encoder.
    pub lean: bool,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            raw_data: RawData::Keep,
            raw_data_max_bytes: DEFAULT_RAW_DATA_MAX_BYTES,
            correlate_detections: true,
            lean: false,
        }
    }
}

/// Opaque key of a (tenant, user object id) in the restoration cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserKey(u128);

/// The result of normalizing one record.
#[derive(Clone, Debug)]
pub struct NormalizeOutput {
    pub normalized: Normalized,
    pub severity_id: u8,
    /// Event time (for findings: the time of this version), epoch ms.
    pub event_ms: Option<i64>,
    /// Stable key: the incident id for incidents and their alerts; the finding uid for other
    /// findings; `None` for activity records (sign-ins, audit, API activity, generic).
    pub entity_key: Option<String>,
    /// Tenant id carried by the record (`tenantId`, or parsed out of `resourceId`).
    pub tenant: Option<String>,
    /// The event time text had no zone and UTC was assumed.
    pub time_assumed_utc: bool,
    /// The same detection came first through the other input (Graph or Event Hub).
    pub correlated: Option<Correlated>,
    /// Correlated, and this event is the detection's creation (not a change): a duplicate
    /// the router drops when `normalize.suppress_duplicate_detections` is on.
    pub duplicate: bool,
    /// A user object id was looked up in the restoration cache and not found: a record
    /// normalized in parallel (an earlier sign-in) may still teach it (the first such key;
    /// see `run_normalize`).
    pub user_unrestored: Option<UserKey>,
}

/// Why a record could not be normalized (the pipeline quarantines it).
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("invalid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("empty record")]
    Empty,
    #[error("record is not a JSON object")]
    NotAnObject,
    #[error("record does not match the expected shape: {0}")]
    Schema(#[source] serde_json::Error),
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("unparseable time in `{field}`: {source}")]
    BadTime {
        field: &'static str,
        #[source]
        source: TimeError,
    },
}

impl NormalizeError {
    /// Short snake_case label (metric label and quarantine reason).
    pub fn reason(&self) -> &'static str {
        match self {
            NormalizeError::InvalidJson(_) | NormalizeError::Empty => "invalid_json",
            NormalizeError::NotAnObject => "not_an_object",
            NormalizeError::Schema(_) => "schema_mismatch",
            NormalizeError::MissingField(_) => "missing_field",
            NormalizeError::BadTime { .. } => "bad_time",
        }
    }

    pub(crate) fn from_serde(e: serde_json::Error) -> NormalizeError {
        match e.classify() {
            serde_json::error::Category::Data => NormalizeError::Schema(e),
            _ => NormalizeError::InvalidJson(e),
        }
    }
}

/// Normalizes records to OCSF. Safe to share between worker threads (`Send + Sync`); its
/// caches are bounded and internally locked.
pub struct Normalizer {
    opts: NormalizeOptions,
    users: UserCache,
    seen: SeenCache,
    correlator: Correlator,
}

impl std::fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalizer")
            .field("opts", &self.opts)
            .field("cached_users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Normalizer {
    pub fn new(opts: NormalizeOptions) -> Normalizer {
        Normalizer::with_capacities(opts, DEFAULT_USER_CACHE_CAPACITY, DEFAULT_SEEN_CACHE_CAPACITY)
    }

    /// Like [`Normalizer::new`] with explicit cache bounds (users, findings).
    pub fn with_capacities(opts: NormalizeOptions, users: usize, findings: usize) -> Normalizer {
        Normalizer {
            opts,
            users: UserCache::new(users),
            seen: SeenCache::new(findings),
            correlator: Correlator::new(findings),
        }
    }

    /// Whether the restoration cache knows the user behind `key` now.
    pub fn knows_user(&self, key: UserKey) -> bool {
        self.users.contains(key.0)
    }

    /// Number of users currently cached for restoration (for a gauge).
    pub fn cached_users(&self) -> usize {
        self.users.len()
    }

    /// Normalize one record: one element of an Event Hub `records` array, or one Graph
    /// object (incident with its alerts, alert, risk detection, risky user / service
    /// principal), as selected by `meta.category`. Unknown categories become a Base Event.
    /// Copies the record once; [`Normalizer::normalize_bytes`] shares it instead.
    pub fn normalize(&self, meta: &EventMeta, raw: &[u8]) -> Result<NormalizeOutput, NormalizeError> {
        self.normalize_bytes(meta, &Bytes::copy_from_slice(raw))
    }

    /// [`Normalizer::normalize`] for a record in a shared buffer: the output's string
    /// attributes that are text of the record (ids, names, addresses, `raw_data`) are slices
    /// of that buffer, not copies. The record is checked for UTF-8 once; invalid sequences
    /// are replaced (U+FFFD) rather than failing the record.
    pub fn normalize_bytes(&self, meta: &EventMeta, raw: &Bytes) -> Result<NormalizeOutput, NormalizeError> {
        let text = match ByteString::try_from(raw.clone()) {
            Ok(t) => t,
            Err(_) => ByteString::from(String::from_utf8_lossy(raw).into_owned()),
        };
        tree::with_source(&text, self.opts.lean, || self.normalize_text(meta, raw, &text))
    }

    fn normalize_text(&self, meta: &EventMeta, raw: &[u8], text: &str) -> Result<NormalizeOutput, NormalizeError> {
        match text.bytes().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(NormalizeError::Empty),
            Some(b'{') => {}
            Some(_) => {
                return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    Ok(_) => NormalizeError::NotAnObject,
                    Err(e) => NormalizeError::InvalidJson(e),
                })
            }
        }
        let ctx = Ctx {
            meta,
            users: &self.users,
            seen: &self.seen,
            missed_user: std::cell::Cell::new(None),
            event_ms: std::cell::Cell::new(None),
        };
        let direct = if self.opts.lean {
            direct::dispatch(&ctx, text)
        } else {
            None
        };
        let mut out = match direct {
            Some(d) => self.finish_flat(meta, d?),
            None => {
                let draft = dispatch(&ctx, text)?;
                self.finish(meta, raw, text, draft)
            }
        };
        out.user_unrestored = ctx.missed_user.get();
        Ok(out)
    }

    /// Whether this detection came first through the other input, and whether this event is
    /// then a duplicate (its creation, not a change).
    fn correlate(
        &self,
        meta: &EventMeta,
        detection: Option<(correlate::DetectionKind, String)>,
        uid: u128,
        activity_id: u8,
    ) -> (Option<Correlated>, bool) {
        let Some((kind, id)) = detection.filter(|_| self.opts.correlate_detections) else {
            return (None, false);
        };
        let correlated = self
            .correlator
            .observe(kind, &id, Via::of_category(&meta.category), uid);
        let change = meta.change_type.as_deref().filter(|s| !s.is_empty());
        let duplicate =
            correlated.is_some() && activity_id == 1 && change.is_none_or(|c| c.eq_ignore_ascii_case("created"));
        (correlated, duplicate)
    }

    /// [`Normalizer::finish`] for a record mapped flat (lean, no tree).
    fn finish_flat(&self, meta: &EventMeta, mut d: direct::Direct) -> NormalizeOutput {
        let (correlated, duplicate) = self.correlate(meta, d.detection.take(), d.uid, d.activity_id);
        NormalizeOutput {
            severity_id: d.flat.severity_id,
            event_ms: Some(d.time.ms),
            entity_key: d.entity_key,
            tenant: d.tenant,
            time_assumed_utc: d.time.assumed_utc,
            correlated,
            duplicate,
            user_unrestored: None,
            normalized: Normalized::from_flat(d.class.uid(), d.flat),
        }
    }

    fn finish(&self, meta: &EventMeta, raw: &[u8], text: &str, mut d: Draft) -> NormalizeOutput {
        let severity_id = d.severity_id;
        let event_ms = Some(d.time.ms);
        let time_assumed_utc = d.time.assumed_utc;
        let entity_key = d.entity_key.take();
        let tenant = d.tenant.clone();
        if d.tenant.is_none() {
            d.tenant = meta.tenant.as_deref().map(str::to_owned);
        }
        if let Some(ct) = meta.change_type.as_deref().filter(|s| !s.is_empty()) {
            d.unmapped.v("change_type", ct);
        }
        if let Some(fields) = meta.changed_fields.as_deref().filter(|f| !f.is_empty()) {
            d.unmapped.v("changed_fields", serde_json::Value::from(fields.to_vec()));
        }
        let (correlated, duplicate) = self.correlate(meta, d.detection.take(), d.uid, d.activity_id);
        if let Some(c) = correlated {
            d.unmapped
                .v("correlated_via", c.via.as_str())
                .v("correlated_uid", hex128(c.uid));
        }
        let keep = self.opts.raw_data == RawData::Keep;
        let fits = raw.len() <= self.opts.raw_data_max_bytes;
        if keep && !fits && !self.opts.lean {
            let mut h = Fnv128::default();
            h.write(raw);
            d.unmapped
                .c("raw_data_omitted", "too_large")
                .v("raw_data_fnv1a128", hex128(h.finish()));
        }
        let class_uid = d.class.uid();
        let (mut o, observables) = d.into_ocsf(&meta.category, meta.received_ms);
        o.nodes("observables", observables.into_nodes());
        o.v("raw_data_size", raw.len() as u64);
        if keep && fits {
            o.s("raw_data", Some(text));
        }
        NormalizeOutput {
            normalized: Normalized::from_tree(class_uid, o),
            severity_id,
            event_ms,
            entity_key,
            tenant,
            time_assumed_utc,
            correlated,
            duplicate,
            user_unrestored: None,
        }
    }
}

/// For the fuzz targets: the record parse's fast path against serde_json on `text`
/// (panics when it takes what serde_json refuses or reads another value).
#[doc(hidden)]
pub fn check_typed_parse(text: &str) {
    json_de::check_against_serde(text);
}

fn dispatch(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let category: &str = &ctx.meta.category;
    match category {
        "SignInLogs"
        | "NonInteractiveUserSignInLogs"
        | "ServicePrincipalSignInLogs"
        | "ManagedIdentitySignInLogs"
        | "ADFSSignInLogs" => entra_signin::map(ctx, raw),
        "AuditLogs" => entra_audit::map_audit(ctx, raw),
        "ProvisioningLogs" => entra_audit::map_provisioning(ctx, raw),
        "UserRiskEvents" | "ServicePrincipalRiskEvents" => identity_protection::map_detection_eventhub(ctx, raw),
        "RiskyUsers" | "RiskyServicePrincipals" => identity_protection::map_state_eventhub(ctx, raw),
        "GraphRiskDetection" | "GraphServicePrincipalRiskDetection" => {
            identity_protection::map_detection_graph(ctx, raw)
        }
        "GraphRiskyUser" | "GraphRiskyServicePrincipal" => identity_protection::map_state_graph(ctx, raw),
        "MicrosoftGraphActivityLogs" => graph_activity::map(ctx, raw),
        "GraphIncident" => graph::map_incident(ctx, raw),
        "GraphAlert" => graph::map_alert(ctx, raw),
        "AdvancedHunting-AlertInfo" => defender::map_alert_info(ctx, raw),
        "AdvancedHunting-AlertEvidence" => defender::map_alert_evidence(ctx, raw),
        "AdvancedHunting-IdentityLogonEvents" | "AdvancedHunting-DeviceLogonEvents" => defender::map_logon(ctx, raw),
        _ => generic::map(ctx, raw),
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    /// The Defender alert that is also in the Graph incident sample, from both inputs.
    fn twin_alert() -> (String, String) {
        let ah: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/data/eventhub/defender_alert_info_evidence.json"
        ))
        .unwrap();
        let info = ah["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["category"] == "AdvancedHunting-AlertInfo")
            .unwrap();
        let id = info["properties"]["AlertId"].as_str().unwrap();
        let page: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/graph/incidents_page2.json")).unwrap();
        let alert = page["value"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["alerts"].as_array().unwrap())
            .find(|a| a["id"] == id)
            .unwrap();
        (info.to_string(), alert.to_string())
    }

    #[test]
    fn graph_updates_of_a_detection_first_seen_on_event_hub_are_correlated_not_duplicates() {
        let (info, alert) = twin_alert();
        let n = normalizer();
        let first = run(&n, "AdvancedHunting-AlertInfo", &info);
        assert!(first.correlated.is_none() && !first.duplicate);
        let with_change = |ct: &str| EventMeta {
            change_type: Some(std::sync::Arc::from(ct)),
            ..meta("GraphAlert")
        };
        let created = n.normalize(&with_change("created"), alert.as_bytes()).unwrap();
        assert_eq!(created.correlated.map(|c| c.via), Some(Via::EventHub));
        assert!(created.duplicate, "the Graph copy of the creation is the duplicate");
        let updated = n.normalize(&with_change("status_changed"), alert.as_bytes()).unwrap();
        assert!(updated.correlated.is_some());
        assert!(!updated.duplicate, "a change is news, never suppressed");
        let json = String::from_utf8({
            let mut v = Vec::new();
            updated.normalized.write_json(&mut v).unwrap();
            v
        })
        .unwrap();
        assert!(json.contains("\"correlated_via\":\"event_hub\""), "{json}");

        let off = Normalizer::new(NormalizeOptions {
            correlate_detections: false,
            ..NormalizeOptions::default()
        });
        run(&off, "AdvancedHunting-AlertInfo", &info);
        let o = off.normalize(&with_change("created"), alert.as_bytes()).unwrap();
        assert!(o.correlated.is_none() && !o.duplicate, "correlation can be turned off");
    }

    #[test]
    fn normalizer_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Normalizer>();
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal_and_raw_size_is_the_input_size() {
        let n = Normalizer::new(NormalizeOptions {
            raw_data: RawData::Keep,
            ..NormalizeOptions::default()
        });
        let m = testutil::meta("SignInLogs");
        let mut rec = br#"{"time":"2026-11-27T09:14:05Z","properties":{"id":"a","userPrincipalName":"k"#.to_vec();
        rec.extend_from_slice(&[0xff, 0xfe]);
        rec.extend_from_slice(br#"m@x.example"}}"#);
        let o = n.normalize(&m, &rec).expect("normalized despite invalid UTF-8");
        let v = o.normalized.ocsf();
        assert_eq!(v["user"]["name"], "k\u{fffd}\u{fffd}m@x.example");
        assert_eq!(v["raw_data_size"], rec.len());
        assert!(v["raw_data"].as_str().unwrap().contains('\u{fffd}'));
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let n = normalizer();
        let m = meta("SignInLogs");
        let e = n.normalize(&m, b"227 B blob data").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        let e = n.normalize(&m, b"[1,2]").unwrap_err();
        assert_eq!(e.reason(), "not_an_object");
        let e = n.normalize(&m, b"  ").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        let e = n.normalize(&m, b"{\"time\": ").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        let e = n
            .normalize(&m, br#"{"category":"SignInLogs","properties":{"id":"x"}}"#)
            .unwrap_err();
        assert_eq!(e.reason(), "missing_field");
        let e = n
            .normalize(
                &m,
                br#"{"time":"yesterday","properties":{"id":"x","createdDateTime":"soon"}}"#,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "bad_time");
        assert!(e.to_string().contains("createdDateTime"));
    }

    #[test]
    fn raw_data_keep_drop_and_limit() {
        let rec = r#"{"time":"2026-11-27T09:14:05Z","category":"Nope","properties":{"a":1}}"#;
        let keep = normalizer();
        let o = run(&keep, "Nope", rec);
        assert_eq!(ocsf(&o)["raw_data"], rec);
        assert_eq!(ocsf(&o)["raw_data_size"], rec.len());
        let drop = Normalizer::new(NormalizeOptions {
            raw_data: RawData::Drop,
            raw_data_max_bytes: DEFAULT_RAW_DATA_MAX_BYTES,
            ..NormalizeOptions::default()
        });
        let o = run(&drop, "Nope", rec);
        assert!(ocsf(&o).get("raw_data").is_none());
        let small = Normalizer::new(NormalizeOptions {
            raw_data: RawData::Keep,
            raw_data_max_bytes: 10,
            ..NormalizeOptions::default()
        });
        let o = run(&small, "Nope", rec);
        assert!(ocsf(&o).get("raw_data").is_none());
        assert_eq!(ocsf(&o)["unmapped"]["raw_data_omitted"], "too_large");
        assert_eq!(ocsf(&o)["unmapped"]["raw_data_fnv1a128"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn raw_data_option_deserializes_snake_case() {
        let r: RawData = serde_json::from_str("\"drop\"").unwrap();
        assert_eq!(r, RawData::Drop);
    }

    #[test]
    fn change_type_lands_in_unmapped() {
        let n = normalizer();
        let mut m = meta("Whatever");
        m.change_type = Some("alert_added".into());
        let o = n.normalize(&m, br#"{"time":"2026-11-27T09:14:05Z"}"#).unwrap();
        assert_eq!(o.normalized.ocsf()["unmapped"]["change_type"], "alert_added");
        assert!(o.normalized.ocsf()["unmapped"].get("changed_fields").is_none());
        m.change_type = Some("updated".into());
        m.changed_fields = Some(vec!["status".to_string(), "severity".to_string()].into());
        let o = n.normalize(&m, br#"{"time":"2026-11-27T09:14:05Z"}"#).unwrap();
        assert_eq!(
            o.normalized.ocsf()["unmapped"]["changed_fields"],
            serde_json::json!(["status", "severity"])
        );
    }

    #[test]
    fn concurrent_use_from_threads() {
        let n = std::sync::Arc::new(normalizer());
        let rec = r#"{"time":"2026-11-27T09:14:05Z","tenantId":"t"}"#;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let n = n.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        run(&n, "X", rec);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
