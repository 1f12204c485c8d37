//! Event batches to record payloads and back: everything a sink and its encoders read
//! (metadata, raw bytes, the normalized form with its tree structure) is kept exactly.
//! Quarantine marks are not kept: the router never routes a quarantined event to a sink.

use std::sync::Arc;

use bytes::Bytes;

use super::wire::{self, Reader, WireError};
use crate::ack::Finalizer;
use crate::event::{Event, EventKind, EventMeta, Normalized, Position};

/// Payload format version (first byte).
const VERSION: u8 = 1;

/// Append the payload of `events` to `out`.
pub fn encode_batch(events: &[Event], out: &mut Vec<u8>) {
    wire::put_u8(out, VERSION);
    wire::put_u32(out, events.len() as u32);
    for e in events {
        let m = &e.meta;
        wire::put_str(out, &m.source);
        wire::put_opt_str(out, m.tenant.as_deref());
        wire::put_str(out, &m.category);
        wire::put_u8(out, kind_index(m.kind));
        wire::put_str(out, &m.position.partition);
        wire::put_u64(out, m.position.offset);
        wire::put_opt_i64(out, m.position.sequence);
        wire::put_u32(out, m.position.index);
        wire::put_i64(out, m.received_ms);
        wire::put_opt_i64(out, m.event_ms);
        wire::put_u8(out, m.severity_id);
        wire::put_opt_str(out, m.entity_key.as_deref());
        wire::put_u8(out, m.repaired as u8);
        wire::put_opt_str(out, m.change_type.as_deref());
        match &m.changed_fields {
            Some(f) => {
                wire::put_u8(out, 1);
                wire::put_u32(out, f.len() as u32);
                f.iter().for_each(|s| wire::put_str(out, s));
            }
            None => wire::put_u8(out, 0),
        }
        wire::put_bytes(out, &e.raw);
        match &e.normalized {
            Some(n) => {
                wire::put_u8(out, 1);
                n.encode(out);
            }
            None => wire::put_u8(out, 0),
        }
    }
}

/// Rebuild the events of a payload, each with a clone of `finalizer` (one per record).
pub fn decode_batch(payload: &[u8], finalizer: &Finalizer) -> Result<Vec<Event>, WireError> {
    let mut r = Reader::new(payload);
    if r.u8()? != VERSION {
        return Err(WireError::Invalid("unknown payload version"));
    }
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(100_000));
    // Sources, categories and partitions repeat: share one Arc per distinct string.
    let mut interned: Vec<Arc<str>> = Vec::new();
    let mut intern = |s: &str| -> Arc<str> {
        if let Some(a) = interned.iter().find(|a| ***a == *s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if interned.len() < 64 {
            interned.push(a.clone());
        }
        a
    };
    for _ in 0..n {
        let source = intern(r.str()?);
        let tenant = r.opt_str()?.map(&mut intern);
        let category = intern(r.str()?);
        let kind = *EventKind::ALL
            .get(r.u8()? as usize)
            .ok_or(WireError::Invalid("event kind"))?;
        let partition = intern(r.str()?);
        let position = Position {
            partition,
            offset: r.u64()?,
            sequence: r.opt_i64()?,
            index: r.u32()?,
        };
        let received_ms = r.i64()?;
        let event_ms = r.opt_i64()?;
        let severity_id = r.u8()?;
        let entity_key = r.opt_str()?.map(Arc::from);
        let repaired = r.bool()?;
        let change_type = r.opt_str()?.map(Arc::from);
        let changed_fields = match r.u8()? {
            0 => None,
            1 => {
                let k = r.u32()? as usize;
                let mut f = Vec::with_capacity(k.min(1024));
                for _ in 0..k {
                    f.push(r.str()?.to_owned());
                }
                Some(Arc::from(f))
            }
            _ => return Err(WireError::Invalid("changed_fields tag")),
        };
        let raw = Bytes::copy_from_slice(r.bytes()?);
        let normalized = match r.u8()? {
            0 => None,
            1 => Some(Arc::new(Normalized::decode(&mut r)?)),
            _ => return Err(WireError::Invalid("normalized tag")),
        };
        let meta = EventMeta {
            source,
            tenant,
            category,
            kind,
            position,
            received_ms,
            event_ms,
            severity_id,
            entity_key,
            repaired,
            // Only normalization reads it; buffered events were normalized already.
            unchecked: None,
            change_type,
            changed_fields,
            // Only the router reads it; buffered events were routed already.
            duplicate: false,
            class_uid: None,
            uid: None,
        };
        // The record's finalizer only once the whole record decoded: a copy dropped with the
        // events of a record that fails part way would count the record as errored, and
        // its partition would never be acknowledged past it.
        let mut e = Event::new(raw, meta, Finalizer::noop());
        e.normalized = normalized;
        out.push(e);
    }
    if !r.is_empty() {
        return Err(WireError::Invalid("bytes after the last event"));
    }
    for e in &mut out {
        e.finalizer = finalizer.clone();
    }
    Ok(out)
}

