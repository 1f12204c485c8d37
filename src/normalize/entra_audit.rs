//! Entra ID AuditLogs → OCSF Account Change (3001) for user lifecycle, credential and role
//! assignment activities, Entity Management (3004) for everything else; ProvisioningLogs →
//! Entity Management.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::common::{obs, observe_user, uid_of, user_obj, Envelope, Obj, UserType};
use super::lenient::{decode_embedded, key_value_object, Nest, Seq, Str};
use super::ocsf::{Class, Draft};
use super::{Ctx, Node, NormalizeError};
use crate::json_text::trim;

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Audit<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default)]
    category: Str<'a>,
    #[serde(default, rename = "correlationId")]
    correlation_id: Str<'a>,
    #[serde(default)]
    result: Str<'a>,
    #[serde(default, rename = "resultReason")]
    result_reason: Str<'a>,
    #[serde(default, rename = "activityDisplayName")]
    activity: Str<'a>,
    #[serde(default, rename = "activityDateTime")]
    activity_time: Str<'a>,
    #[serde(default, rename = "loggedByService")]
    logged_by: Str<'a>,
    #[serde(default, rename = "operationType")]
    operation_type: Str<'a>,
    #[serde(default, rename = "initiatedBy")]
    initiated_by: Nest<InitiatedBy<'a>>,
    #[serde(default, rename = "targetResources")]
    targets: Seq<Nest<Target<'a>>>,
    #[serde(default, rename = "additionalDetails")]
    additional_details: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct InitiatedBy<'a> {
    #[serde(default)]
    user: Nest<InitUser<'a>>,
    #[serde(default)]
    app: Nest<InitApp<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct InitUser<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default, rename = "userPrincipalName")]
    upn: Str<'a>,
    #[serde(default, rename = "ipAddress")]
    ip: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct InitApp<'a> {
    #[serde(default, rename = "appId")]
    app_id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default, rename = "servicePrincipalId")]
    sp_id: Str<'a>,
    #[serde(default, rename = "servicePrincipalName")]
    sp_name: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Target<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default, rename = "type")]
    kind: Str<'a>,
    #[serde(default, rename = "userPrincipalName")]
    upn: Str<'a>,
    #[serde(default, rename = "modifiedProperties")]
    modified: Seq<Nest<Modified<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Modified<'a> {
    #[serde(default, rename = "displayName")]
    name: Str<'a>,
    #[serde(default, rename = "oldValue")]
    old: Option<&'a RawValue>,
    #[serde(default, rename = "newValue")]
    new: Option<&'a RawValue>,
}

/// Account Change activity for an audit activity name, when it is an account activity.
/// Role assignment activities map to Attach/Detach Policy (the role is the policy).
fn account_activity(name: &str) -> Option<u8> {
    let n = trim(name).to_ascii_lowercase();
    let n = n.as_str();
    Some(match n {
        "add user" | "create user" | "invite external user" => 1,
        "enable account" | "enable user" => 2,
        "change user password" | "change password (self-service)" => 3,
        "reset user password"
        | "reset password (self-service)"
        | "reset password (by admin)"
        | "set force change user password" => 4,
        "disable account" | "disable user" => 5,
        "delete user" | "hard delete user" => 6,
        "unlock user" | "unblock user" => 12,
        _ if n.starts_with("add ") && n.contains("member to role") => 7,
        _ if n.starts_with("remove ") && n.contains("member from role") => 8,
        _ if n.contains("registered security info") || n.contains("registered all required security info") => 10,
        _ if n.contains("deleted security info") => 11,
        _ => return None,
    })
}

/// Entity Management activity from `operationType` and the activity name.
fn entity_activity(op: Option<&str>, name: &str) -> (u8, Option<String>) {
    let n = trim(name).to_ascii_lowercase();
    if n.starts_with("enable ") {
        return (8, None);
    }
    if n.starts_with("disable ") {
        return (9, None);
    }
    match op.map(str::to_ascii_lowercase).as_deref() {
        Some("add") | Some("create") => (1, None),
        Some("update") | Some("assign") | Some("unassign") => (3, None),
        Some("delete") => (4, None),
        Some(other) => (99, Some(other.to_owned())),
        None => (99, Some(trim(name).to_owned())),
    }
}

