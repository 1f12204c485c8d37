//! The flat form of a sign-in (lean normalization without a tree; see `normalize::direct`):
//! the subject, outcome and message as `map` decides them.

use bytestring::ByteString;

use super::super::common::{uid_of, Envelope};
use super::super::direct::{owned, set_location, t, Base, Direct};
use super::super::ocsf::Class;
use super::super::{Ctx, FlatUser, NormalizeError};
use super::{message, outcome, service, severity, subject, subject_kind, SignIn};

/// The flat form of a sign-in (lean normalization without a tree; see `direct`).
pub(crate) fn flat(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let env: Envelope<'_, SignIn<'_>> = super::super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = SignIn::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("createdDateTime", &p.created), ("time", &env.time)])?;
    let category: &str = &ctx.meta.category;
    let tenant = env.tenant();
    let kind = subject_kind(category);
    let id = p.id.get().unwrap_or_default();
    let out = outcome(&env, p);
    let mut d = Base {
        class: Class::Authentication,
        activity_id: 1,
        activity_name: None,
        status_id: Some(out.status_id()),
        status: None,
        severity_id: severity(p),
        time,
        product: ByteString::from_static("Microsoft Entra ID"),
        uid: uid_of(&[category, tenant.as_deref().unwrap_or(""), id, original]),
        tenant,
    }
    .into_direct();
    let who = subject(ctx, p, kind, d.tenant.as_deref());
    let f = &mut d.flat;
    f.message = Some(owned(message(p, who.name.as_deref(), &out)));
    f.src_user = FlatUser {
        name: t(who.name.as_deref()),
        uid: t(who.uid),
    };
    f.app_name = t(p.app_name.get().or(p.sp_name.get()));
    f.service_name = t(service(p).1);
    f.src_ip = t(p.ip.get().or(env.caller_ip.get()));
    f.user_agent = t(p.user_agent.get());
    f.status_code = t(out.code);
    f.status_detail = t(out.reason);
    if let Some(l) = p.location.as_ref() {
        let (lat, long) = l.coordinates();
        set_location(f, l.city.get(), l.country.get(), lat, long);
    }
    Ok(d)
}
