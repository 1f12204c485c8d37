//! MicrosoftGraphActivityLogs (every Graph API request in the tenant) → OCSF API Activity
//! (6003), activity by HTTP method.

use serde::Deserialize;

use super::common::{obs, split_spaces, uid_of, user_obj, Envelope, Obj, UserType};
use super::lenient::{Num, Str};
use super::ocsf::{Class, Draft};
use super::{Ctx, NormalizeError};
use crate::json_text::trim;

#[derive(Deserialize, Default)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Activity<'a> {
    #[serde(default, rename = "apiVersion")]
    api_version: Str<'a>,
    #[serde(default, rename = "appId")]
    app_id: Str<'a>,
    #[serde(default, rename = "clientAuthMethod")]
    client_auth_method: Str<'a>,
    #[serde(default, rename = "clientRequestId")]
    client_request_id: Str<'a>,
    #[serde(default, rename = "durationMs")]
    duration_ms: Num,
    #[serde(default, rename = "identityProvider")]
    identity_provider: Str<'a>,
    #[serde(default, rename = "ipAddress")]
    ip: Str<'a>,
    #[serde(default)]
    location: Str<'a>,
    #[serde(default, rename = "operationId")]
    operation_id: Str<'a>,
    #[serde(default, rename = "requestId")]
    request_id: Str<'a>,
    #[serde(default, rename = "requestMethod")]
    method: Str<'a>,
    #[serde(default, rename = "requestUri")]
    uri: Str<'a>,
    #[serde(default, rename = "responseSizeBytes")]
    response_size: Num,
    #[serde(default, rename = "responseStatusCode")]
    status_code: Num,
    #[serde(default)]
    roles: Str<'a>,
    #[serde(default)]
    scopes: Str<'a>,
    #[serde(default, rename = "servicePrincipalId")]
    sp_id: Str<'a>,
    #[serde(default, rename = "signInActivityId")]
    sign_in_activity_id: Str<'a>,
    #[serde(default, rename = "tenantId")]
    tenant_id: Str<'a>,
    #[serde(default, rename = "timeGenerated")]
    time_generated: Str<'a>,
    #[serde(default, rename = "tokenIssuedAt")]
    token_issued_at: Str<'a>,
    #[serde(default, rename = "userAgent")]
    user_agent: Str<'a>,
    #[serde(default, rename = "userId")]
    user_id: Str<'a>,
    #[serde(default)]
    wids: Str<'a>,
    #[serde(default, rename = "atContent")]
    at_content: Str<'a>,
    #[serde(default, rename = "deviceId")]
    device_id: Str<'a>,
}

/// Parts of an absolute URL used by OCSF `url`.
struct UrlParts<'u> {
    scheme: Option<&'u str>,
    host: Option<&'u str>,
    path: &'u str,
    query: Option<&'u str>,
}

fn split_url(u: &str) -> UrlParts<'_> {
    let (scheme, rest) = match u.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, u),
    };
    let (host, path_q) = if scheme.is_some() {
        match rest.find('/') {
            Some(i) => (Some(&rest[..i]), &rest[i..]),
            None => (Some(rest), "/"),
        }
    } else {
        (None, rest)
    };
    let (path, query) = match path_q.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_q, None),
    };
    UrlParts {
        scheme,
        host,
        path,
        query,
    }
}

/// OCSF activity of an HTTP method (99: the method is the activity name).
fn activity_id(method: &str) -> u8 {
    match method.to_ascii_uppercase().as_str() {
        "POST" => 1,
        "GET" | "HEAD" => 2,
        "PUT" | "PATCH" => 3,
        "DELETE" => 4,
        _ => 99,
    }
}

/// The HTTP status of the request.
fn status_code(env: &Envelope<'_, Activity<'_>>, p: &Activity<'_>) -> Option<i64> {
    p.status_code
        .i64()
        .or_else(|| env.result_signature.get().and_then(|s| trim(s).parse::<i64>().ok()))
}

fn status_id(code: Option<i64>) -> u8 {
    match code {
        Some(c) if c < 400 => 1,
        Some(_) => 2,
        None => 0,
    }
}

/// `<METHOD> <path> -> <status>`.
fn message(method: &str, path: &str, code: Option<i64>) -> String {
    format!("{method} {path} -> {}", code.map_or("?".to_owned(), |c| c.to_string()))
}

