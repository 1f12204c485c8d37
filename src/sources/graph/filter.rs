//! Noise filters of the Graph sources: include or exclude objects by service source,
//! detection source, severity, status and title pattern, applied before anything is sent.

use serde::Deserialize;

/// `filters` of a Graph source or of one tenant (a tenant's table replaces the source's).
///
/// Every list is compared case-insensitively. An `include_*` list, when not empty, keeps
/// only objects whose value is in it (an object without that value is dropped); an
/// `exclude_*` list drops objects whose value is in it. Titles are glob patterns where `*`
/// matches any run of characters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoiseFilters {
    #[serde(default)]
    pub include_service_sources: Vec<String>,
    #[serde(default)]
    pub exclude_service_sources: Vec<String>,
    #[serde(default)]
    pub include_detection_sources: Vec<String>,
    #[serde(default)]
    pub exclude_detection_sources: Vec<String>,
    #[serde(default)]
    pub include_severities: Vec<String>,
    #[serde(default)]
    pub exclude_severities: Vec<String>,
    #[serde(default)]
    pub include_statuses: Vec<String>,
    #[serde(default)]
    pub exclude_statuses: Vec<String>,
    #[serde(default)]
    pub include_titles: Vec<String>,
    #[serde(default)]
    pub exclude_titles: Vec<String>,
}

/// What the filters look at in one object. An incident carries the service and detection
/// sources of all its alerts: it passes a source filter when at least one alert does.
#[derive(Clone, Debug, Default)]
pub struct FilterSubject {
    pub service_sources: Vec<String>,
    pub detection_sources: Vec<String>,
    pub severity: Option<String>,
    pub status: Option<String>,
    pub title: Option<String>,
}

impl NoiseFilters {
    pub fn is_empty(&self) -> bool {
        *self == NoiseFilters::default()
    }

    /// Whether the service or detection source lists are used (not meaningful for risky users).
    pub fn uses_sources(&self) -> bool {
        !(self.include_service_sources.is_empty()
            && self.exclude_service_sources.is_empty()
            && self.include_detection_sources.is_empty()
            && self.exclude_detection_sources.is_empty())
    }

    pub fn uses_service_sources(&self) -> bool {
        !(self.include_service_sources.is_empty() && self.exclude_service_sources.is_empty())
    }

    /// `Err(reason)` names the filter that dropped the object (a metric label).
    pub fn check(&self, s: &FilterSubject) -> Result<(), &'static str> {
        if !list_passes(
            &self.include_service_sources,
            &self.exclude_service_sources,
            &s.service_sources,
        ) {
            return Err("service_source");
        }
        if !list_passes(
            &self.include_detection_sources,
            &self.exclude_detection_sources,
            &s.detection_sources,
        ) {
            return Err("detection_source");
        }
        let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
        if !list_passes(&self.include_severities, &self.exclude_severities, &one(&s.severity)) {
            return Err("severity");
        }
        if !list_passes(&self.include_statuses, &self.exclude_statuses, &one(&s.status)) {
            return Err("status");
        }
        if let Some(t) = &s.title {
            if !self.include_titles.is_empty() && !self.include_titles.iter().any(|p| glob(p, t)) {
                return Err("title");
            }
            if self.exclude_titles.iter().any(|p| glob(p, t)) {
                return Err("title");
            }
        } else if !self.include_titles.is_empty() {
            return Err("title");
        }
        Ok(())
    }
}

/// Include: some value is listed. Exclude: drop only when every value is listed.
fn list_passes(include: &[String], exclude: &[String], values: &[String]) -> bool {
    let listed = |list: &[String], v: &str| list.iter().any(|x| x.eq_ignore_ascii_case(v));
    if !include.is_empty() && !values.iter().any(|v| listed(include, v)) {
        return false;
    }
    if !exclude.is_empty() && !values.is_empty() && values.iter().all(|v| listed(exclude, v)) {
        return false;
    }
    true
}

/// Case-insensitive glob match where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(services: &[&str], severity: &str, title: &str) -> FilterSubject {
        FilterSubject {
            service_sources: services.iter().map(|s| s.to_string()).collect(),
            detection_sources: services.iter().map(|s| s.to_string()).collect(),
            severity: Some(severity.into()),
            status: Some("new".into()),
            title: Some(title.into()),
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*travel*", "Atypical travel"));
        assert!(glob("Atypical*", "atypical TRAVEL"));
        assert!(!glob("*spray", "Password spray attack"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn source_filters_keep_an_incident_while_one_alert_passes() {
        let f = NoiseFilters {
            exclude_service_sources: vec!["azureAdIdentityProtection".into()],
            ..Default::default()
        };
        assert_eq!(
            f.check(&subject(&["azureadidentityprotection"], "low", "x")),
            Err("service_source")
        );
        assert!(f
            .check(&subject(
                &["azureAdIdentityProtection", "microsoftDefenderForEndpoint"],
                "low",
                "x"
            ))
            .is_ok());
        assert!(
            f.check(&subject(&[], "low", "x")).is_ok(),
            "no alerts: nothing to exclude"
        );
        let inc = NoiseFilters {
            include_detection_sources: vec!["antivirus".into()],
            ..Default::default()
        };
        assert_eq!(inc.check(&subject(&[], "low", "x")), Err("detection_source"));
    }

    #[test]
    fn severity_status_and_title() {
        let f = NoiseFilters {
            include_severities: vec!["medium".into(), "high".into()],
            exclude_titles: vec!["*test*".into()],
            exclude_statuses: vec!["resolved".into()],
            ..Default::default()
        };
        assert_eq!(f.check(&subject(&["x"], "low", "Atypical travel")), Err("severity"));
        assert_eq!(f.check(&subject(&["x"], "High", "Pen test sign-in")), Err("title"));
        assert!(f.check(&subject(&["x"], "High", "Atypical travel")).is_ok());
        let mut s = subject(&["x"], "high", "a");
        s.status = Some("Resolved".into());
        assert_eq!(f.check(&s), Err("status"));
        assert!(NoiseFilters::default().is_empty());
    }
}
