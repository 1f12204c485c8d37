//! The OCSF model used by the mappers: pinned version, classes with their captions, and the
//! `Draft` every mapper fills before `mod.rs` adds the shared base-event attributes.

use std::borrow::Cow;

use serde_json::Value;

use super::common::{hex128, severity_caption, Obj, Observables};
use crate::decode::time::ParsedTime;

/// OCSF schema version written to `metadata.version` (see `schemas/README.md` for why 1.5.0).
pub const OCSF_VERSION: &str = "1.5.0";

/// `metadata.product.vendor_name`.
pub(crate) const VENDOR: &str = "Microsoft";
/// `metadata.log_provider` values.
pub(crate) const PROVIDER_EVENT_HUB: &str = "Azure Event Hubs";
pub(crate) const PROVIDER_GRAPH: &str = "Microsoft Graph";

/// The OCSF classes this crate emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Base,
    DetectionFinding,
    IncidentFinding,
    AccountChange,
    Authentication,
    EntityManagement,
    ApiActivity,
}

impl Class {
    pub fn uid(self) -> u32 {
        match self {
            Class::Base => 0,
            Class::DetectionFinding => 2004,
            Class::IncidentFinding => 2005,
            Class::AccountChange => 3001,
            Class::Authentication => 3002,
            Class::EntityManagement => 3004,
            Class::ApiActivity => 6003,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Base => "Base Event",
            Class::DetectionFinding => "Detection Finding",
            Class::IncidentFinding => "Incident Finding",
            Class::AccountChange => "Account Change",
            Class::Authentication => "Authentication",
            Class::EntityManagement => "Entity Management",
            Class::ApiActivity => "API Activity",
        }
    }

    pub fn category(self) -> (u32, &'static str) {
        match self {
            Class::Base => (0, "Uncategorized"),
            Class::DetectionFinding | Class::IncidentFinding => (2, "Findings"),
            Class::AccountChange | Class::Authentication | Class::EntityManagement => {
                (3, "Identity & Access Management")
            }
            Class::ApiActivity => (6, "Application Activity"),
        }
    }

    /// Caption of an activity id (`0` Unknown and `99` Other for every class).
    pub fn activity_caption(self, id: u8) -> &'static str {
        if id == 0 {
            return "Unknown";
        }
        if id == 99 {
            return "Other";
        }
        let table: &[&str] = match self {
            Class::Base => &[],
            Class::DetectionFinding | Class::IncidentFinding => &["Create", "Update", "Close"],
            Class::AccountChange => &[
                "Create",
                "Enable",
                "Password Change",
                "Password Reset",
                "Disable",
                "Delete",
                "Attach Policy",
                "Detach Policy",
                "Lock",
                "MFA Factor Enable",
                "MFA Factor Disable",
                "Unlock",
            ],
            Class::Authentication => &[
                "Logon",
                "Logoff",
                "Authentication Ticket",
                "Service Ticket Request",
                "Service Ticket Renew",
                "Preauth",
            ],
            Class::EntityManagement => &[
                "Create",
                "Read",
                "Update",
                "Delete",
                "Move",
                "Enroll",
                "Unenroll",
                "Enable",
                "Disable",
                "Activate",
                "Deactivate",
                "Suspend",
                "Resume",
            ],
            Class::ApiActivity => &["Create", "Read", "Update", "Delete"],
        };
        table.get(usize::from(id) - 1).copied().unwrap_or("Other")
    }

    /// `type_name`: the class name and the activity caption.
    pub fn type_name(self, activity: &str) -> String {
        let mut type_name = String::with_capacity(self.name().len() + 2 + activity.len());
        type_name.push_str(self.name());
        type_name.push_str(": ");
        type_name.push_str(activity);
        type_name
    }

    /// `status_id` and `status` of an event with `status_id` (`status`: the source's label
    /// when the id is 99). OCSF 1.5.0 finding status enums have no 0 Unknown: a Detection
    /// Finding leaves its (recommended) status out, an Incident Finding (status required)
    /// says 99 "Unknown".
    pub fn status(self, status_id: Option<u8>, status: Option<String>) -> Option<(u8, Cow<'static, str>)> {
        let id = match (self, status_id) {
            (Class::DetectionFinding, Some(0)) => None,
            (Class::IncidentFinding, Some(0)) | (Class::IncidentFinding, None) => Some(99),
            (_, s) => s,
        }?;
        Some(match (self, status) {
            (_, Some(s)) if id == 99 => (id, Cow::Owned(s)),
            (Class::IncidentFinding, None) if id == 99 => (id, Cow::Borrowed("Unknown")),
            _ => (id, Cow::Borrowed(self.status_caption(id))),
        })
    }

    /// Caption of a `status_id` (findings and incidents have their own enums).
    pub fn status_caption(self, id: u8) -> &'static str {
        match (self, id) {
            (_, 0) => "Unknown",
            (_, 99) => "Other",
            (Class::DetectionFinding, 1) | (Class::IncidentFinding, 1) => "New",
            (Class::DetectionFinding, 2) | (Class::IncidentFinding, 2) => "In Progress",
            (Class::DetectionFinding, 3) => "Suppressed",
            (Class::IncidentFinding, 3) => "On Hold",
            (Class::DetectionFinding, 4) | (Class::IncidentFinding, 4) => "Resolved",
            (Class::DetectionFinding, 5) => "Archived",
            (Class::IncidentFinding, 5) => "Closed",
            (Class::DetectionFinding, _) | (Class::IncidentFinding, _) => "Other",
            (_, 1) => "Success",
            (_, 2) => "Failure",
            _ => "Other",
        }
    }
}

