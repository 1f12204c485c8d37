//! Entra ID sign-in family (SignInLogs, NonInteractiveUserSignInLogs,
//! ServicePrincipalSignInLogs, ManagedIdentitySignInLogs, ADFSSignInLogs) → OCSF
//! Authentication (3002), activity Logon.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::common::{obs, observe_user, os_obj, uid_of, user_obj, Envelope, Obj, SignInLocation, UserType};
use super::embedded::embedded;
use super::lenient::{Flag, Nest, Num, Str};
use super::ocsf::{Class, Draft};
use super::{Ctx, NormalizeError};
use crate::json_text::trim;

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
pub(crate) struct SignIn<'a> {
    #[serde(default)]
    id: Str<'a>,
    #[serde(default, rename = "createdDateTime")]
    created: Str<'a>,
    #[serde(default, rename = "userDisplayName")]
    user_display_name: Str<'a>,
    #[serde(default, rename = "userPrincipalName")]
    upn: Str<'a>,
    #[serde(default, rename = "userId")]
    user_id: Str<'a>,
    #[serde(default, rename = "userType")]
    user_type: Str<'a>,
    #[serde(default, rename = "appId")]
    app_id: Str<'a>,
    #[serde(default, rename = "appDisplayName")]
    app_name: Str<'a>,
    #[serde(default, rename = "ipAddress")]
    ip: Str<'a>,
    #[serde(default)]
    status: Nest<Status<'a>>,
    #[serde(default, rename = "clientAppUsed")]
    client_app_used: Str<'a>,
    #[serde(default, rename = "userAgent")]
    user_agent: Str<'a>,
    #[serde(default, rename = "deviceDetail")]
    device: Nest<DeviceDetail<'a>>,
    #[serde(default)]
    location: Nest<SignInLocation<'a>>,
    #[serde(default, rename = "correlationId")]
    correlation_id: Str<'a>,
    #[serde(default, rename = "conditionalAccessStatus")]
    ca_status: Str<'a>,
    #[serde(default, rename = "appliedConditionalAccessPolicies")]
    ca_policies: Option<&'a RawValue>,
    #[serde(default, rename = "originalRequestId")]
    original_request_id: Str<'a>,
    #[serde(default, rename = "isInteractive")]
    is_interactive: Flag,
    #[serde(default, rename = "tokenIssuerName")]
    token_issuer_name: Str<'a>,
    #[serde(default, rename = "tokenIssuerType")]
    token_issuer_type: Str<'a>,
    #[serde(default, rename = "authenticationProcessingDetails")]
    auth_processing: Option<&'a RawValue>,
    #[serde(default, rename = "processingTimeInMilliseconds")]
    processing_ms: Num,
    #[serde(default, rename = "riskDetail")]
    risk_detail: Str<'a>,
    #[serde(default, rename = "riskLevelAggregated")]
    risk_aggregated: Str<'a>,
    #[serde(default, rename = "riskLevelDuringSignIn")]
    risk_during: Str<'a>,
    #[serde(default, rename = "riskState")]
    risk_state: Str<'a>,
    #[serde(default, rename = "riskEventTypes_v2")]
    risk_event_types_v2: Option<&'a RawValue>,
    #[serde(default, rename = "riskEventTypes")]
    risk_event_types: Option<&'a RawValue>,
    #[serde(default, rename = "resourceDisplayName")]
    resource_name: Str<'a>,
    #[serde(default, rename = "resourceId")]
    resource_id: Str<'a>,
    #[serde(default, rename = "resourceTenantId")]
    resource_tenant: Str<'a>,
    #[serde(default, rename = "homeTenantId")]
    home_tenant: Str<'a>,
    #[serde(default, rename = "authenticationDetails")]
    auth_details: Option<&'a RawValue>,
    #[serde(default, rename = "authenticationRequirement")]
    auth_requirement: Str<'a>,
    #[serde(default, rename = "mfaDetail")]
    mfa_detail: Option<&'a RawValue>,
    #[serde(default, rename = "servicePrincipalId")]
    sp_id: Str<'a>,
    #[serde(default, rename = "servicePrincipalName")]
    sp_name: Str<'a>,
    #[serde(default, rename = "servicePrincipalCredentialKeyId")]
    sp_key_id: Str<'a>,
    #[serde(default, rename = "clientCredentialType")]
    client_credential_type: Str<'a>,
    #[serde(default, rename = "flaggedForReview")]
    flagged: Flag,
    #[serde(default, rename = "isTenantRestricted")]
    tenant_restricted: Flag,
    #[serde(default, rename = "crossTenantAccessType")]
    cross_tenant: Str<'a>,
    #[serde(default, rename = "autonomousSystemNumber")]
    asn: Num,
    #[serde(default, rename = "uniqueTokenIdentifier")]
    token_id: Str<'a>,
    #[serde(default, rename = "incomingTokenType")]
    incoming_token_type: Str<'a>,
    #[serde(default, rename = "authenticationProtocol")]
    auth_protocol: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Status<'a> {
    #[serde(default, rename = "errorCode")]
    error_code: Str<'a>,
    #[serde(default, rename = "failureReason")]
    failure_reason: Str<'a>,
    #[serde(default, rename = "additionalDetails")]
    additional_details: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct DeviceDetail<'a> {
    #[serde(default, rename = "deviceId")]
    device_id: Str<'a>,
    #[serde(default, rename = "displayName")]
    display_name: Str<'a>,
    #[serde(default, rename = "operatingSystem")]
    os: Str<'a>,
    #[serde(default)]
    browser: Str<'a>,
    #[serde(default, rename = "isCompliant")]
    compliant: Flag,
    #[serde(default, rename = "isManaged")]
    managed: Flag,
    #[serde(default, rename = "trustType")]
    trust_type: Str<'a>,
}

