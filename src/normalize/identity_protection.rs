//! Entra ID Protection → OCSF Detection Finding (2004): risk detections (UserRiskEvents,
//! ServicePrincipalRiskEvents, Graph riskDetections / servicePrincipalRiskDetections) and
//! risk states (RiskyUsers, RiskyServicePrincipals, Graph riskyUsers /
//! riskyServicePrincipals, one finding per user or service principal).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::common::{
    obs, observe_user, risk_level, severity_from_risk, time_ms, uid_of, user_obj, Envelope, Obj, SignInLocation,
    UserType,
};
use super::correlate::DetectionKind;
use super::lenient::{key_value_info, Flag, Nest, Seq, Str};
use super::ocsf::{Class, Draft, PROVIDER_GRAPH};
use super::seen::{finding_activity, finding_key};
use super::{Ctx, Node, NormalizeError};
use crate::decode::time::ParsedTime;

const PRODUCT: &str = "Microsoft Entra ID Protection";

/// A user or service principal risk detection (Event Hub `properties` or Graph object).
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Detection<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "tenantId")]
    tenant_id: Str<'a>,
    #[serde(default, rename = "requestId")]
    request_id: Str<'a>,
    #[serde(default, rename = "correlationId")]
    correlation_id: Str<'a>,
    #[serde(default, rename = "riskEventType")]
    risk_event_type: Str<'a>,
    #[serde(default, rename = "riskType")]
    risk_type: Str<'a>,
    #[serde(default, rename = "riskState")]
    risk_state: Str<'a>,
    #[serde(default, rename = "riskLevel")]
    risk_level: Str<'a>,
    #[serde(default, rename = "riskDetail")]
    risk_detail: Str<'a>,
    #[serde(default)]
    source: Str<'a>,
    #[serde(default, rename = "detectionTimingType")]
    timing: Str<'a>,
    #[serde(default)]
    activity: Str<'a>,
    #[serde(default, rename = "ipAddress")]
    ip: Str<'a>,
    #[serde(default)]
    location: Nest<SignInLocation<'a>>,
    #[serde(default, rename = "activityDateTime")]
    activity_time: Str<'a>,
    #[serde(default, rename = "detectedDateTime")]
    detected_time: Str<'a>,
    #[serde(default, rename = "lastUpdatedDateTime")]
    updated_time: Str<'a>,
    #[serde(default, rename = "userId")]
    user_id: Str<'a>,
    #[serde(default, rename = "userDisplayName")]
    user_display_name: Str<'a>,
    #[serde(default, rename = "userPrincipalName")]
    upn: Str<'a>,
    #[serde(default, rename = "userType")]
    user_type: Str<'a>,
    #[serde(default, rename = "appId")]
    app_id: Str<'a>,
    #[serde(default, rename = "servicePrincipalId")]
    sp_id: Str<'a>,
    #[serde(default, rename = "servicePrincipalDisplayName")]
    sp_name: Str<'a>,
    #[serde(default, rename = "keyIds")]
    key_ids: Seq<Str<'a>>,
    #[serde(default, rename = "additionalInfo")]
    additional_info: Option<&'a RawValue>,
    #[serde(default, rename = "tokenIssuerType")]
    token_issuer_type: Str<'a>,
    #[serde(default, rename = "resourceTenantId")]
    resource_tenant: Str<'a>,
    #[serde(default, rename = "homeTenantId")]
    home_tenant: Str<'a>,
    #[serde(default, rename = "crossTenantAccessType")]
    cross_tenant: Str<'a>,
}

/// A risky user or risky service principal state.
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct RiskState<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "tenantId")]
    tenant_id: Str<'a>,
    #[serde(default, rename = "userDisplayName")]
    user_display_name: Str<'a>,
    #[serde(default, rename = "userPrincipalName")]
    upn: Str<'a>,
    #[serde(default, rename = "appId")]
    app_id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default, rename = "servicePrincipalType")]
    sp_type: Str<'a>,
    #[serde(default, rename = "riskLastUpdatedDateTime")]
    updated_time: Str<'a>,
    #[serde(default, rename = "riskState")]
    risk_state: Str<'a>,
    #[serde(default, rename = "riskDetail")]
    risk_detail: Str<'a>,
    #[serde(default, rename = "riskLevel")]
    risk_level: Str<'a>,
    #[serde(default, rename = "isGuest")]
    is_guest: Flag,
    #[serde(default, rename = "isDeleted")]
    is_deleted: Flag,
    #[serde(default, rename = "isProcessing")]
    is_processing: Flag,
    #[serde(default, rename = "isEnabled")]
    is_enabled: Flag,
}