/// What a mapper produces; `mod.rs` turns it into the final OCSF object.
#[derive(Debug)]
pub(crate) struct Draft {
    pub class: Class,
    pub activity_id: u8,
    /// Source label when `activity_id` is 99 (or to override the caption).
    pub activity_name: Option<String>,
    pub severity_id: u8,
    pub time: ParsedTime,
    pub status_id: Option<u8>,
    /// Source label when `status_id` is 99.
    pub status: Option<String>,
    /// `metadata.product.name`.
    pub product: String,
    /// `metadata.product.feature.name` (API path or category).
    pub feature: String,
    /// `metadata.log_provider`.
    pub log_provider: &'static str,
    /// `metadata.original_time`: the source time text as received.
    pub original_time: Option<String>,
    pub correlation_uid: Option<String>,
    pub labels: Vec<Value>,
    /// Stable hash for `metadata.uid`.
    pub uid: u128,
    pub entity_key: Option<String>,
    pub tenant: Option<String>,
    /// Class-specific attributes (`user`, `finding_info`, `src_endpoint`, ...).
    pub body: Obj,
    pub unmapped: Obj,
    pub observables: Observables,
    /// `device` or `actor` set on a class that gets them through the host profile.
    pub host_profile: bool,
    /// The detection id that ties this finding to the same detection on another input.
    pub detection: Option<(super::correlate::DetectionKind, String)>,
}

impl Draft {
    pub fn new(class: Class, time: ParsedTime, product: impl Into<String>) -> Draft {
        Draft {
            class,
            activity_id: 0,
            activity_name: None,
            severity_id: 0,
            time,
            status_id: None,
            status: None,
            product: product.into(),
            feature: String::new(),
            log_provider: PROVIDER_EVENT_HUB,
            original_time: None,
            correlation_uid: None,
            labels: Vec::new(),
            uid: 0,
            entity_key: None,
            tenant: None,
            body: Obj::with_capacity(16),
            // No encoder of a lean normalization reads `unmapped`.
            unmapped: if super::tree::lean() {
                Obj::discarding()
            } else {
                Obj::with_capacity(16)
            },
            observables: Observables::default(),
            host_profile: false,
            detection: None,
        }
    }

