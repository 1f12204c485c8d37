//! Recording into the metrics: per-component counters, categories, errors, quarantine and
//! repairs, per-sink helpers, and the totals kept for the end-of-run summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{CategoryLabels, ComponentLabels, ErrorLabels, Metrics, SinkCodeLabels, SinkLabels, SourceLabels};

/// Distinct category names used as metric labels; the rest are counted as `other`.
pub const MAX_CATEGORY_LABELS: usize = 200;

/// Totals for the end-of-run summary of `demo` and `convert`.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub events_in: u64,
    pub delivered: BTreeMap<String, u64>,
    /// `stage:reason` → events.
    pub quarantined: BTreeMap<String, u64>,
    pub repaired: BTreeMap<String, u64>,
    pub by_category: BTreeMap<String, u64>,
}

impl Summary {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

impl Metrics {
    fn comp(component: &str, kind: &str) -> ComponentLabels {
        ComponentLabels {
            component: component.to_string(),
            component_kind: kind.to_string(),
        }
    }

    pub fn component_in(&self, component: &str, kind: &str, events: u64, bytes: u64) {
        if kind == "source" {
            self.summary.lock().unwrap_or_else(|e| e.into_inner()).events_in += events;
        }
        let l = Self::comp(component, kind);
        self.events_in.get_or_create(&l).inc_by(events);
        self.bytes_in.get_or_create(&l).inc_by(bytes);
    }

    pub fn component_out(&self, component: &str, kind: &str, events: u64, bytes: u64) {
        if kind == "sink" {
            *self
                .summary
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delivered
                .entry(component.to_string())
                .or_default() += events;
        }
        let l = Self::comp(component, kind);
        self.events_out.get_or_create(&l).inc_by(events);
        self.bytes_out.get_or_create(&l).inc_by(bytes);
    }

    /// Count events read by category (called once per batch with the batch's tallies).
    pub fn categories(&self, counts: &BTreeMap<(Arc<str>, Arc<str>), u64>) {
        let mut sum = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        for ((source, cat), n) in counts {
            let category = self.category_label(cat);
            *sum.by_category.entry(category.clone()).or_default() += n;
            self.events_by_category
                .get_or_create(&CategoryLabels {
                    source: source.to_string(),
                    category,
                })
                .inc_by(*n);
        }
    }

    /// A record's category as a metric label. The input names it, so a foreign producer
    /// on an Event Hub could make any number of series: the first
    /// [`MAX_CATEGORY_LABELS`] names (of at most 100 bytes) are kept, later ones are `other`.
    pub fn category_label(&self, category: &str) -> String {
        let mut names = self.category_names.lock().unwrap_or_else(|e| e.into_inner());
        if names.contains(category) {
            return category.to_string();
        }
        if category.len() > 100 || names.len() >= MAX_CATEGORY_LABELS {
            return "other".to_string();
        }
        names.insert(category.to_string());
        category.to_string()
    }

    /// How full a sink's buffer is: `queued` of `capacity` batches.
    pub fn sink_buffer(&self, sink: &str, queued: usize, capacity: usize) {
        let l = SinkLabels { sink: sink.to_string() };
        self.sink_buffered_batches.get_or_create(&l).set(queued as i64);
        self.sink_buffer_capacity.get_or_create(&l).set(capacity as i64);
    }

    pub fn error(&self, component: &str, error_type: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                component: component.to_string(),
                error_type: error_type.to_string(),
            })
            .inc();
    }

    pub fn quarantine(&self, stage: &str, reason: &str, n: u64) {
        *self
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .quarantined
            .entry(format!("{stage}:{reason}"))
            .or_default() += n;
        self.quarantined
            .get_or_create(&ErrorLabels {
                component: stage.to_string(),
                error_type: reason.to_string(),
            })
            .inc_by(n);
    }

    pub fn repaired(&self, source: &str, repair: &str) {
        *self
            .summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .repaired
            .entry(repair.to_string())
            .or_default() += 1;
        self.repaired_bodies
            .get_or_create(&ErrorLabels {
                component: source.to_string(),
                error_type: repair.to_string(),
            })
            .inc();
    }

    /// Adds `n` to a per-source counter family.
    pub fn source_count(family: &Family<SourceLabels, Counter>, source: &str, n: u64) {
        if n > 0 {
            family
                .get_or_create(&SourceLabels {
                    source: source.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Adds `n` to a per-sink counter family.
    pub fn sink_count(family: &Family<SinkLabels, Counter>, sink: &str, n: u64) {
        if n > 0 {
            family.get_or_create(&SinkLabels { sink: sink.to_string() }).inc_by(n);
        }
    }

    /// Adds one to a per-sink, per-code counter family.
    pub fn sink_code(family: &Family<SinkCodeLabels, Counter>, sink: &str, code: &str, n: u64) {
        family
            .get_or_create(&SinkCodeLabels {
                sink: sink.to_string(),
                code: code.to_string(),
            })
            .inc_by(n);
    }

    pub fn summary(&self) -> Summary {
        self.summary.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Categories come from the input: their series are bounded.
    #[test]
    fn category_series_are_bounded() {
        let m = Metrics::new();
        let src: Arc<str> = Arc::from("eh");
        for i in 0..MAX_CATEGORY_LABELS + 50 {
            let counts = BTreeMap::from([((src.clone(), Arc::from(format!("Made-Up-{i}"))), 1)]);
            m.categories(&counts);
        }
        let long = "x".repeat(101);
        m.categories(&BTreeMap::from([((src.clone(), Arc::from(long.as_str())), 1)]));
        m.categories(&BTreeMap::from([((src.clone(), Arc::from("Made-Up-0")), 1)]));
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("m365fwd_source_events_by_category_total{"))
            .count();
        assert_eq!(series, MAX_CATEGORY_LABELS + 1, "the first names and `other`");
        assert!(text.contains("category=\"other\"} 51"), "{text}");
        assert!(text.contains("category=\"Made-Up-0\"} 2"));
        assert!(!text.contains(&long));
    }
}