/// `riskState` → finding status_id; closed states → `true`.
fn risk_status(s: Option<&str>) -> (u8, bool) {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("atrisk") => (1, false),
        Some("confirmedcompromised") => (2, false),
        Some("remediated") | Some("dismissed") | Some("confirmedsafe") => (4, true),
        Some("none") | None => (0, false),
        Some(_) => (99, false),
    }
}

/// Severity from `riskLevel`, raised to High for a confirmed compromise.
fn risk_severity(level: Option<&str>, state: Option<&str>) -> u8 {
    let s = severity_from_risk(level);
    if state.is_some_and(|x| x.eq_ignore_ascii_case("confirmedCompromised")) {
        s.max(4)
    } else {
        s
    }
}

pub(crate) fn map_detection_eventhub(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let env: Envelope<'_, Detection<'_>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Detection::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let mut d = detection(ctx, p, &env.time, env.tenant())?;
    env.unmapped_into(&mut d.unmapped);
    if d.correlation_uid.is_none() {
        d.correlation_uid = env.correlation_id.owned();
    }
    Ok(d)
}

pub(crate) fn map_detection_graph(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let p: Detection<'_> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let tenant = p.tenant_id.get().map(str::to_ascii_lowercase);
    let mut d = detection(ctx, &p, &Str::default(), tenant)?;
    d.log_provider = PROVIDER_GRAPH;
    Ok(d)
}

/// What every Identity Protection finding is keyed, dated and rated by.
struct Finding<'p> {
    time: ParsedTime,
    /// The time text as the source gave it.
    original: &'p str,
    id: &'p str,
    tenant: Option<String>,
    /// The finding caches' key prefix (`risk.detection`, `risk.user_state`, ...).
    kind_key: &'static str,
    status_id: u8,
    severity: u8,
    /// Create or Update, from the finding cache.
    activity_id: u8,
}

impl Finding<'_> {
    /// `metadata.uid`.
    fn uid(&self) -> u128 {
        uid_of(&[
            self.kind_key,
            self.tenant.as_deref().unwrap_or(""),
            self.id,
            self.original,
        ])
    }
}

/// A user's UPN and display name as the record gives them, else restored from the user
/// cache by the user's object id (Identity Protection no longer sends them): shared by
/// risk detections and risky users.
#[derive(Default)]
struct Names<'p> {
    upn: Option<Cow<'p, str>>,
    full: Option<Cow<'p, str>>,
    /// The UPN came from the cache.
    restored: bool,
}

impl<'p> Names<'p> {
    fn of(ctx: &Ctx<'_>, t: Option<&str>, uid: Option<&str>, upn: Option<&'p str>, full: Option<&'p str>) -> Self {
        let mut names = Names {
            upn: upn.map(Cow::Borrowed),
            full: full.map(Cow::Borrowed),
            restored: false,
        };
        if names.upn.is_none() {
            if let Some(k) = uid.and_then(|u| ctx.known_user(t, u)) {
                names.upn = k.upn.map(|s| Cow::Owned(String::from(s)));
                names.full = names.full.or(k.display_name.map(|s| Cow::Owned(String::from(s))));
                names.restored = names.upn.is_some();
            }
        }
        names
    }
}

/// What a risk detection's outputs are made of, decided once: the finding caches and the
/// user cache are consulted (and taught) here, for the tree and the flat form alike.
struct DetectionFacts<'p> {
    finding: Finding<'p>,
    is_sp: bool,
    event_type: &'p str,
    title: String,
    /// `additionalInfo` as an object.
    info: Option<Value>,
    /// The user (not a service principal): uid, UPN and display name, the UPN maybe
    /// restored from the cache.
    uid: Option<&'p str>,
    upn: Option<Cow<'p, str>>,
    full: Option<Cow<'p, str>>,
    restored: bool,
}

impl DetectionFacts<'_> {
    fn info_str(&self, k: &str) -> Option<&str> {
        self.info.as_ref()?.get(k)?.as_str()
    }

    /// Who the detection is about, for the message.
    fn subject_name<'s>(&'s self, p: &'s Detection<'_>) -> Option<&'s str> {
        if self.is_sp {
            p.sp_name.get()
        } else {
            self.upn.as_deref().or(self.full.as_deref()).or(self.uid)
        }
    }

    fn message(&self, p: &Detection<'_>) -> String {
        format!(
            "{} for {}",
            self.title,
            self.subject_name(p).unwrap_or("unknown subject")
        )
    }
}

