//! The event that flows through the pipeline: raw bytes, metadata, normalized form and finalizer.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::ack::Finalizer;

/// What an event is about. Sinks filter on it and topic templates use its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A Graph security incident (Defender XDR).
    Incident,
    /// A Graph security alert (inside an incident, or a Defender AlertInfo/AlertEvidence row).
    Alert,
    /// A sign-in record (interactive, non-interactive, service principal, managed identity, ADFS).
    SignIn,
    /// A directory audit record.
    Audit,
    /// An Identity Protection risk detection (user or service principal).
    RiskDetection,
    /// A risky user / risky service principal state record.
    RiskState,
    /// A Defender advanced hunting row that is not an alert.
    Hunting,
    /// Microsoft Graph activity logs.
    GraphActivity,
    /// Anything else: forwarded as a generic event, never dropped.
    Generic,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Incident,
        EventKind::Alert,
        EventKind::SignIn,
        EventKind::Audit,
        EventKind::RiskDetection,
        EventKind::RiskState,
        EventKind::Hunting,
        EventKind::GraphActivity,
        EventKind::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Incident => "incident",
            EventKind::Alert => "alert",
            EventKind::SignIn => "signin",
            EventKind::Audit => "audit",
            EventKind::RiskDetection => "risk_detection",
            EventKind::RiskState => "risk_state",
            EventKind::Hunting => "hunting",
            EventKind::GraphActivity => "graph_activity",
            EventKind::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kind of an Event Hub record from its `category`.
    pub fn from_category(category: &str) -> EventKind {
        match category {
            "SignInLogs"
            | "NonInteractiveUserSignInLogs"
            | "ServicePrincipalSignInLogs"
            | "ManagedIdentitySignInLogs"
            | "ADFSSignInLogs" => EventKind::SignIn,
            "AuditLogs" | "ProvisioningLogs" => EventKind::Audit,
            "UserRiskEvents" | "ServicePrincipalRiskEvents" => EventKind::RiskDetection,
            "RiskyUsers" | "RiskyServicePrincipals" => EventKind::RiskState,
            "MicrosoftGraphActivityLogs" => EventKind::GraphActivity,
            "AdvancedHunting-AlertInfo" | "AdvancedHunting-AlertEvidence" => EventKind::Alert,
            // Categories the Graph decoder gives its objects.
            "GraphIncident" => EventKind::Incident,
            "GraphAlert" => EventKind::Alert,
            "GraphRiskDetection" | "GraphServicePrincipalRiskDetection" => EventKind::RiskDetection,
            "GraphRiskyUser" | "GraphRiskyServicePrincipal" => EventKind::RiskState,
            c if c.starts_with("AdvancedHunting-") => EventKind::Hunting,
            _ => EventKind::Generic,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an event came from inside its source: enough to find it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Partition (Event Hub partition id, file path, Graph tenant stream).
    pub partition: Arc<str>,
    /// Offset of the unit (message, line, page) that carried the event.
    pub offset: u64,
    /// Sequence number where the source has one (Event Hub).
    pub sequence: Option<i64>,
    /// Index of the record inside its unit.
    pub index: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.partition, self.offset, self.index)
    }
}

impl Position {
    /// A position without a sequence number.
    pub fn at(partition: Arc<str>, offset: u64, index: u32) -> Position {
        Position {
            partition,
            offset,
            sequence: None,
            index,
        }
    }
}

/// Metadata that travels with every event.
#[derive(Clone, Debug)]
pub struct EventMeta {
    /// Name of the source component (`[sources.NAME]`).
    pub source: Arc<str>,
    /// Tenant id, when known.
    pub tenant: Option<Arc<str>>,
    /// Category: Event Hub `category`, or `GraphIncident`, `GraphAlert`, ...
    pub category: Arc<str>,
    pub kind: EventKind,
    pub position: Position,
    /// When the forwarder read the event, epoch ms.
    pub received_ms: i64,
    /// When the event happened (or this version was made), epoch ms, when known.
    pub event_ms: Option<i64>,
    /// OCSF severity_id (0 unknown .. 6 fatal, 99 other); set by normalization.
    pub severity_id: u8,
    /// Stable entity key (incident id for an incident and its alerts); Kafka key.
    pub entity_key: Option<Arc<str>>,
    /// The body needed a repair before it parsed (single quotes, raw newlines).
    pub repaired: bool,
    /// `Some` when decoding skipped the record's nested values without checking their
    /// syntax, which normalization checks: the bytes that followed the record in its unit
    /// (`DecodedRecord::unchecked`).
    pub unchecked: Option<&'static str>,
    /// Change type from the Graph state engine (`created`, `updated`, `alert_added`,
    /// `status_changed`, ...), when the source computed one.
    pub change_type: Option<Arc<str>>,
    /// Fields that changed since the last version the source emitted (Graph poller's
    /// `updated` / `resolved` events); OCSF `unmapped.changed_fields`.
    pub changed_fields: Option<Arc<[String]>>,
    /// Normalization found this detection's creation already forwarded through the other
    /// input (Graph or Event Hub); the router drops it when suppression is configured.
    pub duplicate: bool,
    /// OCSF `class_uid`, once normalized: what sinks need of the normalized form after the
    /// pipeline has encoded the event and let the form go (Kafka topic and headers).
    pub class_uid: Option<u32>,
    /// OCSF `metadata.uid`, once normalized (the Kafka key of an event without entity key).
    pub uid: Option<EventUid>,
}

