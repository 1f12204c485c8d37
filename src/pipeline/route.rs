//! Routing filters: what a sink takes, by event kind, category, severity and tenant.

use serde::Deserialize;

use crate::config::ConfigIssue;
use crate::event::{EventKind, EventMeta};

/// `[sinks.NAME.filter]`. Every list that is set must match; an empty filter takes all.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFilter {
    /// Event kinds: incident, alert, signin, audit, risk_detection, risk_state, hunting,
    /// graph_activity, generic.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Categories; a trailing `*` matches a prefix (`AdvancedHunting-*`).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Categories to leave out (same patterns).
    #[serde(default)]
    pub exclude_categories: Vec<String>,
    /// Lowest OCSF severity taken: unknown, informational, low, medium, high, critical, fatal.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Tenant ids.
    #[serde(default)]
    pub tenants: Vec<String>,
}

pub fn severity_id(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "unknown" => 0,
        "informational" | "info" => 1,
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        "fatal" => 6,
        _ => return None,
    })
}

fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// A filter checked once at start, cheap to evaluate per event.
#[derive(Clone, Debug, Default)]
pub struct CompiledFilter {
    kinds: Vec<EventKind>,
    categories: Vec<String>,
    exclude_categories: Vec<String>,
    min_severity: u8,
    tenants: Vec<String>,
}

impl RouteFilter {
    pub fn validate(&self, prefix: &str) -> Result<CompiledFilter, ConfigIssue> {
        let mut kinds = Vec::new();
        for (i, k) in self.kinds.iter().enumerate() {
            match EventKind::parse(k) {
                Some(kind) => kinds.push(kind),
                None => {
                    let known: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    return Err(ConfigIssue::new(
                        format!("{prefix}.kinds[{i}]"),
                        format!("unknown event kind `{k}`, expected one of {}", known.join(", ")),
                    ));
                }
            }
        }
        let min_severity = match &self.min_severity {
            None => 0,
            Some(s) => severity_id(s).ok_or_else(|| {
                ConfigIssue::new(
                    format!("{prefix}.min_severity"),
                    format!(
                        "unknown severity `{s}`, expected unknown, informational, low, medium, high, critical or fatal"
                    ),
                )
            })?,
        };
        for (i, t) in self.tenants.iter().enumerate() {
            // Events carry the tenant's GUID (Event Hub records and Graph objects, and the
            // Graph records without one are stamped with the token's): a domain never matches.
            let guid = t.len() == 36
                && t.bytes().enumerate().all(|(j, c)| match j {
                    8 | 13 | 18 | 23 => c == b'-',
                    _ => c.is_ascii_hexdigit(),
                });
            if !guid {
                return Err(ConfigIssue::new(
                    format!("{prefix}.tenants[{i}]"),
                    format!(
                        "`{t}` is not a tenant GUID: events carry the tenant's GUID (its `tid`), not a domain name"
                    ),
                ));
            }
        }
        Ok(CompiledFilter {
            kinds,
            categories: self.categories.clone(),
            exclude_categories: self.exclude_categories.clone(),
            min_severity,
            tenants: self.tenants.clone(),
        })
    }
}

impl CompiledFilter {
    pub fn matches(&self, meta: &EventMeta) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&meta.kind) {
            return false;
        }
        if !self.categories.is_empty() && !self.categories.iter().any(|p| pattern_matches(p, &meta.category)) {
            return false;
        }
        if self
            .exclude_categories
            .iter()
            .any(|p| pattern_matches(p, &meta.category))
        {
            return false;
        }
        // 99 (other) passes any threshold; 0 (unknown) only a threshold of 0.
        if self.min_severity > 0 && meta.severity_id != 99 && meta.severity_id < self.min_severity {
            return false;
        }
        if !self.tenants.is_empty() {
            match &meta.tenant {
                Some(t) => {
                    if !self.tenants.iter().any(|x| x.eq_ignore_ascii_case(t)) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::Position;

    fn meta(kind: EventKind, category: &str, sev: u8, tenant: Option<&str>) -> EventMeta {
        EventMeta {
            tenant: tenant.map(Arc::from),
            severity_id: sev,
            ..EventMeta::new(Arc::from("s"), category, kind, Position::at(Arc::from("p"), 0, 0))
        }
    }

    #[test]
    fn filters_by_kind_category_severity_tenant() {
        let f = RouteFilter {
            kinds: vec!["alert".into(), "hunting".into()],
            categories: vec!["AdvancedHunting-*".into(), "GraphAlert".into()],
            exclude_categories: vec!["AdvancedHunting-DeviceEvents".into()],
            min_severity: Some("medium".into()),
            tenants: vec!["D13C513A-42F8-4DA1-97B1-165F0971B7C4".into()],
        }
        .validate("sinks.x.filter")
        .unwrap();
        assert!(f.matches(&meta(
            EventKind::Alert,
            "GraphAlert",
            4,
            Some("d13c513a-42f8-4da1-97b1-165f0971b7c4")
        )));
        assert!(
            !f.matches(&meta(
                EventKind::Alert,
                "GraphAlert",
                2,
                Some("d13c513a-42f8-4da1-97b1-165f0971b7c4")
            )),
            "below medium"
        );
        assert!(
            !f.matches(&meta(
                EventKind::SignIn,
                "SignInLogs",
                4,
                Some("d13c513a-42f8-4da1-97b1-165f0971b7c4")
            )),
            "kind"
        );
        assert!(
            !f.matches(&meta(
                EventKind::Hunting,
                "AdvancedHunting-DeviceEvents",
                4,
                Some("d13c513a-42f8-4da1-97b1-165f0971b7c4")
            )),
            "excluded"
        );
        assert!(f.matches(&meta(
            EventKind::Hunting,
            "AdvancedHunting-DeviceLogonEvents",
            99,
            Some("d13c513a-42f8-4da1-97b1-165f0971b7c4")
        )));
        assert!(
            !f.matches(&meta(EventKind::Alert, "GraphAlert", 4, None)),
            "tenant unknown"
        );
        assert!(
            !f.matches(&meta(
                EventKind::Alert,
                "GraphAlert",
                4,
                Some("5f1e8c2a-9b7d-4e3f-a1c2-3d4e5f6a7b8c")
            )),
            "another tenant"
        );
        let err = RouteFilter {
            tenants: vec!["contoso.onmicrosoft.com".into()],
            ..Default::default()
        }
        .validate("sinks.x.filter")
        .unwrap_err();
        assert_eq!(err.path, "sinks.x.filter.tenants[0]");
    }

    #[test]
    fn bad_kind_names_the_key() {
        let err = RouteFilter {
            kinds: vec!["incident".into(), "incidnet".into()],
            ..Default::default()
        }
        .validate("sinks.x.filter")
        .unwrap_err();
        assert_eq!(err.path, "sinks.x.filter.kinds[1]");
        assert!(err.message.contains("incidnet"));
    }
}