/// Who signs in for each category.
fn subject_kind(category: &str) -> UserType {
    match category {
        "ServicePrincipalSignInLogs" => UserType::ServicePrincipal,
        "ManagedIdentitySignInLogs" => UserType::ManagedIdentity,
        _ => UserType::User,
    }
}

/// `authenticationProtocol` → OCSF `auth_protocol_id` (and caption for 99).
fn auth_protocol(p: Option<&str>) -> Option<(u8, String)> {
    let p = p?;
    let id = match p.to_ascii_lowercase().as_str() {
        "none" => return None,
        "saml20" => 5,
        "oauth2" | "ropc" | "devicecode" => 6,
        _ => 99,
    };
    let caption = match id {
        5 => "SAML".to_owned(),
        6 => "OAUTH 2.0".to_owned(),
        _ => p.to_owned(),
    };
    Some((id, caption))
}

/// OCSF severity from the risk level during the sign-in.
fn severity(p: &SignIn<'_>) -> u8 {
    match p.risk_during.get().map(str::to_ascii_lowercase).as_deref() {
        Some("low") => 2,
        Some("medium") => 3,
        Some("high") => 4,
        _ => 1,
    }
}

/// Who signed in: uid, name and full name.
struct Subject<'a> {
    uid: Option<&'a str>,
    name: Option<Cow<'a, str>>,
    full: Option<Cow<'a, str>>,
    /// The name came from the restoration cache.
    restored: bool,
}

/// The subject of a sign-in: a user (restored from the cache when the record has no UPN;
/// a record with one teaches the cache), else the service principal or managed identity,
/// else (`user` is required) the client application.
fn subject<'a>(ctx: &Ctx<'_>, p: &'a SignIn<'a>, kind: UserType, tenant: Option<&str>) -> Subject<'a> {
    let s = match kind {
        UserType::User => {
            let uid = p.user_id.get();
            let mut upn = p.upn.get().map(Cow::Borrowed);
            let mut full = p.user_display_name.get().map(Cow::Borrowed);
            let mut restored = false;
            if upn.is_none() {
                if let Some(k) = uid.and_then(|u| ctx.known_user(tenant, u)) {
                    upn = k.upn.map(|s| Cow::Owned(String::from(s)));
                    full = full.or(k.display_name.map(|s| Cow::Owned(String::from(s))));
                    restored = upn.is_some();
                }
            } else {
                ctx.learn_user(tenant, uid, upn.as_deref(), full.as_deref());
            }
            Subject {
                uid,
                name: upn,
                full,
                restored,
            }
        }
        _ => Subject {
            uid: p.sp_id.get(),
            name: p.sp_name.get().or(p.app_name.get()).map(Cow::Borrowed),
            full: None,
            restored: false,
        },
    };
    if s.uid.is_some() || s.name.is_some() || s.full.is_some() {
        return s;
    }
    Subject {
        uid: p.app_id.get(),
        name: p.app_name.get().map(Cow::Borrowed),
        full: None,
        restored: false,
    }
}