/// Who called: the user (name restored from the cache: Graph activity logs carry no UPN),
/// else the service principal.
struct Caller<'a> {
    uid: &'a str,
    upn: Option<Box<str>>,
    full: Option<Box<str>>,
    kind: UserType,
}

fn caller<'a>(ctx: &Ctx<'_>, p: &'a Activity<'a>, tenant: Option<&str>) -> Option<Caller<'a>> {
    if let Some(uid) = p.user_id.get() {
        let known = ctx.known_user(tenant, uid);
        let (upn, full) = known.map_or((None, None), |k| (k.upn, k.display_name));
        return Some(Caller {
            uid,
            upn,
            full,
            kind: UserType::User,
        });
    }
    p.sp_id.get().map(|sp| Caller {
        uid: sp,
        upn: None,
        full: None,
        kind: UserType::ServicePrincipal,
    })
}

pub(crate) fn map(ctx: &Ctx<'_>, raw: &str) -> Result<Draft, NormalizeError> {
    let env: Envelope<'_, Activity<'_>> = super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Activity::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("timeGenerated", &p.time_generated), ("time", &env.time)])?;
    let tenant = env.tenant().or_else(|| p.tenant_id.get().map(str::to_ascii_lowercase));
    let t = tenant.as_deref();
    let method = p.method.get().unwrap_or("UNKNOWN");
    let code = status_code(&env, p);

    let mut d = Draft::new(Class::ApiActivity, time, "Microsoft Graph");
    d.feature = "MicrosoftGraphActivityLogs".to_owned();
    d.original_time = Some(original.to_owned());
    d.correlation_uid = env.correlation_id.owned().or_else(|| p.operation_id.owned());
    d.severity_id = 1;
    let request_id = p.request_id.get().or(p.operation_id.get()).unwrap_or_default();
    d.uid = uid_of(&["MicrosoftGraphActivityLogs", t.unwrap_or(""), request_id, original]);
    d.activity_id = activity_id(method);
    if d.activity_id == 99 {
        d.activity_name = Some(method.to_owned());
    }
    d.status_id = Some(status_id(code));
    if let Some(c) = code {
        d.body.v("status_code", c.to_string());
    }

    // Actor: the user (restored from the cache: Graph activity logs carry no UPN) or the
    // service principal, plus the client app and the sign-in session.
    let mut actor = Obj::new();
    if let Some(who) = caller(ctx, p, t) {
        if who.upn.is_some() {
            d.unmapped.c("user_restored_from", "cache");
        }
        let user = user_obj(Some(who.uid), who.upn.as_deref(), who.full.as_deref(), None, who.kind);
        if who.kind == UserType::User {
            super::common::observe_user(&mut d.observables, "actor.user", &user);
        }
        actor.o("user", user);
    }
    actor.s("app_uid", p.app_id.get());
    actor.ocsf_only("session", || {
        let mut session = Obj::new();
        session.s("uid", p.sign_in_activity_id.get());
        session
    });
    d.body.o("actor", actor);

    let uri = p.uri.get();
    let parts = uri.map(split_url);
    let path = parts.as_ref().map(|u| u.path).unwrap_or("");
    d.body.ocsf_only("api", || {
        let mut api = Obj::new();
        api.v("operation", format!("{method} {path}"))
            .s("version", p.api_version.get().or(env.operation_version.get()));
        let mut req = Obj::new();
        req.s("uid", p.request_id.get());
        api.o("request", req);
        let mut resp = Obj::new();
        resp.i("code", code);
        api.o("response", resp);
        let mut svc = Obj::new();
        svc.c("name", "Microsoft Graph");
        api.o("service", svc);
        api
    });
    d.body.o("http_request", {
        let mut url = Obj::new();
        if let (Some(u), Some(parts)) = (uri, parts.as_ref()) {
            url.v("url_string", u)
                .s("scheme", parts.scheme)
                .s("hostname", parts.host)
                .v("path", parts.path)
                .s("query_string", parts.query);
        }
        let mut http = Obj::new();
        http.v("http_method", method.to_ascii_uppercase())
            .o("url", url)
            .s("user_agent", p.user_agent.get())
            .s("uid", p.client_request_id.get());
        http
    });
    d.body.ocsf_only("http_response", || {
        let mut http_resp = Obj::new();
        http_resp.i("code", code).i("length", p.response_size.i64());
        http_resp
    });
    d.observables.add(obs::URL, "http_request.url.url_string", uri);

    let ip = p.ip.get().or(env.caller_ip.get());
    let mut src = Obj::new();
    src.s("ip", ip);
    d.body.o("src_endpoint", src);
    d.observables.add(obs::IP, "src_endpoint.ip", ip);
    let mut dst = Obj::new();
    dst.s("hostname", parts.as_ref().and_then(|u| u.host))
        .c("svc_name", "Microsoft Graph");
    d.body.o("dst_endpoint", dst);

    d.body.v("message", message(method, path, code));
    d.tenant = tenant;
    let u = &mut d.unmapped;
    env.unmapped_into(u);
    u.ov("roles", split_spaces(p.roles.get()))
        .ov("scopes", split_spaces(p.scopes.get()))
        .ov("wids", split_spaces(p.wids.get()))
        .s("clientAuthMethod", p.client_auth_method.get())
        .s("tokenIssuedAt", p.token_issued_at.get())
        .s("identityProvider", p.identity_provider.get())
        .s("operationId", p.operation_id.get())
        .s("servicePrincipalId", p.sp_id.get())
        .s("location", p.location.get().or(env.location.get()))
        .ov("durationMs", p.duration_ms.value().or(env.duration_ms.value()))
        .s("atContent", p.at_content.get())
        .s("deviceId", p.device_id.get());
    Ok(d)
}