fn detection_facts<'p>(
    ctx: &Ctx<'_>,
    p: &'p Detection<'p>,
    envelope_time: &'p Str<'_>,
    tenant: Option<String>,
) -> Result<DetectionFacts<'p>, NormalizeError> {
    let (time, original) = ctx.pick_time(&[
        ("lastUpdatedDateTime", &p.updated_time),
        ("detectedDateTime", &p.detected_time),
        ("time", envelope_time),
    ])?;
    let id = p.id.get().ok_or(NormalizeError::MissingField("id"))?;
    let t = tenant.as_deref();
    let is_sp = p.sp_id.get().is_some() && p.user_id.get().is_none();
    let kind_key = if is_sp { "risk.sp_detection" } else { "risk.detection" };
    let event_type = p.risk_event_type.get().or(p.risk_type.get()).unwrap_or("unknown");
    let (status_id, closed) = risk_status(p.risk_state.get());
    let activity_id = finding_activity(
        ctx.seen,
        finding_key(kind_key, ctx.cache_tenant(t), id),
        time.ms,
        closed,
        ctx.change_type(),
        None,
    );
    let (mut uid, mut names) = (None, Names::default());
    if !is_sp {
        uid = p.user_id.get();
        if p.upn.get().is_some() {
            ctx.learn_user(t, uid, p.upn.get(), p.user_display_name.get());
        }
        // Its alert (`providerAlertId` = this id) may come without the user.
        ctx.learn_detection(t, id, uid, p.upn.get(), p.user_display_name.get());
        names = Names::of(ctx, t, uid, p.upn.get(), p.user_display_name.get());
    }
    let Names { upn, full, restored } = names;
    Ok(DetectionFacts {
        finding: Finding {
            time,
            original,
            id,
            tenant,
            kind_key,
            status_id,
            severity: risk_severity(p.risk_level.get(), p.risk_state.get()),
            activity_id,
        },
        is_sp,
        event_type,
        title: risk_title(event_type),
        info: key_value_info(p.additional_info),
        uid,
        upn,
        full,
        restored,
    })
}

