//! Microsoft Graph security incidents → OCSF Incident Finding (2005) and Graph security
//! alerts (alerts_v2, inside an incident or alone) → OCSF Detection Finding (2004).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::common::{observe_user, severity_from_text, str_list, time_ms, uid_of, Obj, Observables};
use super::correlate::DetectionKind;
use super::graph_evidence::{account_obj, learn_users, map_evidence, PickedUser};
use super::lenient::{Nest, Num, Seq, Str};
use super::mitre;
use super::ocsf::{Class, Draft, PROVIDER_GRAPH};
use super::seen::{finding_activity, finding_key};
use super::{Ctx, NormalizeError};
use crate::decode::time::ParsedTime;

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Incident<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "tenantId")]
    tenant_id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default)]
    description: Str<'a>,
    #[serde(default)]
    summary: Str<'a>,
    #[serde(default, rename = "createdDateTime")]
    created: Str<'a>,
    #[serde(default, rename = "lastUpdateDateTime")]
    updated: Str<'a>,
    #[serde(default, rename = "assignedTo")]
    assigned_to: Str<'a>,
    #[serde(default)]
    classification: Str<'a>,
    #[serde(default)]
    determination: Str<'a>,
    #[serde(default)]
    severity: Str<'a>,
    #[serde(default)]
    status: Str<'a>,
    #[serde(default, rename = "redirectIncidentId")]
    redirect_id: Str<'a>,
    #[serde(default, rename = "incidentWebUrl")]
    web_url: Str<'a>,
    #[serde(default, rename = "customTags")]
    custom_tags: Seq<Str<'a>>,
    #[serde(default, rename = "systemTags")]
    system_tags: Seq<Str<'a>>,
    #[serde(default)]
    tags: Seq<Str<'a>>,
    #[serde(default)]
    comments: Option<&'a RawValue>,
    #[serde(default, rename = "resolvingComment")]
    resolving_comment: Str<'a>,
    #[serde(default, rename = "lastModifiedBy")]
    last_modified_by: Str<'a>,
    #[serde(default, rename = "priorityScore")]
    priority_score: Num,
    #[serde(default)]
    alerts: Seq<Nest<Alert<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Alert<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "providerAlertId")]
    provider_alert_id: Str<'a>,
    #[serde(default, rename = "incidentId")]
    incident_id: Str<'a>,
    #[serde(default)]
    status: Str<'a>,
    #[serde(default)]
    severity: Str<'a>,
    #[serde(default)]
    classification: Str<'a>,
    #[serde(default)]
    determination: Str<'a>,
    #[serde(default, rename = "serviceSource")]
    service_source: Str<'a>,
    #[serde(default, rename = "detectionSource")]
    detection_source: Str<'a>,
    #[serde(default, rename = "productName")]
    product_name: Str<'a>,
    #[serde(default, rename = "detectorId")]
    detector_id: Str<'a>,
    #[serde(default, rename = "tenantId")]
    tenant_id: Str<'a>,
    #[serde(default)]
    title: Str<'a>,
    #[serde(default)]
    description: Str<'a>,
    #[serde(default, rename = "recommendedActions")]
    recommended_actions: Str<'a>,
    #[serde(default)]
    category: Str<'a>,
    #[serde(default, rename = "assignedTo")]
    assigned_to: Str<'a>,
    #[serde(default, rename = "alertWebUrl")]
    web_url: Str<'a>,
    #[serde(default, rename = "incidentWebUrl")]
    incident_web_url: Str<'a>,
    #[serde(default, rename = "actorDisplayName")]
    actor_display_name: Str<'a>,
    #[serde(default, rename = "threatDisplayName")]
    threat_display_name: Str<'a>,
    #[serde(default, rename = "threatFamilyName")]
    threat_family_name: Str<'a>,
    #[serde(default, rename = "mitreTechniques")]
    mitre: Seq<Str<'a>>,
    #[serde(default, rename = "createdDateTime")]
    created: Str<'a>,
    #[serde(default, rename = "lastUpdateDateTime")]
    updated: Str<'a>,
    #[serde(default, rename = "resolvedDateTime")]
    resolved: Str<'a>,
    #[serde(default, rename = "firstActivityDateTime")]
    first_activity: Str<'a>,
    #[serde(default, rename = "lastActivityDateTime")]
    last_activity: Str<'a>,
    #[serde(default, rename = "alertPolicyId")]
    alert_policy_id: Str<'a>,
    #[serde(default, rename = "investigationState")]
    investigation_state: Str<'a>,
    #[serde(default, rename = "systemTags")]
    system_tags: Seq<Str<'a>>,
    #[serde(default, rename = "customDetails")]
    custom_details: Option<&'a RawValue>,
    #[serde(default, rename = "additionalData")]
    additional_data: Option<&'a RawValue>,
    #[serde(default)]
    comments: Option<&'a RawValue>,
    #[serde(default)]
    evidence: Seq<&'a RawValue>,
}

