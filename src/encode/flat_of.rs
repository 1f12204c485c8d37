//! `flat_of`: what the attribute encoders (CEF, LEEF, the syslog header) read of a tree's
//! event, resolved once (the acting and target users, the source IP and its location and
//! user agent, the evidence's file and URL (or an analysed email's first URL), title and
//! category).

use std::borrow::Cow;

use super::fields::{Field, View};
use crate::normalize::{Flat, FlatUser};

/// The resolvers behind [`flat_of`].
impl<'a> View<'a> {
    /// The finding uid (incident or alert id) as text.
    fn finding_uid(&self) -> Option<Cow<'a, str>> {
        self.node("finding_info.uid").and_then(Field::as_text)
    }

    /// The Microsoft-specific type: detector id, risk event type, alert category, audit
    /// activity or log name (the input category is the encoders' fallback).
    fn ms_category(&self) -> Option<&'a str> {
        let audit = matches!(self.class_uid(), 3001 | 3004);
        self.str("finding_info.analytic.uid")
            .or_else(|| self.str("finding_info.types.0"))
            .or_else(|| audit.then(|| self.str("message")).flatten())
            .or_else(|| self.str("metadata.log_name"))
    }

    /// Human title without variable data where possible (the kind is the encoders' fallback).
    fn title(&self) -> Option<&'a str> {
        self.str("finding_info.title")
            .or_else(|| (self.class_uid() == 2005).then(|| self.str("message"))?)
            .or_else(|| self.first(&["type_name", "class_name"]))
    }

    /// The acting user (`actor.user`, else `user`) and, when both exist, the target `user`.
    fn users(&self) -> (UserRef<'a>, UserRef<'a>) {
        let actor = UserRef::of(self.node("actor.user"));
        let user = UserRef::of(self.node("user"));
        if actor.is_some() {
            (actor, user)
        } else {
            (user, UserRef::default())
        }
    }

    /// The source IP: `src_endpoint.ip`, else that of the first evidence with one (a risk
    /// detection's; an alert lists its user evidence first and the IP evidence after).
    fn src_ip(&self) -> Option<&'a str> {
        self.str("src_endpoint.ip").or_else(|| {
            self.src_evidence()
                .and_then(|e| self.str(&format!("{e}.src_endpoint.ip")))
        })
    }

    /// The destination IP: `dst_endpoint.ip`, else that of the first evidence with one (a
    /// Defender evidence row's remote address, a Graph IP evidence in the destination role).
    fn dst_ip(&self) -> Option<&'a str> {
        self.str("dst_endpoint.ip").or_else(|| {
            self.evidence_with("dst_endpoint.ip")
                .and_then(|e| self.str(&format!("{e}.dst_endpoint.ip")))
        })
    }

    /// `evidences.N` of the first evidence with a source IP (of the first 32).
    fn src_evidence(&self) -> Option<String> {
        self.evidence_with("src_endpoint.ip")
    }

    /// `evidences.N` of the first evidence (of the first 32) with a string at `leaf`.
    fn evidence_with(&self, leaf: &str) -> Option<String> {
        self.node("evidences")?;
        (0..32)
            .map(|i| format!("evidences.{i}"))
            .take_while(|e| self.node(e).is_some())
            .find(|e| self.str(&format!("{e}.{leaf}")).is_some())
    }

    /// The client's geolocation: `src_endpoint.location`, else that of the evidence whose
    /// source IP is used when the event has no source IP of its own (risk detections,
    /// alerts), so that the location always belongs to the *source IP*.
    fn src_location(&self) -> Option<Field<'a>> {
        let own = || self.node("src_endpoint.location");
        let loc = if self.has_own_src_ip() {
            own()
        } else {
            let e = self.src_evidence().unwrap_or_else(|| "evidences.0".into());
            self.node(&format!("{e}.src_endpoint.location")).or_else(own)
        };
        loc.filter(|l| l.is_object())
    }

    /// The client's user agent: `http_request.user_agent`, else, without a source IP of its
    /// own, that of the same evidence as for [`View::src_location`].
    fn user_agent(&self) -> Option<&'a str> {
        self.str("http_request.user_agent").or_else(|| {
            if self.has_own_src_ip() {
                return None;
            }
            let e = self.src_evidence().unwrap_or_else(|| "evidences.0".into());
            self.str(&format!("{e}.http_request.user_agent"))
        })
    }

    /// `evidences.N.file` of the first evidence (of the first 32) with a file name, path or
    /// hash, else `evidences.N.process.file` of the first such process (a file evidence
    /// before the image of a process that names it).
    fn evidence_file(&self) -> Option<String> {
        self.node("evidences")?;
        let evidences = || {
            (0..32)
                .map(|i| format!("evidences.{i}"))
                .take_while(|e| self.node(e).is_some())
        };
        let has_file = |f: &String| {
            ["name", "path", "hashes.0.value"]
                .iter()
                .any(|k| self.str(&format!("{f}.{k}")).is_some())
        };
        evidences()
            .map(|e| format!("{e}.file"))
            .find(has_file)
            .or_else(|| evidences().map(|e| format!("{e}.process.file")).find(has_file))
    }

    /// A file's hash: SHA-256 (`algorithm_id` 3), else SHA-1 (2), else the first listed.
    fn file_hash(&self, file: &str) -> Option<&'a str> {
        let hash = |i: usize| {
            let h = format!("{file}.hashes.{i}");
            self.node(&h)?;
            Some((self.int(&format!("{h}.algorithm_id")), self.str(&format!("{h}.value"))))
        };
        let listed: Vec<_> = (0..8).map_while(hash).collect();
        [Some(3), Some(2)]
            .iter()
            .find_map(|alg| listed.iter().find(|(a, v)| a == alg && v.is_some()))
            .or_else(|| listed.iter().find(|(_, v)| v.is_some()))
            .and_then(|(_, v)| *v)
    }

    /// Whether the event names a source IP of its own: the client details of its first
    /// evidence (risk detections) are used only when it does not.
    fn has_own_src_ip(&self) -> bool {
        self.str("src_endpoint.ip").is_some()
    }
}

