//! Lean normalization without a tree: for the families whose mapper can also write what CEF,
//! LEEF and syslog headers read ([`Flat`]) straight from the typed record, no OCSF object is
//! built. The mappers share their decisions with the tree mapping (user restoration, finding
//! first-seen, correlation); `encode::flat_tests` holds the flat form and the normalization's
//! outputs equal to the full normalization's for every sample record and thousands of
//! variants, and the `eventhub_body` fuzz target their CEF and LEEF lines on every input.

use std::borrow::Cow;

use bytestring::ByteString;

use super::common::hex128;
use super::correlate::DetectionKind;
use super::ocsf::Class;
use super::{tree, Ctx, Flat, FlatUser, NormalizeError};
use crate::decode::time::ParsedTime;

/// What a flat mapper produces besides the flat form (what `finish` takes of a `Draft`).
pub(crate) struct Direct {
    /// Boxed from the start: it is ~1.4 KB, and moves through the mapper's return, the
    /// normalizer and into the event.
    pub flat: Box<Flat<ByteString>>,
    pub class: Class,
    pub activity_id: u8,
    pub time: ParsedTime,
    pub uid: u128,
    pub entity_key: Option<String>,
    /// Tenant carried by the record.
    pub tenant: Option<String>,
    pub detection: Option<(DetectionKind, String)>,
}

/// The flat mapper of a category, when it has one.
pub(crate) fn dispatch(ctx: &Ctx<'_>, raw: &str) -> Option<Result<Direct, NormalizeError>> {
    let category: &str = &ctx.meta.category;
    Some(match category {
        "SignInLogs"
        | "NonInteractiveUserSignInLogs"
        | "ServicePrincipalSignInLogs"
        | "ManagedIdentitySignInLogs"
        | "ADFSSignInLogs" => super::entra_signin::flat(ctx, raw),
        "MicrosoftGraphActivityLogs" => super::graph_activity::flat(ctx, raw),
        "AuditLogs" => super::entra_audit::flat_audit(ctx, raw),
        "UserRiskEvents" | "ServicePrincipalRiskEvents" => {
            super::identity_protection::flat_detection_eventhub(ctx, raw)
        }
        "RiskyUsers" | "RiskyServicePrincipals" => super::identity_protection::flat_state_eventhub(ctx, raw),
        "AdvancedHunting-AlertEvidence" => super::defender::flat_alert_evidence(ctx, raw),
        "AdvancedHunting-IdentityLogonEvents" | "AdvancedHunting-DeviceLogonEvents" => {
            super::defender::flat_logon(ctx, raw)
        }
        "GraphAlert" => super::graph::flat_alert(ctx, raw),
        _ => return None,
    })
}

/// Text of the record (shared, not copied) or any other string (copied); the encoders
/// read no empty strings.
pub(crate) fn t(s: Option<&str>) -> Option<ByteString> {
    s.filter(|s| !s.is_empty()).map(tree::text)
}

/// A string the flat form owns.
pub(crate) fn owned(s: String) -> ByteString {
    ByteString::from(s)
}

/// The base-event attributes of a flat form, as `Draft::into_ocsf` writes them.
pub(crate) struct Base<'a> {
    pub class: Class,
    pub activity_id: u8,
    /// The source's activity label (activity 99), else the caption.
    pub activity_name: Option<&'a str>,
    pub status_id: Option<u8>,
    pub status: Option<String>,
    pub severity_id: u8,
    pub time: ParsedTime,
    /// `metadata.product.name`.
    pub product: ByteString,
    pub uid: u128,
    pub tenant: Option<String>,
}

impl Base<'_> {
    /// The flat form with the base attributes set, and the `Direct` around it.
    pub fn into_direct(self) -> Direct {
        let class = self.class;
        let activity = self.activity_name.unwrap_or(class.activity_caption(self.activity_id));
        let class_uid = i64::from(class.uid());
        let flat = Box::new(Flat {
            class_uid,
            activity_id: i64::from(self.activity_id),
            type_uid: class_uid * 100 + i64::from(self.activity_id),
            severity_id: self.severity_id,
            time_ms: self.time.ms,
            product: Some(self.product),
            title: Some(owned(class.type_name(activity))),
            activity_name: match self.activity_name {
                Some(a) => t(Some(a)),
                None => Some(ByteString::from_static(class.activity_caption(self.activity_id))),
            },
            status: class.status(self.status_id, self.status).map(|(_, s)| match s {
                Cow::Borrowed(c) => ByteString::from_static(c),
                Cow::Owned(s) => owned(s),
            }),
            event_uid: Some(owned(hex128(self.uid))),
            tenant: self.tenant.clone().map(owned),
            ..Flat::default()
        });
        Direct {
            flat,
            class,
            activity_id: self.activity_id,
            time: self.time,
            uid: self.uid,
            entity_key: None,
            tenant: self.tenant,
            detection: None,
        }
    }
}

/// The source location: country code, city, and the coordinates (as `location_obj` writes
/// them, and only both).
pub(crate) fn set_location(
    f: &mut Flat<ByteString>,
    city: Option<&str>,
    country: Option<&str>,
    lat: Option<f64>,
    long: Option<f64>,
) {
    f.city = t(city);
    f.country = t(country);
    if let (Some(la), Some(lo)) = super::common::coordinates(lat, long) {
        f.lat = Some(owned(la.to_string()));
        f.long = Some(owned(lo.to_string()));
    }
}

/// The acting and the target user as the encoders show them: the actor when it names
/// someone (a name or a uid), with the target; else the target as the only user.
pub(crate) fn pair(
    actor: FlatUser<ByteString>,
    user: FlatUser<ByteString>,
) -> (FlatUser<ByteString>, FlatUser<ByteString>) {
    if actor.name.is_some() || actor.uid.is_some() {
        (actor, user)
    } else {
        (user, FlatUser::default())
    }
}
