//! The flat form of a Graph alert (lean normalization without a tree; see
//! `normalize::direct`): the same facts, caches and user restoration as the OCSF mapping,
//! and of the evidence only what the attribute encoders read. Incidents keep their tree:
//! the encoders list or split out their alerts from it.

use bytestring::ByteString;

use super::super::common::{severity_from_text, time_ms};
use super::super::correlate::DetectionKind;
use super::super::direct::{owned, pair, set_location, t, Base, Direct};
use super::super::graph_evidence::evidence_facts;
use super::super::ocsf::Class;
use super::super::{Ctx, FlatUser, NormalizeError};
use super::{alert_facts, restore, risk_detection, Alert};

/// A Graph alert: its header, finding, subject (restored as the OCSF mapping restores it)
/// and what its evidence names: source and destination IP, location, host, file and URL.
pub(crate) fn flat_alert(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let a: Alert<'_> = super::super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let f = alert_facts(ctx, &a)?;
    let mut d = Base {
        class: Class::DetectionFinding,
        activity_id: f.activity_id,
        activity_name: None,
        status_id: Some(f.status_id),
        status: a.status.owned(),
        severity_id: severity_from_text(a.severity.get()),
        time: f.time,
        product: owned(f.product),
        uid: f.uid,
        tenant: f.tenant.clone(),
    }
    .into_direct();
    d.entity_key = f.entity_key;
    d.detection = Some((DetectionKind::Alert, f.id.to_owned()));
    let x = &mut d.flat;
    let title = a.title.get();
    x.title = Some(t(title).unwrap_or_else(|| ByteString::from_static("Untitled alert")));
    x.message = t(title);
    x.detector = t(a.detector_id.get().or(a.category.get()).or(a.service_source.get()));
    x.category = x.detector.clone();
    x.finding_uid = t(Some(f.id));
    x.start_ms = time_ms(&a.first_activity);
    x.end_ms = time_ms(&a.last_activity);
    x.portal_url = t(a.web_url.get());

    let tenant = f.tenant.as_deref();
    let mut ev = evidence_facts(ctx, tenant, &a.evidence.0);
    let actor = match restore(ctx, tenant, ev.user.take(), risk_detection(&a)) {
        Some((u, _)) => FlatUser {
            name: t(u.upn.as_deref().or(u.account_name.as_deref())),
            uid: t(u.uid.as_deref()),
        },
        None => FlatUser::default(),
    };
    (x.src_user, x.dst_user) = pair(actor, FlatUser::default());
    x.src_ip = ev.src_ip();
    x.dst_ip = ev.dst_ip.clone();
    x.src_host = ev.host();
    if let Some(l) = ev.location() {
        set_location(x, l.city.as_deref(), l.country.as_deref(), l.lat, l.long);
    }
    if let Some([name, path, hash]) = ev.file() {
        (x.file_name, x.file_path, x.file_hash) = (name.clone(), path.clone(), hash.clone());
    }
    x.url = ev.url();
    Ok(d)
}
