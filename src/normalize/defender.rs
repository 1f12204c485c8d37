//! Defender XDR streaming API (`AdvancedHunting-*`): AlertInfo and AlertEvidence → OCSF
//! Detection Finding (2004); IdentityLogonEvents and DeviceLogonEvents → Authentication (3002).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::common::{
    hash_obj, join_path, obs, observe_user, severity_from_text, uid_of, user_obj, Envelope, Obj, UserType,
};
use super::correlate::DetectionKind;
use super::lenient::{decode_embedded, Num, Str};
use super::mitre;
use super::ocsf::{Class, Draft};
use super::seen::{finding_activity, finding_key};
use super::{Ctx, Node, NormalizeError};
use crate::json_text::trim;

/// One advanced hunting row: the union of the AlertInfo, AlertEvidence and *LogonEvents
/// columns used here.
#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct Row<'a> {
    #[serde(default)]
    Timestamp: Str<'a>,
    #[serde(default)]
    AlertId: Str<'a>,
    #[serde(default)]
    Title: Str<'a>,
    #[serde(default)]
    Category: Str<'a>,
    #[serde(default)]
    Categories: Option<&'a RawValue>,
    #[serde(default)]
    Severity: Str<'a>,
    #[serde(default)]
    ServiceSource: Str<'a>,
    #[serde(default)]
    DetectionSource: Str<'a>,
    #[serde(default)]
    AttackTechniques: Option<&'a RawValue>,
    #[serde(default)]
    MachineGroup: Str<'a>,
    #[serde(default)]
    EntityType: Str<'a>,
    #[serde(default)]
    EvidenceRole: Str<'a>,
    #[serde(default)]
    EvidenceDirection: Str<'a>,
    #[serde(default)]
    FileName: Str<'a>,
    #[serde(default)]
    FolderPath: Str<'a>,
    #[serde(default)]
    SHA1: Str<'a>,
    #[serde(default)]
    SHA256: Str<'a>,
    #[serde(default)]
    MD5: Str<'a>,
    #[serde(default)]
    FileSize: Num,
    #[serde(default)]
    ThreatFamily: Str<'a>,
    #[serde(default)]
    RemoteIP: Str<'a>,
    #[serde(default)]
    RemoteUrl: Str<'a>,
    #[serde(default)]
    AccountName: Str<'a>,
    #[serde(default)]
    AccountDomain: Str<'a>,
    #[serde(default)]
    AccountSid: Str<'a>,
    #[serde(default)]
    AccountObjectId: Str<'a>,
    #[serde(default)]
    AccountUpn: Str<'a>,
    #[serde(default)]
    AccountDisplayName: Str<'a>,
    #[serde(default)]
    DeviceId: Str<'a>,
    #[serde(default)]
    DeviceName: Str<'a>,
    #[serde(default)]
    LocalIP: Str<'a>,
    #[serde(default)]
    NetworkMessageId: Str<'a>,
    #[serde(default)]
    EmailSubject: Str<'a>,
    #[serde(default)]
    Application: Str<'a>,
    #[serde(default)]
    ApplicationId: Str<'a>,
    #[serde(default)]
    OAuthApplicationId: Str<'a>,
    #[serde(default)]
    ProcessCommandLine: Str<'a>,
    #[serde(default)]
    RegistryKey: Str<'a>,
    #[serde(default)]
    RegistryValueName: Str<'a>,
    #[serde(default)]
    RegistryValueData: Str<'a>,
    #[serde(default)]
    AdditionalFields: Option<&'a RawValue>,
    #[serde(default)]
    ActionType: Str<'a>,
    #[serde(default)]
    LogonType: Str<'a>,
    #[serde(default)]
    Protocol: Str<'a>,
    #[serde(default)]
    FailureReason: Str<'a>,
    #[serde(default)]
    DeviceType: Str<'a>,
    #[serde(default)]
    OSPlatform: Str<'a>,
    #[serde(default)]
    IPAddress: Str<'a>,
    #[serde(default)]
    Port: Num,
    #[serde(default)]
    DestinationDeviceName: Str<'a>,
    #[serde(default)]
    DestinationIPAddress: Str<'a>,
    #[serde(default)]
    DestinationPort: Num,
    #[serde(default)]
    TargetDeviceName: Str<'a>,
    #[serde(default)]
    TargetAccountDisplayName: Str<'a>,
    #[serde(default)]
    Location: Str<'a>,
    #[serde(default)]
    ISP: Str<'a>,
    #[serde(default)]
    ReportId: Str<'a>,
    #[serde(default)]
    RemoteDeviceName: Str<'a>,
    #[serde(default)]
    RemotePort: Num,
    #[serde(default)]
    IsLocalAdmin: Str<'a>,
    #[serde(default)]
    LogonId: Str<'a>,
}