fn detection(
    ctx: &Ctx<'_>,
    p: &Detection<'_>,
    envelope_time: &Str<'_>,
    tenant: Option<String>,
) -> Result<Draft, NormalizeError> {
    let f = detection_facts(ctx, p, envelope_time, tenant)?;
    let (id, event_type, title) = (f.finding.id, f.event_type, f.title.clone());
    let mut d = Draft::new(Class::DetectionFinding, f.finding.time, PRODUCT);
    d.original_time = Some(f.finding.original.to_owned());
    d.feature = ctx.meta.category.to_string();
    d.severity_id = f.finding.severity;
    d.status_id = Some(f.finding.status_id);
    d.status = p.risk_state.owned();
    d.correlation_uid = p.correlation_id.owned();
    d.uid = f.finding.uid();
    d.detection = Some((DetectionKind::Risk, id.to_owned()));
    d.activity_id = f.finding.activity_id;
    d.entity_key = Some(id.to_owned());
    d.body.v("is_alert", true);
    if let Some((rid, caption)) = risk_level(p.risk_level.get()) {
        d.body.v("risk_level_id", rid).v("risk_level", caption);
    }

    let mut fi = Obj::new();
    let mut types = Vec::new();
    types.push(Value::from(event_type));
    if let Some(tm) = p.timing.get() {
        types.push(Value::from(tm));
    }
    let mut analytic = Obj::new();
    analytic
        .v("uid", event_type)
        .v("name", title.clone())
        .v("type_id", 99)
        .c("type", "Risk detection");
    fi.v("uid", id)
        .v("title", title)
        .arr("types", types)
        .i("created_time", super::common::time_ms(&p.detected_time))
        .i("modified_time", time_ms(&p.updated_time))
        .i("first_seen_time", time_ms(&p.activity_time))
        .i("last_seen_time", time_ms(&p.activity_time))
        .o("analytic", analytic)
        .s("src_url", f.info_str("alertUrl"));
    if let Some(s) = p.source.get() {
        fi.v("data_sources", vec![Value::from(s)]);
    }
    d.body.o("finding_info", fi);

    // Subject.
    let mut actor = Obj::new();
    if f.is_sp {
        let user = user_obj(p.sp_id.get(), p.sp_name.get(), None, None, UserType::ServicePrincipal);
        actor.s("app_uid", p.app_id.get()).s("app_name", p.sp_name.get());
        actor.o("user", user);
    } else {
        if f.restored {
            d.unmapped.c("user_restored_from", "cache");
        }
        let user = user_obj(f.uid, f.upn.as_deref(), f.full.as_deref(), None, UserType::User);
        observe_user(&mut d.observables, "actor.user", &user);
        actor.o("user", user);
    }
    d.body.o("actor", actor);
    d.host_profile = true;
    d.body.v("message", f.message(p));

    let mut ev = Obj::new();
    let mut src = Obj::new();
    src.s("ip", p.ip.get());
    if let Some(l) = p.location.as_ref() {
        src.o("location", l.to_obj());
    }
    ev.o("src_endpoint", src);
    let mut http = Obj::new();
    http.s("user_agent", f.info_str("userAgent"));
    ev.o("http_request", http);
    if !ev.is_empty() {
        d.body.nodes("evidences", vec![Node::Obj(ev)]);
        d.observables.add(obs::IP, "evidences[0].src_endpoint.ip", p.ip.get());
    }

    let key_ids = super::common::str_list(p.key_ids.0.iter());
    d.unmapped
        .s("riskEventType", Some(event_type))
        .s("riskDetail", p.risk_detail.get())
        .s("activity", p.activity.get())
        .s("requestId", p.request_id.get())
        .s("tokenIssuerType", p.token_issuer_type.get())
        .s("userType", p.user_type.get())
        .s("crossTenantAccessType", p.cross_tenant.get())
        .s("resourceTenantId", p.resource_tenant.get())
        .s("homeTenantId", p.home_tenant.get())
        .arr("keyIds", key_ids);
    d.tenant = f.finding.tenant;
    d.unmapped.ov("additionalInfo", f.info);
    Ok(d)
}

pub(crate) fn map_state_eventhub(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let env: Envelope<'_, RiskState<'_>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = RiskState::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let is_sp = ctx.meta.category.as_ref() == "RiskyServicePrincipals";
    let mut d = state(ctx, p, &env.time, env.tenant(), is_sp)?;
    env.unmapped_into(&mut d.unmapped);
    Ok(d)
}

pub(crate) fn map_state_graph(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let p: RiskState<'_> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let tenant = p.tenant_id.get().map(str::to_ascii_lowercase);
    let is_sp = ctx.meta.category.as_ref() == "GraphRiskyServicePrincipal";
    let mut d = state(ctx, &p, &Str::default(), tenant, is_sp)?;
    d.log_provider = PROVIDER_GRAPH;
    Ok(d)
}

/// What a risk state's outputs are made of, decided once (caches consulted and taught here).
struct StateFacts<'p> {
    finding: Finding<'p>,
    is_sp: bool,
    prefix: &'static str,
    title: &'static str,
    at_risk: bool,
    /// A user's UPN (maybe restored from the cache) and display name.
    upn: Option<Cow<'p, str>>,
    full: Option<Cow<'p, str>>,
    restored: bool,
}

impl StateFacts<'_> {
    fn finding_uid(&self) -> String {
        format!("{}:{}", self.prefix, self.finding.id)
    }

    fn message(&self, p: &RiskState<'_>) -> String {
        let name = if self.is_sp {
            p.display_name.get().unwrap_or(self.finding.id)
        } else {
            self.upn.as_deref().or(self.full.as_deref()).unwrap_or(self.finding.id)
        };
        format!(
            "{} {name}: {} (risk level {})",
            self.title,
            p.risk_state.get().unwrap_or("unknown"),
            p.risk_level.get().unwrap_or("unknown")
        )
    }

    /// The managed identity or service principal kind of a risky service principal.
    fn sp_kind(p: &RiskState<'_>) -> UserType {
        if p.sp_type.is("ManagedIdentity") {
            UserType::ManagedIdentity
        } else {
            UserType::ServicePrincipal
        }
    }
}

