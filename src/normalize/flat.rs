//! `Flat`: what the attribute encoders (CEF, LEEF, the syslog header) write of one event,
//! as flat values instead of an OCSF tree. Read from a tree by `encode::fields::flat_of`, or
//! filled by a mapper straight from the typed record when the normalization is lean and
//! every output is such an encoder (`normalize::direct`), so that no tree is built.
//!
//! Every member is the OCSF attribute it is named after, resolved the way the encoders read
//! it (first evidence fallbacks applied); what falls back on the event's metadata (title,
//! category, tenant, change type) is resolved when written, from the metadata at hand.

use std::ops::Deref;

use crate::event::{EventKind, EventMeta};

/// Name and uid of a user (OCSF `user.name`, else `user.email_addr`; `user.uid`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlatUser<S> {
    pub name: Option<S>,
    pub uid: Option<S>,
}

#[cfg(test)]
impl<S> FlatUser<S> {
    fn map<T>(&self, f: &impl Fn(&S) -> T) -> FlatUser<T> {
        FlatUser {
            name: self.name.as_ref().map(f),
            uid: self.uid.as_ref().map(f),
        }
    }
}

/// The encoders' view of one event. `S` is the string type: borrowed text of a tree
/// (`Cow<str>`), or shared slices of the record (`ByteString`) when filled by a mapper.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flat<S> {
    pub class_uid: i64,
    pub activity_id: i64,
    pub type_uid: i64,
    /// OCSF `severity_id` (0-6, 99).
    pub severity_id: u8,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// `finding_info.first_seen_time`, else `start_time`.
    pub start_ms: Option<i64>,
    /// `finding_info.last_seen_time`, else `end_time`.
    pub end_ms: Option<i64>,
    /// `metadata.product.name`.
    pub product: Option<S>,
    /// `metadata.product.version`.
    pub product_version: Option<S>,
    /// `finding_info.analytic.uid`, else `finding_info.types.0` (signature detail).
    pub detector: Option<S>,
    /// Title: `finding_info.title`, an incident's `message`, else `type_name`/`class_name`.
    pub title: Option<S>,
    /// Microsoft-specific type: detector, an audit's `message`, else `metadata.log_name`.
    pub category: Option<S>,
    /// `finding_info.uid` as text.
    pub finding_uid: Option<S>,
    pub activity_name: Option<S>,
    pub status: Option<S>,
    pub message: Option<S>,
    /// The acting user (`actor.user`, else `user`).
    pub src_user: FlatUser<S>,
    /// The target `user` when there is an acting one.
    pub dst_user: FlatUser<S>,
    /// `src_endpoint.ip`, else the first evidence's.
    pub src_ip: Option<S>,
    pub dst_ip: Option<S>,
    /// `src_endpoint.hostname`, else `device.hostname`.
    pub src_host: Option<S>,
    pub dst_host: Option<S>,
    /// `actor.app_name`.
    pub app_name: Option<S>,
    /// `service.name`.
    pub service_name: Option<S>,
    /// `http_request.url.url_string`.
    pub request_url: Option<S>,
    /// `http_request.http_method`.
    pub request_method: Option<S>,
    /// `http_request.user_agent`, else (no source IP of the event's own) the first evidence's.
    pub user_agent: Option<S>,
    pub status_code: Option<S>,
    pub status_detail: Option<S>,
    /// Portal link: `finding_info.src_url`, else `src_url`.
    pub portal_url: Option<S>,
    /// Source location (`src_endpoint.location`, else the first evidence's when the event has
    /// no source IP of its own): country code, city, and the coordinates as decimal text
    /// (both or neither are written).
    pub country: Option<S>,
    pub city: Option<S>,
    pub lat: Option<S>,
    pub long: Option<S>,
    /// The file of the first evidence with one (`file`, else `process.file`): name, path and
    /// hash (SHA-256, else SHA-1, else the first listed).
    pub file_name: Option<S>,
    pub file_path: Option<S>,
    pub file_hash: Option<S>,
    /// `url.url_string` of the first evidence with one.
    pub url: Option<S>,
    /// `metadata.tenant_uid`.
    pub tenant: Option<S>,
    /// `unmapped.change_type`.
    pub change_type: Option<S>,
    /// `metadata.uid`.
    pub event_uid: Option<S>,
}