fn parse<'a>(raw: &'a str) -> Result<(Envelope<'a, Row<'a>>, Row<'a>), NormalizeError> {
    let mut env: Envelope<'a, Row<'a>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let row = env.properties.0.take().unwrap_or_default();
    Ok((env, row))
}

/// The technique texts of `AttackTechniques` (a JSON array inside a string).
fn techniques(raw: Option<&RawValue>) -> Vec<String> {
    match decode_embedded(raw) {
        Some(Value::Array(a)) => a.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) => s.split(',').map(|x| trim(x).to_owned()).collect(),
        _ => Vec::new(),
    }
}

fn finding_base(r: &Row<'_>, categories: &[String]) -> Obj {
    // Only the attacks read the techniques, and a lean normalization builds none.
    let techs = if super::tree::lean() {
        Vec::new()
    } else {
        techniques(r.AttackTechniques)
    };
    let tactic = r.Category.get().or(categories.first().map(String::as_str));
    let mut fi = Obj::new();
    let mut analytic = Obj::new();
    analytic
        .s("name", r.Title.get())
        .v("type_id", 99)
        .v("type", r.DetectionSource.get().unwrap_or("Detector"));
    fi.v("uid", r.AlertId.get().unwrap_or_default())
        .v("title", r.Title.get().unwrap_or("Untitled alert"))
        .arr("types", categories.iter().map(|c| Value::from(c.as_str())).collect())
        .arr("attacks", mitre::attacks(techs.iter().map(String::as_str), tactic))
        .o("analytic", analytic);
    if let Some(ds) = r.DetectionSource.get() {
        fi.v("data_sources", vec![Value::from(ds)]);
    }
    fi
}

fn new_finding(
    ctx: &Ctx<'_>,
    env: &Envelope<'_, Row<'_>>,
    r: &Row<'_>,
) -> Result<(Draft, Option<String>), NormalizeError> {
    let (time, original) = ctx.pick_time(&[("Timestamp", &r.Timestamp), ("time", &env.time)])?;
    let alert_id = r.AlertId.get().ok_or(NormalizeError::MissingField("AlertId"))?;
    let product = r.ServiceSource.get().unwrap_or("Microsoft Defender XDR").to_owned();
    let mut d = Draft::new(Class::DetectionFinding, time, product);
    d.feature = ctx.meta.category.to_string();
    d.original_time = Some(original.to_owned());
    d.entity_key = Some(alert_id.to_owned());
    // The stream carries no alert status; OCSF 1.5.0 findings have no "Unknown" status.
    d.status_id = None;
    d.body.v("is_alert", true).s("message", r.Title.get());
    Ok((d, env.tenant()))
}

/// The row's account: uid (Entra object id, else SID), name (UPN, else account name),
/// display name and domain.
struct Account<'r> {
    uid: Option<&'r str>,
    name: Option<&'r str>,
    full: Option<&'r str>,
    domain: Option<&'r str>,
}

impl Account<'_> {
    /// No detail at all (the OCSF user would be empty).
    fn is_empty(&self) -> bool {
        self.uid.is_none() && self.name.is_none() && self.full.is_none() && self.domain.is_none()
    }
}

/// The row's account, taught to the user restoration cache.
fn account_parts<'r>(ctx: &Ctx<'_>, tenant: Option<&str>, r: &'r Row<'_>) -> Account<'r> {
    ctx.learn_user(
        tenant,
        r.AccountObjectId.get(),
        r.AccountUpn.get(),
        r.AccountDisplayName.get(),
    );
    Account {
        uid: r.AccountObjectId.get().or(r.AccountSid.get()),
        name: r.AccountUpn.get().or(r.AccountName.get()),
        full: r.AccountDisplayName.get(),
        domain: r.AccountDomain.get(),
    }
}