#[path = "graph_activity_flat.rs"]
mod flat;
pub(crate) use flat::flat;

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    const LOGS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/eventhub/graph_activity_logs.json"
    ));

    #[test]
    fn app_only_incident_poll() {
        let n = normalizer();
        let o = run(&n, "MicrosoftGraphActivityLogs", &records(LOGS)[0]);
        let e = ocsf(&o);
        assert_eq!(o.normalized.class_uid, 6003);
        assert_eq!(e["type_uid"], 600_302);
        assert_eq!(e["api"]["operation"], "GET /beta/security/incidents");
        assert_eq!(e["api"]["version"], "beta");
        assert_eq!(e["api"]["response"]["code"], 200);
        assert_eq!(e["http_request"]["url"]["hostname"], "graph.microsoft.com");
        assert_eq!(e["http_request"]["user_agent"], "m365-forwarder/0.1");
        assert_eq!(e["actor"]["app_uid"], "9974d75b-3338-44fe-a179-0134676b1b69");
        assert_eq!(e["actor"]["user"]["type"], "ServicePrincipal");
        assert_eq!(e["src_endpoint"]["ip"], "198.51.100.200");
        assert_eq!(e["status_id"], 1);
        assert_eq!(o.severity_id, 1);
        assert_eq!(
            e["unmapped"]["roles"],
            serde_json::json!([
                "SecurityIncident.Read.All",
                "IdentityRiskEvent.Read.All",
                "IdentityRiskyUser.Read.All"
            ])
        );
        assert_eq!(o.tenant.as_deref(), Some(TENANT), "upper-case resourceId");
    }

    #[test]
    fn throttled_request_is_failure() {
        let n = normalizer();
        let o = run(&n, "MicrosoftGraphActivityLogs", &records(LOGS)[1]);
        let e = ocsf(&o);
        assert_eq!(e["status_id"], 2);
        assert_eq!(e["status_code"], "429");
        assert_eq!(e["http_response"]["code"], 429);
    }

    #[test]
    fn delegated_user_is_restored() {
        let n = normalizer();
        let signins = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/eventhub/signin_interactive.json"
        ));
        run(&n, "SignInLogs", &records(signins)[0]);
        let o = run(&n, "MicrosoftGraphActivityLogs", &records(LOGS)[2]);
        let e = ocsf(&o);
        assert_eq!(e["actor"]["user"]["uid"], "3cbb7daa-64c1-44fa-88a7-c8252abc5619");
        assert_eq!(e["actor"]["user"]["name"], "alex.wilber@fabrikam.example");
        assert_eq!(e["unmapped"]["user_restored_from"], "cache");
        assert_eq!(e["api"]["operation"], "GET /v1.0/users");
        assert_eq!(
            e["http_request"]["url"]["query_string"],
            "$select=displayName,userPrincipalName,jobTitle&$top=999"
        );
        assert_eq!(e["unmapped"]["scopes"][2], "User.Read.All");
    }
}