/// What the attribute encoders write of a tree's event, read once.
pub(crate) fn flat_of<'a>(v: &View<'a>) -> Flat<Cow<'a, str>> {
    let s = |path: &str| v.str(path).map(Cow::Borrowed);
    let b = |x: Option<&'a str>| x.map(Cow::Borrowed);
    let user = |u: UserRef<'a>| FlatUser {
        name: b(u.name),
        uid: b(u.uid),
    };
    let (src_user, dst_user) = v.users();
    let loc = v.src_location();
    let ls = |k: &str| b(loc?.member(k)?.as_str().filter(|s| !s.is_empty()));
    let ln = |k: &str| loc?.member(k)?.as_text();
    let (lat, long) = match (ln("lat"), ln("long")) {
        (Some(lat), Some(long)) => (Some(lat), Some(long)),
        _ => (None, None),
    };
    let file = v.evidence_file();
    let file_str = |k: &str| file.as_ref().and_then(|f| s(&format!("{f}.{k}")));
    // A URL evidence, else the first URL of an analysed email message.
    let url = ["url.url_string", "email.urls.0.url_string"]
        .iter()
        .find_map(|leaf| v.evidence_with(leaf).and_then(|e| s(&format!("{e}.{leaf}"))));
    Flat {
        class_uid: v.class_uid(),
        activity_id: v.activity_id(),
        type_uid: v.type_uid(),
        severity_id: v.severity_id(),
        time_ms: v.time_ms(),
        start_ms: v.int("finding_info.first_seen_time").or_else(|| v.int("start_time")),
        end_ms: v.int("finding_info.last_seen_time").or_else(|| v.int("end_time")),
        product: s("metadata.product.name"),
        product_version: s("metadata.product.version"),
        detector: b(v.first(&["finding_info.analytic.uid", "finding_info.types.0"])),
        title: b(v.title()),
        category: b(v.ms_category()),
        finding_uid: v.finding_uid(),
        activity_name: s("activity_name"),
        status: s("status"),
        message: s("message"),
        src_user: user(src_user),
        dst_user: user(dst_user),
        src_ip: b(v.src_ip()),
        dst_ip: b(v.dst_ip()),
        src_host: b(v.first(&["src_endpoint.hostname", "device.hostname"])),
        dst_host: s("dst_endpoint.hostname"),
        app_name: s("actor.app_name"),
        service_name: s("service.name"),
        request_url: s("http_request.url.url_string"),
        request_method: s("http_request.http_method"),
        user_agent: b(v.user_agent()),
        status_code: v.text("status_code"),
        status_detail: s("status_detail"),
        portal_url: b(v.first(&["finding_info.src_url", "src_url"])),
        country: ls("country"),
        city: ls("city"),
        lat,
        long,
        file_name: file_str("name"),
        file_path: file_str("path"),
        file_hash: file.as_deref().and_then(|f| b(v.file_hash(f))),
        url,
        tenant: s("metadata.tenant_uid"),
        change_type: s("unmapped.change_type"),
        event_uid: s("metadata.uid"),
    }
}

/// Name and uid of an OCSF user object.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UserRef<'a> {
    pub name: Option<&'a str>,
    pub uid: Option<&'a str>,
}

impl<'a> UserRef<'a> {
    pub fn of(v: Option<Field<'a>>) -> UserRef<'a> {
        let s = |u: Field<'a>, k: &str| u.member(k)?.as_str().filter(|s| !s.is_empty());
        match v.filter(|u| u.is_object()) {
            Some(u) => UserRef {
                name: s(u, "name").or_else(|| s(u, "email_addr")),
                uid: s(u, "uid"),
            },
            None => UserRef::default(),
        }
    }

    pub fn is_some(&self) -> bool {
        self.name.is_some() || self.uid.is_some()
    }
}