/// OCSF `service` (uid, name): the resource signed in to, else the application.
fn service<'a>(p: &'a SignIn<'a>) -> (Option<&'a str>, Option<&'a str>) {
    if p.resource_id.get().is_some() || p.resource_name.get().is_some() {
        (p.resource_id.get(), p.resource_name.get())
    } else {
        (p.app_id.get(), p.app_name.get())
    }
}

/// The result: code, success, and the failure reason (only of a failure).
struct Outcome<'a> {
    code: Option<&'a str>,
    success: Option<bool>,
    reason: Option<&'a str>,
}

impl Outcome<'_> {
    fn status_id(&self) -> u8 {
        match self.success {
            Some(true) => 1,
            Some(false) => 2,
            None => 0,
        }
    }
}

fn outcome<'a>(env: &'a Envelope<'a, SignIn<'a>>, p: &'a SignIn<'a>) -> Outcome<'a> {
    let status = p.status.as_ref();
    let code = status.and_then(|s| s.error_code.get()).or(env.result_type.get());
    let success = code.map(|c| trim(c) == "0");
    let reason = status
        .and_then(|s| s.failure_reason.get())
        .or(env.result_description.get())
        .filter(|_| success != Some(true));
    Outcome { code, success, reason }
}

/// `Sign-in by <user> to <resource>: success | failure[: reason]`.
fn message(p: &SignIn<'_>, who: Option<&str>, out: &Outcome<'_>) -> String {
    let target = p.resource_name.get().or(p.app_name.get()).unwrap_or("unknown resource");
    let who = who.unwrap_or("unknown");
    match (out.success, out.reason) {
        (Some(true), _) => format!("Sign-in by {who} to {target}: success"),
        (_, Some(r)) => format!("Sign-in by {who} to {target}: failure: {r}"),
        _ => format!("Sign-in by {who} to {target}: failure"),
    }
}