/// An event's OCSF `metadata.uid` kept in its metadata once the normalized form is let go.
/// Uids of up to 32 bytes (the normalizer's are 32 hex digits) are held inline: a small
/// allocation per event that outlives its batch's trees would pin the allocator's pages for
/// as long as the event waits in a sink's buffer. Longer text is shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventUid {
    Inline { len: u8, bytes: [u8; EventUid::INLINE] },
    Shared(Arc<str>),
}

impl EventUid {
    const INLINE: usize = 32;

    pub fn new(uid: &str) -> EventUid {
        match uid.len() {
            len @ 0..=EventUid::INLINE => {
                let mut bytes = [0; EventUid::INLINE];
                bytes[..len].copy_from_slice(uid.as_bytes());
                EventUid::Inline { len: len as u8, bytes }
            }
            _ => EventUid::Shared(Arc::from(uid)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Whole characters: the bytes of a `str` no longer than the buffer.
            EventUid::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default(),
            EventUid::Shared(t) => t,
        }
    }
}

impl fmt::Display for EventUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventMeta {
    /// Metadata of an event just read: received now, everything learned later unset.
    pub fn new(source: Arc<str>, category: &str, kind: EventKind, position: Position) -> EventMeta {
        EventMeta::shared(source, Arc::from(category), kind, position)
    }

    /// [`EventMeta::new`] with a category shared with other events.
    pub fn shared(source: Arc<str>, category: Arc<str>, kind: EventKind, position: Position) -> EventMeta {
        EventMeta {
            source,
            tenant: None,
            category,
            kind,
            position,
            received_ms: now_ms(),
            event_ms: None,
            severity_id: 0,
            entity_key: None,
            repaired: false,
            unchecked: None,
            change_type: None,
            changed_fields: None,
            duplicate: false,
            class_uid: None,
            uid: None,
        }
    }
}

/// Why an event is quarantined instead of delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantine {
    /// Pipeline stage that rejected it: `decode`, `normalize`, `sink:NAME`.
    pub stage: Arc<str>,
    /// Short machine-readable reason, used as a metric label.
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

/// The normalized (OCSF) form of an event. The normalizer hands over the object it built;
/// the JSON line is written straight from it ([`Normalized::write_json`]) and attribute-reading
/// encoders (CEF, LEEF, HEC, syslog headers) read it in place; a `serde_json::Value` is only
/// built when asked for ([`Normalized::ocsf`]) and then shared by every sink.
///
/// A lean normalization of a record the mappers can write flat has no tree: only what CEF,
/// LEEF and syslog headers write ([`Normalized::flat`]). The pipeline asks for one only when
/// every output is such an encoder, run before the event waits anywhere; anything else reads
/// it as no OCSF object (`null`) and refuses it.
#[derive(Clone, Debug)]
pub struct Normalized {
    pub class_uid: u32,
    tree: Option<crate::normalize::Obj>,
    flat: Option<Box<crate::normalize::Flat<bytestring::ByteString>>>,
    value: OnceLock<serde_json::Value>,
}

impl Normalized {
    /// From an OCSF event held as a JSON value.
    pub fn from_value(class_uid: u32, ocsf: serde_json::Value) -> Normalized {
        Normalized {
            class_uid,
            tree: None,
            flat: None,
            value: OnceLock::from(ocsf),
        }
    }

    pub(crate) fn from_flat(class_uid: u32, flat: Box<crate::normalize::Flat<bytestring::ByteString>>) -> Normalized {
        Normalized {
            class_uid,
            tree: None,
            flat: Some(flat),
            value: OnceLock::new(),
        }
    }

    /// The flat form of a lean normalization without a tree.
    pub(crate) fn flat(&self) -> Option<&crate::normalize::Flat<bytestring::ByteString>> {
        self.flat.as_deref()
    }

    pub(crate) fn from_tree(class_uid: u32, tree: crate::normalize::Obj) -> Normalized {
        Normalized {
            class_uid,
            tree: Some(tree),
            flat: None,
            value: OnceLock::new(),
        }
    }

