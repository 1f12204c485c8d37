//! The flat form of a Graph API request (lean normalization without a tree; see
//! `normalize::direct`): caller, request and outcome as `map` decides them.

use bytestring::ByteString;

use super::super::common::{uid_of, Envelope};
use super::super::direct::{owned, t, Base, Direct};
use super::super::ocsf::Class;
use super::super::{tree, Ctx, FlatUser, NormalizeError};
use super::{activity_id, caller, message, split_url, status_code, status_id, Activity};

/// The flat form of a Graph API request (lean normalization without a tree; see `direct`).
pub(crate) fn flat(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let env: Envelope<'_, Activity<'_>> = super::super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Activity::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("timeGenerated", &p.time_generated), ("time", &env.time)])?;
    let tenant = env.tenant().or_else(|| p.tenant_id.get().map(str::to_ascii_lowercase));
    let method = p.method.get().unwrap_or("UNKNOWN");
    let code = status_code(&env, p);
    let request_id = p.request_id.get().or(p.operation_id.get()).unwrap_or_default();
    let activity = activity_id(method);
    let uid = uid_of(&[
        "MicrosoftGraphActivityLogs",
        tenant.as_deref().unwrap_or(""),
        request_id,
        original,
    ]);
    let mut d = Base {
        class: Class::ApiActivity,
        activity_id: activity,
        activity_name: (activity == 99).then_some(method),
        status_id: Some(status_id(code)),
        status: None,
        severity_id: 1,
        time,
        product: ByteString::from_static("Microsoft Graph"),
        uid,
        tenant,
    }
    .into_direct();
    let who = caller(ctx, p, d.tenant.as_deref());
    let f = &mut d.flat;
    if let Some(who) = who {
        f.src_user = FlatUser {
            name: t(who.upn.as_deref()),
            uid: t(Some(who.uid)),
        };
    }
    let uri = p.uri.get();
    let parts = uri.map(split_url);
    let path = parts.as_ref().map(|u| u.path).unwrap_or("");
    f.request_url = t(uri);
    f.request_method = Some(if method.bytes().any(|b| b.is_ascii_lowercase()) {
        owned(method.to_ascii_uppercase())
    } else {
        tree::text(method)
    });
    f.user_agent = t(p.user_agent.get());
    f.status_code = code.map(|c| owned(c.to_string()));
    f.src_ip = t(p.ip.get().or(env.caller_ip.get()));
    f.dst_host = t(parts.as_ref().and_then(|u| u.host));
    f.message = Some(owned(message(method, path, code)));
    Ok(d)
}
