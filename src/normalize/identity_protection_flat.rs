//! The flat forms of Entra ID Protection's Event Hub records (lean normalization without a
//! tree; see `normalize::direct`), from the facts the tree mapping is built from.

use bytestring::ByteString;

use super::super::common::{time_ms, Envelope};
use super::super::correlate::DetectionKind;
use super::super::direct::{owned, pair, set_location, t, Base, Direct};
use super::super::ocsf::Class;
use super::super::{Ctx, FlatUser, NormalizeError};
use super::{detection_facts, state_facts, Detection, Finding, RiskState, PRODUCT};

/// The base attributes of an Identity Protection finding.
fn base(f: &Finding<'_>, status: Option<String>) -> Direct {
    Base {
        class: Class::DetectionFinding,
        activity_id: f.activity_id,
        activity_name: None,
        status_id: Some(f.status_id),
        status,
        severity_id: f.severity,
        time: f.time,
        product: ByteString::from_static(PRODUCT),
        uid: f.uid(),
        tenant: f.tenant.clone(),
    }
    .into_direct()
}

/// UserRiskEvents and ServicePrincipalRiskEvents.
pub(crate) fn flat_detection_eventhub(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let env: Envelope<'_, Detection<'_>> = super::super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = Detection::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let f = detection_facts(ctx, p, &env.time, env.tenant())?;
    let mut d = base(&f.finding, p.risk_state.owned());
    d.entity_key = Some(f.finding.id.to_owned());
    d.detection = Some((DetectionKind::Risk, f.finding.id.to_owned()));
    let x = &mut d.flat;
    x.title = Some(owned(f.title.clone()));
    x.detector = t(Some(f.event_type));
    x.category = x.detector.clone();
    x.finding_uid = t(Some(f.finding.id));
    x.start_ms = time_ms(&p.activity_time);
    x.end_ms = x.start_ms;
    x.portal_url = t(f.info_str("alertUrl"));
    let actor = if f.is_sp {
        x.app_name = t(p.sp_name.get());
        FlatUser {
            name: t(p.sp_name.get()),
            uid: t(p.sp_id.get()),
        }
    } else {
        FlatUser {
            name: t(f.upn.as_deref()),
            uid: t(f.uid),
        }
    };
    (x.src_user, x.dst_user) = pair(actor, FlatUser::default());
    x.message = Some(owned(f.message(p)));
    // The client of the risky sign-in is the detection's evidence.
    x.src_ip = t(p.ip.get());
    x.user_agent = t(f.info_str("userAgent"));
    if let Some(l) = p.location.as_ref() {
        let (lat, long) = l.coordinates();
        set_location(x, l.city.get(), l.country.get(), lat, long);
    }
    Ok(d)
}

/// RiskyUsers and RiskyServicePrincipals.
pub(crate) fn flat_state_eventhub(ctx: &Ctx<'_>, raw: &str) -> Result<Direct, NormalizeError> {
    let env: Envelope<'_, RiskState<'_>> = super::super::json_de::from_str(raw).map_err(NormalizeError::from_serde)?;
    let empty = RiskState::default();
    let p = env.properties.as_ref().unwrap_or(&empty);
    let is_sp = ctx.meta.category.as_ref() == "RiskyServicePrincipals";
    let f = state_facts(ctx, p, &env.time, env.tenant(), is_sp)?;
    let mut d = base(&f.finding, p.risk_state.owned());
    let finding_uid = f.finding_uid();
    let x = &mut d.flat;
    x.title = Some(ByteString::from_static(f.title));
    x.detector = Some(ByteString::from_static(f.prefix));
    x.category = x.detector.clone();
    x.finding_uid = Some(owned(finding_uid.clone()));
    let actor = if f.is_sp {
        x.app_name = t(p.display_name.get());
        FlatUser {
            name: t(p.display_name.get()),
            uid: t(Some(f.finding.id)),
        }
    } else {
        FlatUser {
            name: t(f.upn.as_deref()),
            uid: t(Some(f.finding.id)),
        }
    };
    (x.src_user, x.dst_user) = pair(actor, FlatUser::default());
    x.message = Some(owned(f.message(p)));
    d.entity_key = Some(finding_uid);
    Ok(d)
}