/// Product display name of a Graph `serviceSource`.
fn service_product(s: Option<&str>) -> &'static str {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("microsoftdefenderforendpoint") => "Microsoft Defender for Endpoint",
        Some("microsoftdefenderforidentity") => "Microsoft Defender for Identity",
        Some("microsoftdefenderforcloudapps") => "Microsoft Defender for Cloud Apps",
        Some("microsoftdefenderforoffice365") => "Microsoft Defender for Office 365",
        Some("azureadidentityprotection") => "Microsoft Entra ID Protection",
        Some("microsoftappgovernance") => "App governance",
        Some("datalossprevention") => "Microsoft Purview Data Loss Prevention",
        Some("microsoftdefenderforcloud") => "Microsoft Defender for Cloud",
        Some("microsoftsentinel") => "Microsoft Sentinel",
        Some("microsoftinsiderriskmanagement") => "Microsoft Purview Insider Risk Management",
        Some("microsoftthreatintelligence") => "Microsoft Defender Threat Intelligence",
        _ => "Microsoft Defender XDR",
    }
}

/// `classification` → OCSF `verdict_id` and caption.
fn verdict(c: Option<&str>) -> Option<(u8, String)> {
    let c = c?;
    Some(match c.to_ascii_lowercase().as_str() {
        "unknown" => (0, "Unknown".into()),
        "falsepositive" => (1, "False Positive".into()),
        "truepositive" => (2, "True Positive".into()),
        "informationalexpectedactivity" => (5, "Benign".into()),
        _ => (99, c.to_owned()),
    })
}

/// Alert `status` → finding status_id; `resolved` closes.
fn alert_status(s: Option<&str>) -> (u8, bool) {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("new") => (1, false),
        Some("inprogress") => (2, false),
        Some("resolved") => (4, true),
        Some("unknown") | None => (0, false),
        Some(_) => (99, false),
    }
}

/// Incident `status` → incident status_id; `resolved` and `redirected` close.
fn incident_status(s: Option<&str>) -> (u8, bool) {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("active") => (1, false),
        Some("inprogress") => (2, false),
        Some("awaitingaction") => (3, false),
        Some("resolved") => (4, true),
        Some("redirected") => (5, true),
        None => (0, false),
        Some(_) => (99, false),
    }
}

fn alert_attacks(a: &Alert<'_>) -> Vec<Value> {
    mitre::attacks(a.mitre.0.iter().filter_map(|s| s.get()), a.category.get())
}

