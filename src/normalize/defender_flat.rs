//! The flat forms of Defender XDR streaming rows (lean normalization without a tree; see
//! `normalize::direct`): logons and alert evidence, from the helpers the tree mapping uses.

use bytestring::ByteString;

use super::super::common::{join_path, uid_of};
use super::super::direct::{owned, pair, t, Base, Direct};
use super::super::ocsf::Class;
use super::super::{Ctx, FlatUser, NormalizeError};
use super::logon::{logon_endpoints, logon_message, logon_outcome, logon_product};
use super::{account_parts, categories, evidence_severity, evidence_uid, parse};

/// AdvancedHunting-IdentityLogonEvents and -DeviceLogonEvents.
pub(crate) fn flat_logon(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let (env, r) = parse(raw)?;
    let (time, original) = ctx.pick_time(&[("Timestamp", &r.Timestamp), ("time", &env.time)])?;
    let tenant = env.tenant();
    let category: &str = &ctx.meta.category;
    let device_table = category == "AdvancedHunting-DeviceLogonEvents";
    let uid = uid_of(&[
        category,
        tenant.as_deref().unwrap_or(""),
        r.ReportId.get().unwrap_or_default(),
        r.DeviceId.get().or(r.DeviceName.get()).unwrap_or_default(),
        original,
    ]);
    let (status_id, severity_id) = logon_outcome(r.ActionType.get());
    let mut d = Base {
        class: Class::Authentication,
        activity_id: 1,
        activity_name: None,
        status_id: Some(status_id),
        status: None,
        severity_id,
        time,
        product: ByteString::from_static(logon_product(device_table)),
        uid,
        tenant,
    }
    .into_direct();
    let account = account_parts(ctx, d.tenant.as_deref(), &r);
    // `user` is required: an account without any detail is `unknown`.
    let name = if account.is_empty() {
        Some("unknown")
    } else {
        account.name
    };
    let ends = logon_endpoints(&r, device_table);
    let x = &mut d.flat;
    let user = FlatUser {
        name: t(name),
        uid: t(account.uid),
    };
    (x.src_user, x.dst_user) = pair(FlatUser::default(), user);
    x.status_detail = t(r.FailureReason.get());
    x.src_ip = t(ends.src_ip);
    x.src_host = t(ends.src_host);
    x.dst_host = t(ends.dst_host);
    x.dst_ip = t(ends.dst_ip);
    x.country = t(r.Location.get());
    x.service_name = t(r.Application.get());
    x.message = Some(ByteString::from(logon_message(&r, name.unwrap_or("unknown"))));
    Ok(d)
}

/// AdvancedHunting-AlertEvidence: one evidence row of an alert.
pub(crate) fn flat_alert_evidence(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let (env, r) = parse(raw)?;
    let (time, original) = ctx.pick_time(&[("Timestamp", &r.Timestamp), ("time", &env.time)])?;
    let alert_id = r.AlertId.get().ok_or(NormalizeError::MissingField("AlertId"))?;
    let tenant = env.tenant();
    let tn = tenant.as_deref();
    let entity = r.EntityType.get().unwrap_or("Unknown");
    let severity_id = evidence_severity(ctx, tn, alert_id);
    let uid = evidence_uid(tn, alert_id, entity, &r, original);
    let mut d = Base {
        class: Class::DetectionFinding,
        activity_id: 2,
        activity_name: None,
        // The stream carries no alert status.
        status_id: None,
        status: None,
        severity_id,
        time,
        product: t(r.ServiceSource.get()).unwrap_or(ByteString::from_static("Microsoft Defender XDR")),
        uid,
        tenant,
    }
    .into_direct();
    d.entity_key = Some(alert_id.to_owned());
    let account = account_parts(ctx, d.tenant.as_deref(), &r);
    let x = &mut d.flat;
    x.title = t(r.Title.get()).or(Some(ByteString::from_static("Untitled alert")));
    x.message = t(r.Title.get());
    x.detector = t(categories(&r).first().map(String::as_str));
    x.category = x.detector.clone();
    x.finding_uid = t(Some(alert_id));
    // The account is the alert's actor when the evidence is a user, the device its host when
    // it is a machine.
    if entity.eq_ignore_ascii_case("User") && !account.is_empty() {
        let actor = FlatUser {
            name: t(account.name),
            uid: t(account.uid),
        };
        (x.src_user, x.dst_user) = pair(actor, FlatUser::default());
    }
    // The evidence's addresses, as the tree's first evidence carries them.
    x.src_ip = t(r.LocalIP.get());
    x.dst_ip = t(r.RemoteIP.get());
    let device = r.DeviceId.get().is_some() || r.DeviceName.get().is_some() || r.LocalIP.get().is_some();
    if entity.eq_ignore_ascii_case("Machine") && device {
        x.src_host = t(r.DeviceName.get());
    }
    // The evidence's file (a process's image file) and URL, as the tree's first evidence
    // carries them.
    x.file_name = t(r.FileName.get());
    x.file_path = join_path(r.FolderPath.get(), r.FileName.get()).map(owned);
    x.file_hash = t(r.SHA256.get().or(r.SHA1.get()).or(r.MD5.get()));
    x.url = t(r.RemoteUrl.get());
    Ok(d)
}