fn state_facts<'p>(
    ctx: &Ctx<'_>,
    p: &'p RiskState<'p>,
    envelope_time: &'p Str<'_>,
    tenant: Option<String>,
    is_sp: bool,
) -> Result<StateFacts<'p>, NormalizeError> {
    let (time, original) = ctx.pick_time(&[("riskLastUpdatedDateTime", &p.updated_time), ("time", envelope_time)])?;
    let id = p.id.get().ok_or(NormalizeError::MissingField("id"))?;
    let t = tenant.as_deref();
    let (prefix, kind_key, title) = if is_sp {
        ("riskySp", "risk.sp_state", "Risky service principal")
    } else {
        ("riskyUser", "risk.user_state", "Risky user")
    };
    let state = p.risk_state.get();
    let at_risk =
        state.is_some_and(|s| s.eq_ignore_ascii_case("atRisk") || s.eq_ignore_ascii_case("confirmedCompromised"));
    let (status_id, _) = risk_status(state);
    let activity_id = finding_activity(
        ctx.seen,
        finding_key(kind_key, ctx.cache_tenant(t), id),
        time.ms,
        !at_risk,
        ctx.change_type(),
        None,
    );
    let mut names = Names::default();
    if !is_sp {
        ctx.learn_user(t, Some(id), p.upn.get(), p.user_display_name.get());
        names = Names::of(ctx, t, Some(id), p.upn.get(), p.user_display_name.get());
    }
    let Names { upn, full, restored } = names;
    Ok(StateFacts {
        finding: Finding {
            time,
            original,
            id,
            tenant,
            kind_key,
            status_id,
            severity: risk_severity(p.risk_level.get(), state),
            activity_id,
        },
        is_sp,
        prefix,
        title,
        at_risk,
        upn,
        full,
        restored,
    })
}

fn state(
    ctx: &Ctx<'_>,
    p: &RiskState<'_>,
    envelope_time: &Str<'_>,
    tenant: Option<String>,
    is_sp: bool,
) -> Result<Draft, NormalizeError> {
    let f = state_facts(ctx, p, envelope_time, tenant, is_sp)?;
    let id = f.finding.id;
    let mut d = Draft::new(Class::DetectionFinding, f.finding.time, PRODUCT);
    d.original_time = Some(f.finding.original.to_owned());
    d.feature = ctx.meta.category.to_string();
    d.severity_id = f.finding.severity;
    d.status_id = Some(f.finding.status_id);
    d.status = p.risk_state.owned();
    d.uid = f.finding.uid();
    d.activity_id = f.finding.activity_id;
    d.entity_key = Some(f.finding_uid());
    d.body.v("is_alert", f.at_risk);
    if let Some((rid, caption)) = risk_level(p.risk_level.get()) {
        d.body.v("risk_level_id", rid).v("risk_level", caption);
    }
    let mut fi = Obj::new();
    fi.v("uid", f.finding_uid())
        .v("title", f.title)
        .v("types", vec![Value::from(f.prefix)])
        .i("modified_time", Some(f.finding.time.ms))
        .s("desc", p.risk_detail.get());
    d.body.o("finding_info", fi);

    let mut actor = Obj::new();
    if f.is_sp {
        actor
            .s("app_uid", p.app_id.get())
            .s("app_name", p.display_name.get())
            .o(
                "user",
                user_obj(Some(id), p.display_name.get(), None, None, StateFacts::sp_kind(p)),
            );
    } else {
        if f.restored {
            d.unmapped.c("user_restored_from", "cache");
        }
        let user = user_obj(Some(id), f.upn.as_deref(), f.full.as_deref(), None, UserType::User);
        observe_user(&mut d.observables, "actor.user", &user);
        actor.o("user", user);
    }
    d.body.o("actor", actor);
    d.host_profile = true;
    d.body.v("message", f.message(p));
    d.tenant = f.finding.tenant;
    d.unmapped
        .s("riskDetail", p.risk_detail.get())
        .s("servicePrincipalType", p.sp_type.get())
        .b("isGuest", p.is_guest.0)
        .b("isDeleted", p.is_deleted.0)
        .b("isProcessing", p.is_processing.0)
        .b("isEnabled", p.is_enabled.0);
    Ok(d)
}

#[path = "identity_protection_flat.rs"]
mod flat;
#[path = "identity_protection_titles.rs"]
mod titles;
pub(crate) use flat::{flat_detection_eventhub, flat_state_eventhub};
pub(crate) use titles::risk_title;

#[cfg(test)]
#[path = "identity_protection_tests.rs"]
mod tests;