/// The row's account as an OCSF user (Entra object id, else SID, as `uid`), taught to the
/// user restoration cache.
fn account(ctx: &Ctx<'_>, tenant: Option<&str>, r: &Row<'_>) -> Obj {
    let a = account_parts(ctx, tenant, r);
    let mut user = user_obj(a.uid, a.name, a.full, a.domain, UserType::User);
    if r.AccountObjectId.get().is_some() {
        user.s("uid_alt", r.AccountSid.get());
    }
    user
}

pub(crate) fn map_alert_info(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let (env, r) = parse(raw)?;
    let (mut d, tenant) = new_finding(ctx, &env, &r)?;
    let t = tenant.as_deref();
    let alert_id = r.AlertId.get().unwrap_or_default();
    let original = d.original_time.clone().unwrap_or_default();
    d.severity_id = severity_from_text(r.Severity.get());
    d.uid = uid_of(&["defender.AlertInfo", t.unwrap_or(""), alert_id, &original]);
    if !alert_id.is_empty() {
        d.detection = Some((DetectionKind::Alert, alert_id.to_owned()));
    }
    d.activity_id = finding_activity(
        ctx.seen,
        finding_key("defender.alert", ctx.cache_tenant(t), alert_id),
        d.time.ms,
        false,
        ctx.change_type(),
        Some(d.severity_id),
    );
    let cats: Vec<String> = r.Category.owned().into_iter().collect();
    let mut fi = finding_base(&r, &cats);
    fi.i("created_time", Some(d.time.ms));
    d.body.o("finding_info", fi);
    d.tenant = tenant;
    env.unmapped_into(&mut d.unmapped);
    d.unmapped
        .s("MachineGroup", r.MachineGroup.get())
        .s("Severity", r.Severity.get());
    Ok(d)
}

/// `metadata.uid` of an evidence row: the alert, the entity type and every identifying column.
fn evidence_uid(tenant: Option<&str>, alert_id: &str, entity: &str, r: &Row<'_>, original: &str) -> u128 {
    let identity = [
        &r.AccountObjectId,
        &r.AccountSid,
        &r.AccountUpn,
        &r.DeviceId,
        &r.SHA256,
        &r.SHA1,
        &r.FolderPath,
        &r.FileName,
        &r.RemoteIP,
        &r.RemoteUrl,
        &r.NetworkMessageId,
        &r.ProcessCommandLine,
        &r.RegistryKey,
        &r.RegistryValueName,
        &r.ApplicationId,
        &r.OAuthApplicationId,
        &r.LocalIP,
    ]
    .iter()
    .filter_map(|s| s.get())
    .collect::<Vec<_>>()
    .join("|");
    uid_of(&[
        "defender.AlertEvidence",
        tenant.unwrap_or(""),
        alert_id,
        entity,
        &identity,
        original,
    ])
}

/// The alert's categories (`Categories`: a JSON array, or one category, inside a string).
fn categories(r: &Row<'_>) -> Vec<String> {
    match decode_embedded(r.Categories) {
        Some(Value::Array(a)) => a.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) => vec![s],
        _ => Vec::new(),
    }
}

/// The severity an evidence row takes from its alert, when the alert was seen.
fn evidence_severity(ctx: &Ctx<'_>, tenant: Option<&str>, alert_id: &str) -> u8 {
    ctx.seen
        .severity(finding_key("defender.alert", ctx.cache_tenant(tenant), alert_id))
        .unwrap_or(0)
}

