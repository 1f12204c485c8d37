//! Helpers shared by the mapper tests.
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

use super::{NormalizeOptions, NormalizeOutput, Normalizer};
use crate::event::{EventKind, EventMeta, Position};

pub const TENANT: &str = "d13c513a-42f8-4da1-97b1-165f0971b7c4";

pub fn meta(category: &str) -> EventMeta {
    EventMeta {
        received_ms: 1_800_000_000_000,
        ..EventMeta::new(
            Arc::from("test"),
            category,
            EventKind::from_category(category),
            Position::at(Arc::from("0"), 0, 0),
        )
    }
}

/// The elements of `{"records": [...]}` (or of a Graph page's `value`) as raw JSON text.
pub fn records(body: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow, alias = "value")]
        records: Vec<&'a RawValue>,
    }
    let b: Body<'_> = serde_json::from_str(body).expect("sample parses");
    b.records.iter().map(|r| r.get().to_owned()).collect()
}

pub fn normalizer() -> Normalizer {
    Normalizer::new(NormalizeOptions::default())
}

/// Normalize with the category taken from the record (`category` field) or given.
pub fn run(n: &Normalizer, category: &str, raw: &str) -> NormalizeOutput {
    n.normalize(&meta(category), raw.as_bytes())
        .unwrap_or_else(|e| panic!("{category}: {e}"))
}

pub fn ocsf(o: &NormalizeOutput) -> &Value {
    o.normalized.ocsf()
}

/// Values of observables of a type.
pub fn observed(o: &NormalizeOutput, type_id: u64) -> Vec<String> {
    o.normalized.ocsf()["observables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["type_id"] == type_id)
                .map(|x| x["value"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