/// `managed_entity.type_id` from an audit target type.
fn entity_type_id(t: Option<&str>) -> u8 {
    match t.map(str::to_ascii_lowercase).as_deref() {
        Some("device") => 1,
        Some("user") => 2,
        Some("group") => 3,
        Some("organization") | Some("directory") => 4,
        Some("policy") => 5,
        _ => 99,
    }
}

/// `result` → status_id (success 1, failure/timeout 2, else 0).
fn result_status(r: Option<&str>) -> u8 {
    match r.map(str::to_ascii_lowercase).as_deref() {
        Some("success") => 1,
        Some("failure") | Some("timeout") => 2,
        _ => 0,
    }
}

fn modified_list(t: &Target<'_>) -> Vec<Node> {
    t.modified
        .0
        .iter()
        .filter_map(|m| m.as_ref())
        .map(|m| {
            let mut o = Obj::new();
            o.s("name", m.name.get())
                .embedded("old_value", m.old)
                .embedded("new_value", m.new);
            Node::Obj(o)
        })
        .collect()
}

fn target_summary(t: &Target<'_>) -> Node {
    let mut o = Obj::new();
    o.s("id", t.id.get())
        .s("displayName", t.display_name.get())
        .s("type", t.kind.get())
        .s("userPrincipalName", t.upn.get());
    Node::Obj(o)
}

/// A target that is an account (Account Change needs one).
fn is_user_target(x: &Target<'_>) -> bool {
    x.kind.is("User") || x.kind.is("ServicePrincipal") || x.upn.get().is_some()
}

/// What decides an audit event's class, activity and severity.
struct Kind<'p, 'a> {
    activity_name: String,
    targets: Vec<&'p Target<'a>>,
    /// The Account Change activity, for an account activity on an account.
    account_act: Option<u8>,
    class: Class,
    severity_id: u8,
}

fn kind<'p, 'a>(env: &Envelope<'a, Audit<'a>>, p: &'p Audit<'a>) -> Kind<'p, 'a> {
    let activity_name = p
        .activity
        .get()
        .or(env.operation_name.get())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let targets: Vec<&Target<'_>> = p.targets.0.iter().filter_map(|x| x.as_ref()).collect();
    let account_act = account_activity(&activity_name).filter(|_| targets.iter().any(|x| is_user_target(x)));
    let class = if account_act.is_some() {
        Class::AccountChange
    } else {
        Class::EntityManagement
    };
    let privileged = p.category.is("RoleManagement") || matches!(account_act, Some(7) | Some(8));
    Kind {
        activity_name,
        targets,
        account_act,
        class,
        severity_id: if privileged { 3 } else { 1 },
    }
}