fn kind_index(k: EventKind) -> u8 {
    EventKind::ALL
        .iter()
        .position(|x| *x == k)
        .unwrap_or(EventKind::ALL.len() - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{encoder, EncoderOptions, Format};
    use crate::normalize::{NormalizeOptions, Normalizer};

    /// Events as the pipeline makes them: real records through the real normalizer.
    fn normalized_events() -> Vec<Event> {
        let normalizer = Normalizer::new(NormalizeOptions::default());
        let mut out = Vec::new();
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut files: Vec<(std::path::PathBuf, Option<&str>)> = std::fs::read_dir(data.join("eventhub"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| (p, None))
            .collect();
        files.sort();
        for (f, c) in [
            ("incidents_page1.json", "GraphIncident"),
            ("incidents_update.json", "GraphIncident"),
            ("risk_detections.json", "GraphRiskDetection"),
            ("risky_users.json", "GraphRiskyUser"),
        ] {
            files.push((data.join("graph").join(f), Some(c)));
        }
        for (p, graph_category) in files {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let body: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let records = match body.get("records").or_else(|| body.get("value")) {
                Some(serde_json::Value::Array(a)) => a.clone(),
                _ => continue,
            };
            for (i, rec) in records.iter().enumerate() {
                let category = graph_category
                    .or_else(|| rec.get("category").and_then(|c| c.as_str()))
                    .unwrap_or("Generic");
                let mut meta = EventMeta::new(
                    Arc::from("src"),
                    category,
                    EventKind::from_category(category),
                    Position {
                        partition: Arc::from(p.display().to_string()),
                        offset: 7,
                        sequence: Some(i as i64 - 3),
                        index: i as u32,
                    },
                );
                meta.changed_fields = Some(Arc::from(vec!["status".to_string()]));
                meta.change_type = Some(Arc::from("updated"));
                let raw = serde_json::to_vec(rec).unwrap();
                let Ok(n) = normalizer.normalize(&meta, &raw) else {
                    continue;
                };
                meta.severity_id = n.severity_id;
                meta.event_ms = n.event_ms;
                meta.entity_key = n.entity_key.map(Arc::from);
                meta.tenant = n.tenant.map(Arc::from);
                let mut e = Event::new(Bytes::from(raw), meta, Finalizer::noop());
                e.normalized = Some(Arc::new(n.normalized));
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn every_encoder_writes_the_same_bytes_after_a_round_trip() {
        let events = normalized_events();
        assert!(events.len() >= 20, "test data yields events: {}", events.len());
        let mut payload = Vec::new();
        encode_batch(&events, &mut payload);
        let back = decode_batch(&payload, &Finalizer::noop()).unwrap();
        assert_eq!(back.len(), events.len());
        let opts = EncoderOptions::default();
        for f in [Format::Ocsf, Format::Raw, Format::Cef, Format::Leef, Format::Hec] {
            let enc = encoder(f, &opts);
            for (a, b) in events.iter().zip(&back) {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                let rx = enc.encode(a, &mut x).map_err(|e| e.to_string());
                let ry = enc.encode(b, &mut y).map_err(|e| e.to_string());
                assert_eq!(rx, ry, "{f:?} {}", a.meta.position);
                assert_eq!(x, y, "{f:?} output differs for {}", a.meta.position);
            }
        }
        for (a, b) in events.iter().zip(&back) {
            assert_eq!(format!("{:?}", a.meta), format!("{:?}", b.meta));
            assert_eq!(
                a.normalized.as_ref().unwrap().ocsf(),
                b.normalized.as_ref().unwrap().ocsf()
            );
        }
    }

    #[test]
    fn truncated_or_garbled_payloads_are_errors_not_panics() {
        let events = normalized_events();
        let mut payload = Vec::new();
        encode_batch(&events[..3], &mut payload);
        for cut in [0, 1, 5, payload.len() / 2, payload.len() - 1] {
            assert!(
                decode_batch(&payload[..cut], &Finalizer::noop()).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = payload.clone();
        extra.push(0);
        assert!(decode_batch(&extra, &Finalizer::noop()).is_err());
    }
}