fn labels(lists: &[&Seq<Str<'_>>]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for l in lists {
        for v in str_list(l.0.iter()) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// `finding_info` of an alert (also used in an incident's `finding_info_list`).
fn finding_info(a: &Alert<'_>) -> Obj {
    let mut fi = Obj::new();
    let mut types = Vec::new();
    if let Some(c) = a.category.get() {
        types.push(Value::from(c));
    }
    if let Some(s) = a.service_source.get() {
        types.push(Value::from(s));
    }
    let mut analytic = Obj::new();
    analytic
        .s("uid", a.detector_id.get())
        .s("name", a.title.get())
        .v("type_id", 99)
        .v("type", a.detection_source.get().unwrap_or("Detector"));
    fi.v("uid", a.id.get().unwrap_or_default())
        .v("title", a.title.get().unwrap_or("Untitled alert"))
        .s("desc", a.description.get())
        .i("created_time", time_ms(&a.created))
        .i("modified_time", time_ms(&a.updated))
        .i("first_seen_time", time_ms(&a.first_activity))
        .i("last_seen_time", time_ms(&a.last_activity))
        .s("src_url", a.web_url.get())
        .s("uid_alt", a.provider_alert_id.get())
        .arr("types", types)
        .arr("attacks", alert_attacks(a))
        .o("analytic", analytic);
    if let Some(ds) = a.detection_source.get() {
        fi.v("data_sources", vec![Value::from(ds)]);
    }
    fi
}

/// The first activity of an incident's alerts and the last.
fn alert_span(inc: &Incident<'_>) -> (Option<i64>, Option<i64>) {
    let alerts = || inc.alerts.0.iter().filter_map(|a| a.as_ref());
    (
        alerts().filter_map(|a| time_ms(&a.first_activity)).min(),
        alerts().filter_map(|a| time_ms(&a.last_activity)).max(),
    )
}

/// `status_detail` of a redirected incident.
fn redirected(inc: &Incident<'_>, status_id: u8) -> Option<String> {
    let r = inc.redirect_id.get().filter(|_| status_id == 5)?;
    Some(format!("redirected to {r}"))
}

pub(crate) fn map_incident(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let inc: Incident<'_> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let (time, original) = ctx.pick_time(&[("lastUpdateDateTime", &inc.updated), ("createdDateTime", &inc.created)])?;
    let id = inc.id.get().ok_or(NormalizeError::MissingField("id"))?;
    let tenant = inc.tenant_id.get().map(str::to_ascii_lowercase);
    let t = tenant.as_deref();
    let (status_id, closed) = incident_status(inc.status.get());
    let severity = severity_from_text(inc.severity.get());

    let mut d = Draft::new(Class::IncidentFinding, time, "Microsoft Defender XDR");
    d.log_provider = PROVIDER_GRAPH;
    d.feature = "security/incidents".to_owned();
    d.original_time = Some(original.to_owned());
    d.severity_id = severity;
    d.status_id = Some(status_id);
    d.status = inc.status.owned();
    d.uid = uid_of(&["graph.incident", t.unwrap_or(""), id, original]);
    d.activity_id = finding_activity(
        ctx.seen,
        finding_key("graph.incident", ctx.cache_tenant(t), id),
        time.ms,
        closed,
        ctx.change_type(),
        None,
    );
    d.entity_key = Some(id.to_owned());
    d.labels = labels(&[&inc.custom_tags, &inc.system_tags, &inc.tags]);
    d.body
        .s("message", inc.display_name.get())
        .s("desc", inc.description.get().or(inc.summary.get()))
        .s("src_url", inc.web_url.get())
        .s("comment", inc.resolving_comment.get());
    if let Some(detail) = redirected(&inc, status_id) {
        d.body.v("status_detail", detail);
    }
    if let Some((vid, vcap)) = verdict(inc.classification.get()) {
        d.body.v("verdict_id", vid).v("verdict", vcap);
    }
    if let Some(impact) = match severity {
        2 => Some((1, "Low")),
        3 => Some((2, "Medium")),
        4 => Some((3, "High")),
        5 => Some((4, "Critical")),
        _ => None,
    } {
        d.body.v("impact_id", impact.0).v("impact", impact.1);
    }
    if let Some(a) = inc.assigned_to.get() {
        let mut u = Obj::new();
        u.v("name", a);
        if a.contains('@') {
            u.v("email_addr", a);
        }
        d.body.o("assignee", u);
    } else {
        // OCSF 1.5.0 requires `assignee` or `assignee_group`; Defender's queue calls an
        // incident without assignee "Unassigned".
        let mut g = Obj::new();
        g.c("name", "Unassigned");
        d.body.o("assignee_group", g);
    }

    // Alerts: finding_info_list, attacks, time span, observables (users are learned).
    let mut list = Vec::new();
    let mut attacks: Vec<Value> = Vec::new();
    let mut observables = Observables::default();
    let (start, end) = alert_span(&inc);
    for a in inc.alerts.0.iter().filter_map(|a| a.as_ref()) {
        list.push(finding_info(a).into_value());
        for at in alert_attacks(a) {
            if !attacks.contains(&at) {
                attacks.push(at);
            }
        }
        let at = a.tenant_id.get().map(str::to_ascii_lowercase);
        let tenant = at.as_deref().or(t);
        if super::tree::lean() {
            // A lean tree has no observables: only the users are learned.
            learn_users(ctx, tenant, &a.evidence.0);
        } else {
            observables.extend(map_evidence(ctx, tenant, &a.evidence.0).observables);
        }
    }
    d.body
        .v("finding_info_list", list)
        .arr("attacks", attacks)
        .i("start_time", start)
        .i("end_time", end);
    d.observables = observables;
    d.tenant = tenant;
    d.unmapped
        .s("determination", inc.determination.get())
        .s("classification", inc.classification.get())
        .s("assignedTo", inc.assigned_to.get())
        .ov("priorityScore", inc.priority_score.value())
        .s("lastModifiedBy", inc.last_modified_by.get())
        .s("redirectIncidentId", inc.redirect_id.get())
        .i("created_time", time_ms(&inc.created))
        .embedded("comments", inc.comments);
    Ok(d)
}

/// What an alert's tree and flat form share: its time, id, tenant, status, product, uid,
/// activity (the seen-findings cache is consulted once) and entity key.
struct AlertFacts<'r> {
    time: ParsedTime,
    original: &'r str,
    id: &'r str,
    tenant: Option<String>,
    status_id: u8,
    product: String,
    uid: u128,
    activity_id: u8,
    entity_key: Option<String>,
}

fn alert_facts<'r>(ctx: &Ctx<'_>, a: &'r Alert<'r>) -> Result<AlertFacts<'r>, NormalizeError> {
    let (time, original) = ctx.pick_time(&[("lastUpdateDateTime", &a.updated), ("createdDateTime", &a.created)])?;
    let id = a.id.get().ok_or(NormalizeError::MissingField("id"))?;
    let tenant = a.tenant_id.get().map(str::to_ascii_lowercase);
    let t = tenant.as_deref();
    let (status_id, closed) = alert_status(a.status.get());
    let activity_id = finding_activity(
        ctx.seen,
        finding_key("graph.alert", ctx.cache_tenant(t), id),
        time.ms,
        closed,
        ctx.change_type(),
        None,
    );
    Ok(AlertFacts {
        time,
        original,
        id,
        status_id,
        product: a
            .product_name
            .owned()
            .unwrap_or_else(|| service_product(a.service_source.get()).to_owned()),
        uid: uid_of(&["graph.alert", t.unwrap_or(""), id, original]),
        activity_id,
        entity_key: ctx
            .meta
            .entity_key
            .as_deref()
            .map(str::to_owned)
            .or_else(|| a.incident_id.owned())
            .or_else(|| Some(id.to_owned())),
        tenant,
    })
}