pub(crate) fn map_audit(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let env: Envelope<'_, Audit<'_>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Audit::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("activityDateTime", &p.activity_time), ("time", &env.time)])?;
    let tenant = env.tenant();
    let t = tenant.as_deref();
    let k = kind(&env, p);
    let Kind {
        activity_name,
        targets,
        account_act,
        class,
        severity_id,
    } = k;
    let mut d = Draft::new(class, time, "Microsoft Entra ID");
    d.original_time = Some(original.to_owned());
    d.feature = "AuditLogs".to_owned();
    d.correlation_uid = p.correlation_id.owned().or_else(|| env.correlation_id.owned());
    d.uid = uid_of(&["AuditLogs", t.unwrap_or(""), p.id.get().unwrap_or_default(), original]);
    d.severity_id = severity_id;
    d.status_id = Some(result_status(p.result.get()));
    d.body.s("status_detail", p.result_reason.get());
    d.body.v("message", activity_name.clone());

    // Actor.
    let init = p.initiated_by.as_ref();
    let mut actor = Obj::new();
    let mut src_ip = env.caller_ip.get();
    if let Some(u) = init.and_then(|i| i.user.as_ref()) {
        ctx.learn_user(t, u.id.get(), u.upn.get(), u.display_name.get());
        let user = user_obj(u.id.get(), u.upn.get(), u.display_name.get(), None, UserType::User);
        observe_user(&mut d.observables, "actor.user", &user);
        actor.o("user", user);
        src_ip = u.ip.get().or(src_ip);
    }
    if let Some(a) = init.and_then(|i| i.app.as_ref()) {
        actor
            .s("app_uid", a.app_id.get())
            .s("app_name", a.display_name.get().or(a.sp_name.get()));
        if !actor.has("user") {
            actor.o(
                "user",
                user_obj(
                    a.sp_id.get(),
                    a.sp_name.get().or(a.display_name.get()),
                    None,
                    None,
                    UserType::ServicePrincipal,
                ),
            );
        }
    }
    d.body.o("actor", actor);
    let mut src = Obj::new();
    src.s("ip", src_ip);
    d.body.o("src_endpoint", src);
    d.observables.add(obs::IP, "src_endpoint.ip", src_ip);

    for x in &targets {
        if x.kind.is("User") {
            ctx.learn_user(t, x.id.get(), x.upn.get(), x.display_name.get());
        }
    }

    if let Some(act) = account_act {
        d.activity_id = act;
        let main = targets.iter().find(|x| is_user_target(x)).copied();
        if let Some(x) = main {
            let kind = if x.kind.is("ServicePrincipal") {
                UserType::ServicePrincipal
            } else {
                UserType::User
            };
            let user = user_obj(
                x.id.get(),
                x.upn.get().or(x.display_name.get()),
                x.display_name.get().filter(|_| x.upn.get().is_some()),
                None,
                kind,
            );
            observe_user(&mut d.observables, "user", &user);
            d.body.o("user", user);
            d.unmapped.nodes("modifiedProperties", modified_list(x));
        }
        let policies: Vec<Node> = targets
            .iter()
            .filter(|x| x.kind.is("Role"))
            .map(|x| {
                let mut o = Obj::new();
                o.s("uid", x.id.get()).s("name", x.display_name.get());
                Node::Obj(o)
            })
            .collect();
        d.body.nodes("policies", policies);
        let rest: Vec<Node> = targets
            .iter()
            .filter(|x| main.is_none_or(|m| !std::ptr::eq(**x, m)) && !x.kind.is("Role"))
            .map(|x| target_summary(x))
            .collect();
        d.unmapped.nodes("additionalTargets", rest);
    } else {
        let (act, label) = entity_activity(p.operation_type.get(), &activity_name);
        d.activity_id = act;
        if act == 99 {
            d.activity_name = label.or(Some(activity_name.clone()));
        }
        let mut entity = Obj::new();
        if let Some(x) = targets.first() {
            entity
                .s("uid", x.id.get())
                .s("name", x.display_name.get().or(x.upn.get()))
                .s("type", x.kind.get())
                .v("type_id", entity_type_id(x.kind.get()));
            let mods = modified_list(x);
            if !mods.is_empty() {
                let mut data = Obj::new();
                data.nodes("modified_properties", mods);
                entity.o("data", data);
            }
            d.observables.add(obs::RESOURCE_UID, "entity.uid", x.id.get());
        } else {
            entity.s("name", Some(&activity_name)).v("type_id", 99);
        }
        d.body.o("entity", entity);
        let rest: Vec<Node> = targets.iter().skip(1).map(|x| target_summary(x)).collect();
        d.unmapped.nodes("additionalTargets", rest);
    }

    d.tenant = tenant;
    let u = &mut d.unmapped;
    env.unmapped_into(u);
    u.s("id", p.id.get())
        .s("category", p.category.get())
        .s("operationType", p.operation_type.get())
        .s("loggedByService", p.logged_by.get())
        .s("result", p.result.get())
        .ov(
            "additionalDetails",
            decode_embedded(p.additional_details).map(key_value_object),
        );
    Ok(d)
}

