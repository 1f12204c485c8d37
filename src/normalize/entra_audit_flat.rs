//! The flat form of an Entra audit event (lean normalization without a tree; see
//! `normalize::direct`): the actor, the target account and the outcome, as `map_audit`
//! decides them.

use bytestring::ByteString;

use super::super::common::{uid_of, Envelope};
use super::super::direct::{pair, t, Base, Direct};
use super::super::{Ctx, FlatUser, NormalizeError};
use super::{entity_activity, is_user_target, kind, result_status, Audit, Kind};

pub(crate) fn flat_audit(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let env: Envelope<'_, Audit<'_>> = super::super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Audit::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let (time, original) = ctx.pick_time(&[("activityDateTime", &p.activity_time), ("time", &env.time)])?;
    let tenant = env.tenant();
    let Kind {
        activity_name,
        targets,
        account_act,
        class,
        severity_id,
    } = kind(&env, p);
    let (activity_id, label) = match account_act {
        Some(a) => (a, None),
        None => {
            let (act, label) = entity_activity(p.operation_type.get(), &activity_name);
            (act, (act == 99).then(|| label.unwrap_or_else(|| activity_name.clone())))
        }
    };
    let uid = uid_of(&[
        "AuditLogs",
        tenant.as_deref().unwrap_or(""),
        p.id.get().unwrap_or_default(),
        original,
    ]);
    let mut d = Base {
        class,
        activity_id,
        activity_name: label.as_deref(),
        status_id: Some(result_status(p.result.get())),
        status: None,
        severity_id,
        time,
        product: ByteString::from_static("Microsoft Entra ID"),
        uid,
        tenant,
    }
    .into_direct();
    let tn = d.tenant.as_deref();

    // The actor: the initiating user (who teaches the cache), else the application's service
    // principal.
    let init = p.initiated_by.as_ref();
    let mut actor = FlatUser::default();
    let mut src_ip = env.caller_ip.get();
    if let Some(u) = init.and_then(|i| i.user.as_ref()) {
        ctx.learn_user(tn, u.id.get(), u.upn.get(), u.display_name.get());
        actor = FlatUser {
            name: t(u.upn.get()),
            uid: t(u.id.get()),
        };
        src_ip = u.ip.get().or(src_ip);
    }
    let user_obj = init
        .and_then(|i| i.user.as_ref())
        .is_some_and(|u| u.id.get().is_some() || u.upn.get().is_some() || u.display_name.get().is_some());
    let f = &mut d.flat;
    if let Some(a) = init.and_then(|i| i.app.as_ref()) {
        f.app_name = t(a.display_name.get().or(a.sp_name.get()));
        if !user_obj {
            actor = FlatUser {
                name: t(a.sp_name.get().or(a.display_name.get())),
                uid: t(a.sp_id.get()),
            };
        }
    }
    f.src_ip = t(src_ip);
    for x in &targets {
        if x.kind.is("User") {
            ctx.learn_user(tn, x.id.get(), x.upn.get(), x.display_name.get());
        }
    }
    // The account changed (Account Change only).
    let mut user = FlatUser::default();
    if account_act.is_some() {
        if let Some(x) = targets.iter().find(|x| is_user_target(x)) {
            user = FlatUser {
                name: t(x.upn.get().or(x.display_name.get())),
                uid: t(x.id.get()),
            };
        }
    }
    (f.src_user, f.dst_user) = pair(actor, user);
    let message = t(Some(&activity_name));
    f.category = message.clone();
    f.message = message;
    f.status_detail = t(p.result_reason.get());
    Ok(d)
}