/// An Identity Protection alert's `providerAlertId` is its risk detection's id: the user
/// when the evidence lost it (reference: graph-security-api §8).
fn risk_detection<'r>(a: &'r Alert<'_>) -> Option<&'r str> {
    let from_ip = [a.service_source.get(), a.detection_source.get()]
        .iter()
        .any(|s| s.is_some_and(|s| s.eq_ignore_ascii_case("azureAdIdentityProtection")));
    a.provider_alert_id.get().filter(|_| from_ip)
}

pub(crate) fn map_alert(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let a: Alert<'_> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let f = alert_facts(ctx, &a)?;
    let t = f.tenant.as_deref();
    let mut d = Draft::new(Class::DetectionFinding, f.time, f.product);
    d.log_provider = PROVIDER_GRAPH;
    d.feature = "security/alerts_v2".to_owned();
    d.original_time = Some(f.original.to_owned());
    d.severity_id = severity_from_text(a.severity.get());
    d.status_id = Some(f.status_id);
    d.status = a.status.owned();
    d.uid = f.uid;
    d.detection = Some((DetectionKind::Alert, f.id.to_owned()));
    d.activity_id = f.activity_id;
    d.entity_key = f.entity_key;
    d.labels = labels(&[&a.system_tags]);
    d.body
        .v("is_alert", true)
        .s("message", a.title.get())
        .o("finding_info", finding_info(&a));

    let ev = map_evidence(ctx, t, &a.evidence.0);
    d.observables = ev.observables;
    d.body.arr("evidences", ev.evidences);
    if let Some(dev) = ev.device {
        d.body.o("device", dev);
        d.host_profile = true;
    }
    if let Some((u, from)) = restore(ctx, t, ev.user, risk_detection(&a)) {
        if let Some(from) = from {
            d.unmapped.c("user_restored_from", from);
        }
        let user = account_obj(
            u.uid.as_deref(),
            u.upn.as_deref().or(u.account_name.as_deref()),
            u.display_name.as_deref(),
            u.domain.as_deref(),
            u.sid.as_deref(),
        );
        observe_user(&mut d.observables, "actor.user", &user);
        let mut actor = Obj::new();
        actor.o("user", user);
        d.body.o("actor", actor);
        d.host_profile = true;
    }

    d.tenant = f.tenant;
    d.unmapped
        .s("incidentId", a.incident_id.get())
        .s("classification", a.classification.get())
        .s("determination", a.determination.get())
        .s("investigationState", a.investigation_state.get())
        .s("recommendedActions", a.recommended_actions.get())
        .s("serviceSource", a.service_source.get())
        .s("detectionSource", a.detection_source.get())
        .s("assignedTo", a.assigned_to.get())
        .s("actorDisplayName", a.actor_display_name.get())
        .s("threatDisplayName", a.threat_display_name.get())
        .s("threatFamilyName", a.threat_family_name.get())
        .s("alertPolicyId", a.alert_policy_id.get())
        .s("incidentWebUrl", a.incident_web_url.get())
        .i("resolved_time", time_ms(&a.resolved))
        .embedded("customDetails", a.custom_details)
        .embedded("additionalData", a.additional_data)
        .embedded("comments", a.comments);
    Ok(d)
}