#[path = "entra_audit_flat.rs"]
mod flat;
pub(crate) use flat::flat_audit;

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Provisioning<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "activityDateTime")]
    activity_time: Str<'a>,
    #[serde(default, rename = "provisioningAction")]
    action: Str<'a>,
    #[serde(default, rename = "changeId")]
    change_id: Str<'a>,
    #[serde(default, rename = "cycleId")]
    cycle_id: Str<'a>,
    #[serde(default, rename = "jobId")]
    job_id: Str<'a>,
    #[serde(default, rename = "servicePrincipal")]
    service_principal: Nest<Identity<'a>>,
    #[serde(default, rename = "sourceIdentity")]
    source: Nest<Identity<'a>>,
    #[serde(default, rename = "targetIdentity")]
    target: Nest<Identity<'a>>,
    #[serde(default, rename = "sourceSystem")]
    source_system: Nest<Identity<'a>>,
    #[serde(default, rename = "targetSystem")]
    target_system: Nest<Identity<'a>>,
    #[serde(default, rename = "provisioningStatusInfo")]
    status: Nest<ProvStatus<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Identity<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default, rename = "identityType")]
    identity_type: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct ProvStatus<'a> {
    #[serde(default)]
    status: Str<'a>,
    #[serde(default, rename = "errorInformation")]
    error: Option<&'a RawValue>,
}

pub(crate) fn map_provisioning(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let env: Envelope<'_, Provisioning<'_>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Provisioning::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("activityDateTime", &p.activity_time), ("time", &env.time)])?;
    let tenant = env.tenant();
    let mut d = Draft::new(Class::EntityManagement, time, "Microsoft Entra ID");
    d.original_time = Some(original.to_owned());
    d.feature = "ProvisioningLogs".to_owned();
    d.correlation_uid = env.correlation_id.owned();
    d.uid = uid_of(&[
        "ProvisioningLogs",
        tenant.as_deref().unwrap_or(""),
        p.id.get().unwrap_or_default(),
        original,
    ]);
    d.severity_id = 1;
    let action = p.action.get().unwrap_or_default();
    d.activity_id = match action.to_ascii_lowercase().as_str() {
        "create" => 1,
        "update" => 3,
        "delete" => 4,
        "disable" => 9,
        "enable" => 8,
        _ => 99,
    };
    if d.activity_id == 99 {
        d.activity_name = Some(if action.is_empty() { "Other" } else { action }.to_owned());
    }
    let status = p.status.as_ref();
    d.status_id = Some(match status.and_then(|s| s.status.get()) {
        Some(s) if s.eq_ignore_ascii_case("success") => 1,
        Some(s) if s.eq_ignore_ascii_case("failure") => 2,
        Some(_) => 99,
        None => 0,
    });
    d.status = status.and_then(|s| s.status.owned());
    let mut entity = Obj::new();
    if let Some(tg) = p.target.as_ref() {
        entity
            .s("uid", tg.id.get())
            .s("name", tg.display_name.get())
            .s("type", tg.identity_type.get())
            .v("type_id", entity_type_id(tg.identity_type.get()));
    } else {
        entity.s("name", Some("unknown")).v("type_id", 99);
    }
    d.body.o("entity", entity);
    if let Some(sp) = p.service_principal.as_ref() {
        let mut actor = Obj::new();
        actor.s("app_name", sp.display_name.get()).o(
            "user",
            user_obj(
                sp.id.get(),
                sp.display_name.get(),
                None,
                None,
                UserType::ServicePrincipal,
            ),
        );
        d.body.o("actor", actor);
    }
    let name = p
        .target
        .as_ref()
        .and_then(|x| x.display_name.get())
        .unwrap_or("unknown");
    d.body.v("message", format!("Provisioning {action} of {name}"));
    let identity = |i: Option<&Identity<'_>>| {
        i.map(|i| {
            let mut o = Obj::new();
            o.s("id", i.id.get())
                .s("displayName", i.display_name.get())
                .s("identityType", i.identity_type.get());
            o.into_value()
        })
    };
    d.tenant = tenant;
    let u = &mut d.unmapped;
    env.unmapped_into(u);
    u.s("id", p.id.get())
        .s("changeId", p.change_id.get())
        .s("cycleId", p.cycle_id.get())
        .s("jobId", p.job_id.get())
        .ov("sourceIdentity", identity(p.source.as_ref()))
        .ov("sourceSystem", identity(p.source_system.as_ref()))
        .ov("targetSystem", identity(p.target_system.as_ref()))
        .embedded("errorInformation", status.and_then(|s| s.error));
    Ok(d)
}

#[cfg(test)]
#[path = "entra_audit_tests.rs"]
mod tests;