pub(crate) fn map(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let env: Envelope<'_, SignIn<'_>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = SignIn::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("createdDateTime", &p.created), ("time", &env.time)])?;
    let category: &str = &ctx.meta.category;
    let tenant = env.tenant();
    let kind = subject_kind(category);

    let mut d = Draft::new(Class::Authentication, time, "Microsoft Entra ID");
    d.activity_id = 1;
    d.original_time = Some(original.to_owned());
    d.feature = category.to_owned();
    d.correlation_uid = p.correlation_id.owned().or_else(|| env.correlation_id.owned());
    let id = p.id.get().unwrap_or_default();
    d.uid = uid_of(&[category, tenant.as_deref().unwrap_or(""), id, original]);
    d.severity_id = severity(p);

    // Subject.
    let who = subject(ctx, p, kind, tenant.as_deref());
    if who.restored {
        d.unmapped.c("user_restored_from", "cache");
    }
    let user = user_obj(who.uid, who.name.as_deref(), who.full.as_deref(), None, kind);
    observe_user(&mut d.observables, "user", &user);
    d.body.o("user", user);

    let mut actor = Obj::new();
    actor
        .s("app_uid", p.app_id.get())
        .s("app_name", p.app_name.get().or(p.sp_name.get()));
    d.body.o("actor", actor);

    // Authentication needs `service` or `dst_endpoint` (OCSF 1.5.0): the resource signed in
    // to, else the application signed in to.
    d.body.o("service", {
        let (uid, name) = service(p);
        let mut service = Obj::new();
        service.s("uid", uid).s("name", name);
        service
    });

    let ip = p.ip.get().or(env.caller_ip.get());
    let mut src = Obj::new();
    src.s("ip", ip);
    // A device without id or name is no OCSF `device` (an endpoint needs an identifier): its
    // operating system is the client endpoint's.
    let anonymous_device = p
        .device
        .as_ref()
        .filter(|dev| dev.device_id.get().is_none() && dev.display_name.get().is_none());
    if let Some(dev) = anonymous_device {
        src.ocsf_only("os", || os_obj(dev.os.get()));
    }
    if let Some(l) = p.location.as_ref() {
        src.o("location", l.to_obj());
    }
    if let Some(asn) = p.asn.i64().filter(|a| *a > 0) {
        src.ocsf_only("autonomous_system", || {
            let mut a = Obj::new();
            a.v("number", asn);
            a
        });
    }
    d.body.o("src_endpoint", src);
    d.observables.add(obs::IP, "src_endpoint.ip", ip);

    let mut http = Obj::new();
    http.s("user_agent", p.user_agent.get());
    d.body.o("http_request", http);

    // Outcome.
    let status = p.status.as_ref();
    let out = outcome(&env, p);
    d.status_id = Some(out.status_id());
    d.body.s("status_code", out.code);
    d.body.s("status_detail", out.reason);

    if let Some(req) = p.auth_requirement.get() {
        d.body
            .b("is_mfa", Some(req.eq_ignore_ascii_case("multiFactorAuthentication")));
    }
    if let Some((id, caption)) = auth_protocol(p.auth_protocol.get()) {
        d.body.v("auth_protocol_id", id).v("auth_protocol", caption);
    }
    let (logon_id, logon_caption) = match (kind, p.is_interactive.0, category) {
        (_, Some(true), _) | (UserType::User, None, "SignInLogs") => (2, "Interactive"),
        (UserType::ServicePrincipal, _, _) => (99, "Service principal"),
        (UserType::ManagedIdentity, _, _) => (99, "Managed identity"),
        _ => (99, "Non-interactive"),
    };
    d.body
        .v("logon_type_id", logon_id)
        .c("logon_type", logon_caption)
        .v("is_remote", true);

    d.body.ocsf_only("session", || {
        let mut session = Obj::new();
        session
            .s("uid", p.token_id.get())
            .s("uid_alt", p.correlation_id.get())
            .s("issuer", p.token_issuer_name.get().or(p.token_issuer_type.get()));
        session
    });

    if let Some(dev) = p.device.as_ref() {
        if dev.device_id.get().is_some() || dev.display_name.get().is_some() {
            let mut device = Obj::new();
            device
                .s("uid", dev.device_id.get())
                .s("name", dev.display_name.get())
                .o("os", os_obj(dev.os.get()))
                .b("is_compliant", dev.compliant.0)
                .b("is_managed", dev.managed.0)
                .v("type_id", 0);
            d.body.o("device", device);
            d.host_profile = true;
        } else {
            d.unmapped
                .b("isCompliant", dev.compliant.0)
                .b("isManaged", dev.managed.0);
        }
        d.unmapped
            .s("browser", dev.browser.get())
            .s("trustType", dev.trust_type.get());
    }

    d.body.v("message", message(p, who.name.as_deref(), &out));

    d.tenant = tenant;
    let u = &mut d.unmapped;
    env.unmapped_into(u);
    u.s("id", p.id.get())
        .s("conditionalAccessStatus", p.ca_status.get())
        .embedded("appliedConditionalAccessPolicies", p.ca_policies)
        .s("riskDetail", p.risk_detail.get())
        .s("riskLevelAggregated", p.risk_aggregated.get())
        .s("riskLevelDuringSignIn", p.risk_during.get())
        .s("riskState", p.risk_state.get())
        .on(
            "riskEventTypes_v2",
            embedded(p.risk_event_types_v2).or_else(|| embedded(p.risk_event_types)),
        )
        .embedded("authenticationDetails", p.auth_details)
        .embedded("authenticationProcessingDetails", p.auth_processing)
        .s("authenticationRequirement", p.auth_requirement.get())
        .embedded("mfaDetail", p.mfa_detail)
        .s("tokenIssuerType", p.token_issuer_type.get())
        .s("clientAppUsed", p.client_app_used.get())
        .s("userType", p.user_type.get())
        .b("isInteractive", p.is_interactive.0)
        .s("incomingTokenType", p.incoming_token_type.get())
        .s("crossTenantAccessType", p.cross_tenant.get())
        .b("flaggedForReview", p.flagged.0)
        .b("isTenantRestricted", p.tenant_restricted.0)
        .s("originalRequestId", p.original_request_id.get())
        .ov("processingTimeInMilliseconds", p.processing_ms.value())
        .s("resourceTenantId", p.resource_tenant.get())
        .s("homeTenantId", p.home_tenant.get())
        .s("servicePrincipalCredentialKeyId", p.sp_key_id.get())
        .s("clientCredentialType", p.client_credential_type.get())
        .s(
            "statusAdditionalDetails",
            status.and_then(|s| s.additional_details.get()),
        );
    Ok(d)
}

#[path = "entra_signin_flat.rs"]
mod flat;
pub(crate) use flat::flat;

#[cfg(test)]
#[path = "entra_signin_tests.rs"]
mod tests;