pub(crate) fn map_alert_evidence(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let (env, r) = parse(raw)?;
    let (mut d, tenant) = new_finding(ctx, &env, &r)?;
    let t = tenant.as_deref();
    let alert_id = r.AlertId.get().unwrap_or_default();
    let original = d.original_time.clone().unwrap_or_default();
    let entity = r.EntityType.get().unwrap_or("Unknown");
    d.activity_id = 2;
    d.severity_id = evidence_severity(ctx, t, alert_id);
    d.uid = evidence_uid(t, alert_id, entity, &r, &original);
    d.body.o("finding_info", finding_base(&r, &categories(&r)));

    // The evidence row: every populated column is mapped, whatever the EntityType.
    let mut e = Obj::new();
    e.v("name", entity);
    let user = account(ctx, t, &r);
    observe_user(&mut d.observables, "evidences[0].user", &user);
    if entity.eq_ignore_ascii_case("User") && !user.is_empty() {
        let mut actor = Obj::new();
        actor.o("user", user.clone());
        d.body.o("actor", actor);
        d.host_profile = true;
    }
    e.o("user", user);

    let mut device = Obj::new();
    device
        .s("uid", r.DeviceId.get())
        .s("hostname", r.DeviceName.get())
        .s("ip", r.LocalIP.get());
    if !device.is_empty() {
        device.v("type_id", 0);
        d.observables
            .add(obs::HOSTNAME, "evidences[0].device.hostname", r.DeviceName.get());
        if entity.eq_ignore_ascii_case("Machine") {
            d.body.o("device", device.clone());
            d.host_profile = true;
        }
        e.o("device", device);
    }

    let is_process = entity.eq_ignore_ascii_case("Process");
    let file_path = if is_process {
        "evidences[0].process.file"
    } else {
        "evidences[0].file"
    };
    let mut file = Obj::new();
    let mut hashes = Vec::new();
    for (alg, h) in [(1, &r.MD5), (2, &r.SHA1), (3, &r.SHA256)] {
        if let Some(h) = h.get() {
            hashes.push(hash_obj(alg, h));
            d.observables.add(obs::HASH, format!("{file_path}.hashes"), Some(h));
        }
    }
    file.s("name", r.FileName.get())
        .s("path", join_path(r.FolderPath.get(), r.FileName.get()).as_deref())
        .i("size", r.FileSize.i64())
        .arr("hashes", hashes);
    if !file.is_empty() {
        file.v("type_id", 1).c("type", "Regular File");
    }
    let extra = decode_embedded(r.AdditionalFields);
    if is_process {
        let mut p = Obj::new();
        let pid = extra
            .as_ref()
            .and_then(|x| x.get("ProcessId"))
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
        let created = extra
            .as_ref()
            .and_then(|x| x.get("CreationTimeUtc"))
            .and_then(crate::decode::time::parse_time_json)
            .map(|t| t.ms);
        p.i("pid", pid)
            .s("cmd_line", r.ProcessCommandLine.get())
            .s("name", r.FileName.get())
            .i("created_time", created)
            .o("file", file);
        e.o("process", p);
    } else {
        e.o("file", file);
    }
    d.observables
        .add(obs::FILE_NAME, format!("{file_path}.name"), r.FileName.get());
    d.observables.add(
        obs::COMMAND_LINE,
        "evidences[0].process.cmd_line",
        r.ProcessCommandLine.get(),
    );
    // The local and remote addresses of the evidence (ocsf-mapping 5.7).
    let mut src = Obj::new();
    src.s("ip", r.LocalIP.get());
    e.o("src_endpoint", src);
    let mut dst = Obj::new();
    dst.s("ip", r.RemoteIP.get());
    e.o("dst_endpoint", dst);
    d.observables
        .add(obs::IP, "evidences[0].dst_endpoint.ip", r.RemoteIP.get());
    d.observables.add(obs::IP, "evidences[0].device.ip", r.LocalIP.get());
    let mut url = Obj::new();
    url.s("url_string", r.RemoteUrl.get());
    e.o("url", url);
    d.observables
        .add(obs::URL, "evidences[0].url.url_string", r.RemoteUrl.get());
    let mut email = Obj::new();
    email
        .s("uid", r.NetworkMessageId.get())
        .s("subject", r.EmailSubject.get());
    e.o("email", email);
    let mut app = Obj::new();
    app.s("app_name", r.Application.get())
        .s("app_uid", r.ApplicationId.get().or(r.OAuthApplicationId.get()));
    e.o("actor", app);
    let mut data = Obj::new();
    data.s("EntityType", r.EntityType.get())
        .s("EvidenceRole", r.EvidenceRole.get())
        .s("EvidenceDirection", r.EvidenceDirection.get())
        .s("ThreatFamily", r.ThreatFamily.get())
        .s("RegistryKey", r.RegistryKey.get())
        .s("RegistryValueName", r.RegistryValueName.get())
        .s("RegistryValueData", r.RegistryValueData.get())
        .ov("AdditionalFields", extra);
    e.o("data", data);
    d.body.nodes("evidences", vec![Node::Obj(e)]);
    d.tenant = tenant;
    env.unmapped_into(&mut d.unmapped);
    d.unmapped.s("MachineGroup", r.MachineGroup.get());
    Ok(d)
}

#[path = "defender_logon.rs"]
mod logon;
pub(crate) use logon::map_logon;

#[path = "defender_flat.rs"]
mod flat;
pub(crate) use flat::{flat_alert_evidence, flat_logon};

#[cfg(test)]
#[path = "defender_tests.rs"]
mod tests;