    /// The OCSF event as a JSON value (an object).
    pub fn ocsf(&self) -> &serde_json::Value {
        self.value.get_or_init(|| match &self.tree {
            Some(t) => t.to_value(),
            None => serde_json::Value::Null,
        })
    }

    /// The OCSF event for attribute-reading encoders, without building a `Value` when the
    /// normalizer's object is at hand.
    pub(crate) fn root(&self) -> crate::encode::fields::Field<'_> {
        match &self.tree {
            Some(t) => crate::encode::fields::Field::Obj(t),
            None => crate::encode::fields::Field::Val(self.ocsf()),
        }
    }

    /// Whether the OCSF event is an object (encoders refuse anything else).
    pub fn is_object(&self) -> bool {
        self.tree.is_some() || self.ocsf().is_object()
    }

    /// Append the OCSF event as compact JSON (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match &self.tree {
            Some(t) => t.write_json(out),
            None => serde_json::to_writer(out, self.ocsf()),
        }
    }

    /// Binary form for the disk buffer (`crate::buffer`): what every encoder reads, restored
    /// exactly by [`Normalized::decode`] (tree members in order, values bit for bit). A flat
    /// form never reaches a disk buffer (a disk-buffered sink makes the pipeline normalize in
    /// full); should one, it is written as no OCSF object, which every encoder refuses.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.flat.is_none(), "a flat normalization reached a disk buffer");
        use crate::buffer::wire;
        wire::put_u32(out, self.class_uid);
        match &self.tree {
            Some(t) => {
                wire::put_u8(out, 1);
                t.encode(out);
            }
            None => {
                wire::put_u8(out, 0);
                wire::put_value(out, self.ocsf());
            }
        }
    }

    pub(crate) fn decode(
        r: &mut crate::buffer::wire::Reader<'_>,
    ) -> Result<Normalized, crate::buffer::wire::WireError> {
        let class_uid = r.u32()?;
        match r.u8()? {
            1 => Ok(Normalized::from_tree(class_uid, crate::normalize::Obj::decode(r, 0)?)),
            0 => Ok(Normalized::from_value(class_uid, r.value()?)),
            _ => Err(crate::buffer::wire::WireError::Invalid("normalized tag")),
        }
    }

    /// `metadata.uid`.
    pub fn event_uid(&self) -> Option<&str> {
        if let Some(f) = &self.flat {
            return f.event_uid.as_deref();
        }
        match &self.tree {
            Some(t) => t.get_str_in("metadata", "uid"),
            None => self.ocsf().pointer("/metadata/uid").and_then(|v| v.as_str()),
        }
    }
}

/// One event: raw bytes of one record, metadata, normalized form, and the finalizer
/// that reports delivery back to the source.
#[derive(Debug)]
pub struct Event {
    pub raw: Bytes,
    pub meta: EventMeta,
    pub normalized: Option<Arc<Normalized>>,
    /// Boxed: rare, and every event in flight carries the slot.
    pub quarantine: Option<Box<Quarantine>>,
    /// This event's message(s) for the one sink it is routed to, encoded by the pipeline
    /// right after routing; once set, `raw` and `normalized` may have been let go, and the
    /// sink sends these bytes as they are.
    pub encoded: Option<crate::encode::Encoded>,
    pub finalizer: Finalizer,
}

impl Event {
    pub fn new(raw: Bytes, meta: EventMeta, finalizer: Finalizer) -> Event {
        Event {
            raw,
            meta,
            normalized: None,
            quarantine: None,
            encoded: None,
            finalizer,
        }
    }

    /// A copy for another sink: shares the raw bytes and normalized form, and holds its
    /// own finalizer handle, so the source waits for every copy.
    pub fn fan_out(&self) -> Event {
        Event {
            raw: self.raw.clone(),
            meta: self.meta.clone(),
            normalized: self.normalized.clone(),
            quarantine: self.quarantine.clone(),
            encoded: self.encoded.clone(),
            finalizer: self.finalizer.clone(),
        }
    }

    pub fn quarantine(&mut self, stage: impl Into<Arc<str>>, reason: &'static str, detail: String) {
        self.quarantine = Some(Box::new(Quarantine {
            stage: stage.into(),
            reason,
            detail,
        }));
    }
}

/// A batch of events moving between stages.
pub type Batch = Vec<Event>;

/// Wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_uid_reads_back_as_the_text_it_was_made_from() {
        let long = "x".repeat(33);
        for uid in [
            "0123456789abcdef0123456789abcdef",
            "da637551227677560813_-961444813",
            "é0123456789abcdef0123456789abcd",
            "",
            &long,
        ] {
            let u = EventUid::new(uid);
            assert_eq!(u.as_str(), uid);
            assert_eq!(u.to_string(), uid);
            assert_eq!(matches!(u, EventUid::Inline { .. }), uid.len() <= 32, "{uid}");
        }
    }
}