/// The alert's user, with UPN and display name restored from the cache when only the object
/// id is present (`"cache"`, for `unmapped.user_restored_from`), else, for an alert of a
/// risk `detection` (its id), the user that detection was about (`"risk_detection"`).
/// `None` when nothing names a user.
fn restore(
    ctx: &Ctx<'_>,
    tenant: Option<&str>,
    picked: Option<PickedUser>,
    detection: Option<&str>,
) -> Option<(PickedUser, Option<&'static str>)> {
    let had = picked.is_some();
    let mut u = picked.unwrap_or_default();
    let unnamed = |u: &PickedUser| u.upn.is_none() && u.display_name.is_none();
    let mut from = None;
    let by_id = |u: &mut PickedUser| {
        if let Some(k) = u.uid.as_deref().and_then(|id| ctx.known_user(tenant, id)) {
            u.upn = k.upn.map(String::from);
            u.display_name = k.display_name.map(String::from);
        }
    };
    if unnamed(&u) {
        by_id(&mut u);
        from = (!unnamed(&u)).then_some("cache");
    }
    if unnamed(&u) && u.account_name.is_none() {
        if let Some(k) = detection.and_then(|id| ctx.known_detection(tenant, id)) {
            // Never against the evidence: its object id, where it has one, must match.
            let agrees = match (u.uid.as_deref(), k.uid.as_deref()) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            };
            if agrees {
                u.uid = u.uid.or(k.uid.map(String::from));
                u.upn = k.upn.map(String::from);
                u.display_name = k.display_name.map(String::from);
                if unnamed(&u) {
                    by_id(&mut u);
                }
                from = Some("risk_detection");
            }
        }
    }
    (had || from.is_some()).then_some((u, from))
}

#[path = "graph_flat.rs"]
mod flat;
pub(crate) use flat::flat_alert;

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