impl<S: Deref<Target = str>> Flat<S> {
    /// The title, else the event kind.
    pub fn title<'a>(&'a self, meta: &EventMeta) -> &'a str {
        self.title.as_deref().unwrap_or_else(|| meta.kind.as_str())
    }

    /// The Microsoft-specific type, else the input category.
    pub fn category<'a>(&'a self, meta: &'a EventMeta) -> &'a str {
        self.category.as_deref().unwrap_or(&meta.category)
    }

    /// `metadata.tenant_uid`, else the source's tenant.
    pub fn tenant<'a>(&'a self, meta: &'a EventMeta) -> Option<&'a str> {
        self.tenant
            .as_deref()
            .or(meta.tenant.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// The change type the source computed, else `unmapped.change_type`.
    pub fn change_type<'a>(&'a self, meta: &'a EventMeta) -> Option<&'a str> {
        meta.change_type
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.change_type.as_deref())
    }

    /// The finding uid, else an incident's entity key.
    pub fn finding_uid<'a>(&'a self, meta: &'a EventMeta) -> Option<&'a str> {
        self.finding_uid.as_deref().or_else(|| {
            let key = meta.entity_key.as_deref().filter(|k| !k.is_empty());
            (self.class_uid == 2005).then_some(key?)
        })
    }

    /// Product name for a header: `metadata.product.name`, else a default by kind.
    pub fn product_or_default(&self, kind: EventKind) -> &str {
        self.product.as_deref().unwrap_or(match kind {
            EventKind::Incident | EventKind::Alert | EventKind::Hunting => "Microsoft Defender XDR",
            EventKind::SignIn | EventKind::Audit | EventKind::GraphActivity => "Microsoft Entra ID",
            EventKind::RiskDetection | EventKind::RiskState => "Microsoft Entra ID Protection",
            EventKind::Generic => "Microsoft 365",
        })
    }
}

#[cfg(test)]
impl<S> Flat<S> {
    /// The same values in another string type (tests compare `Flat<String>`s).
    pub fn map<T>(&self, f: impl Fn(&S) -> T) -> Flat<T> {
        let o = |v: &Option<S>| v.as_ref().map(&f);
        Flat {
            class_uid: self.class_uid,
            activity_id: self.activity_id,
            type_uid: self.type_uid,
            severity_id: self.severity_id,
            time_ms: self.time_ms,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            product: o(&self.product),
            product_version: o(&self.product_version),
            detector: o(&self.detector),
            title: o(&self.title),
            category: o(&self.category),
            finding_uid: o(&self.finding_uid),
            activity_name: o(&self.activity_name),
            status: o(&self.status),
            message: o(&self.message),
            src_user: self.src_user.map(&f),
            dst_user: self.dst_user.map(&f),
            src_ip: o(&self.src_ip),
            dst_ip: o(&self.dst_ip),
            src_host: o(&self.src_host),
            dst_host: o(&self.dst_host),
            app_name: o(&self.app_name),
            service_name: o(&self.service_name),
            request_url: o(&self.request_url),
            request_method: o(&self.request_method),
            user_agent: o(&self.user_agent),
            status_code: o(&self.status_code),
            status_detail: o(&self.status_detail),
            portal_url: o(&self.portal_url),
            country: o(&self.country),
            city: o(&self.city),
            lat: o(&self.lat),
            long: o(&self.long),
            file_name: o(&self.file_name),
            file_path: o(&self.file_path),
            file_hash: o(&self.file_hash),
            url: o(&self.url),
            tenant: o(&self.tenant),
            change_type: o(&self.change_type),
            event_uid: o(&self.event_uid),
        }
    }
}