    /// Build the OCSF object: class attributes plus the base-event attributes.
    /// `log_name` is the input category; `processed_ms` the forwarder's receive time.
    pub fn into_ocsf(self, log_name: &str, processed_ms: i64) -> (Obj, Observables) {
        let Draft {
            class,
            activity_id,
            activity_name,
            severity_id,
            time,
            status_id,
            status,
            product,
            feature,
            log_provider,
            original_time,
            correlation_uid,
            labels,
            uid,
            entity_key: _,
            detection: _,
            tenant,
            body,
            unmapped,
            observables,
            host_profile,
        } = self;
        // The base attributes, the class's, then metadata and unmapped.
        let mut o = Obj::with_capacity(16 + body.len());
        let (cat_uid, cat_name) = class.category();
        let activity = activity_name.as_deref().unwrap_or(class.activity_caption(activity_id));
        let type_name = class.type_name(activity);
        o.v("class_uid", class.uid())
            .c("class_name", class.name())
            .v("category_uid", cat_uid)
            .c("category_name", cat_name)
            .v("activity_id", activity_id)
            .v("type_uid", u64::from(class.uid()) * 100 + u64::from(activity_id))
            .v("type_name", type_name);
        match activity_name {
            Some(a) => o.v("activity_name", a),
            None => o.c("activity_name", class.activity_caption(activity_id)),
        };
        o.v("severity_id", severity_id)
            .c("severity", severity_caption(severity_id))
            .v("time", time.ms)
            .v("timezone_offset", 0);
        if let Some((id, status)) = class.status(status_id, status) {
            o.v("status_id", id);
            match status {
                Cow::Borrowed(c) => o.c("status", c),
                Cow::Owned(s) => o.v("status", s),
            };
        }
        o.append(body);
        let mut md = Obj::with_capacity(10);
        md.c("version", super::ocsf::OCSF_VERSION)
            .v("uid", hex128(uid))
            .v("log_name", log_name)
            .c("log_provider", log_provider)
            .s("tenant_uid", tenant.as_deref())
            .s("original_time", original_time.as_deref())
            .v("processed_time", processed_ms)
            .s("correlation_uid", correlation_uid.as_deref())
            .arr("labels", labels);
        let mut p = Obj::new();
        p.c("vendor_name", VENDOR).v("name", product);
        if !feature.is_empty() {
            let mut f = Obj::new();
            f.v("name", feature);
            p.o("feature", f);
        }
        md.o("product", p);
        if host_profile {
            md.v("profiles", vec![Value::from("host")]);
        }
        o.o("metadata", md).o("unmapped", unmapped);
        (o, observables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions() {
        assert_eq!(Class::AccountChange.activity_caption(4), "Password Reset");
        assert_eq!(Class::AccountChange.activity_caption(12), "Unlock");
        assert_eq!(Class::EntityManagement.activity_caption(13), "Resume");
        assert_eq!(Class::ApiActivity.activity_caption(99), "Other");
        assert_eq!(Class::ApiActivity.activity_caption(7), "Other");
        assert_eq!(Class::IncidentFinding.status_caption(5), "Closed");
        assert_eq!(Class::DetectionFinding.status_caption(3), "Suppressed");
        assert_eq!(Class::Authentication.status_caption(2), "Failure");
    }

    #[test]
    fn type_uid_is_computed() {
        let mut d = Draft::new(
            Class::DetectionFinding,
            ParsedTime {
                ms: 5,
                assumed_utc: false,
            },
            "p",
        );
        d.activity_id = 2;
        let (o, _) = d.into_ocsf("x", 0);
        let o = o.into_value();
        assert_eq!(o["type_uid"], 200_402);
        assert_eq!(o["type_name"], "Detection Finding: Update");
        assert_eq!(o["category_uid"], 2);
        assert_eq!(o["metadata"]["version"], OCSF_VERSION);
    }
}
