//! Graph security input: the `graph_incidents`, `graph_risk_detections` and
//! `graph_risky_users` sources, for many tenants and national clouds, with late-update-safe
//! watermarks and change events. Configuration and validation live here.

pub mod auth;
pub mod backfill;
pub mod client;
pub mod filter;
pub mod identity;
mod poller;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Source, SourceConfig, SourceError};
use crate::config::{typed, ConfigIssue, Secret};
pub use filter::NoiseFilters;

/// The Graph list a source polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Incidents,
    RiskDetections,
    RiskyUsers,
}

impl Resource {
    /// Checkpoint partition.
    pub fn partition(self) -> &'static str {
        match self {
            Resource::Incidents => "incidents",
            Resource::RiskDetections => "riskDetections",
            Resource::RiskyUsers => "riskyUsers",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Resource::Incidents => "security/incidents",
            Resource::RiskDetections => "identityProtection/riskDetections",
            Resource::RiskyUsers => "identityProtection/riskyUsers",
        }
    }

    /// The last-updated property the watermark filters on.
    pub fn watermark_field(self) -> &'static str {
        match self {
            Resource::Incidents => "lastUpdateDateTime",
            Resource::RiskDetections => "lastUpdatedDateTime",
            Resource::RiskyUsers => "riskLastUpdatedDateTime",
        }
    }

    /// The application permission a 403 asks for.
    pub fn permission(self) -> &'static str {
        match self {
            Resource::Incidents => "SecurityIncident.Read.All (and SecurityAlert.Read.All for the alerts_v2 fallback)",
            Resource::RiskDetections => "IdentityRiskEvent.Read.All",
            Resource::RiskyUsers => "IdentityRiskyUser.Read.All",
        }
    }

    /// The API family whose per-tenant limit every app shares (Identity Protection): its
    /// sources of one tenant share one request budget.
    pub fn shared_family(self) -> Option<&'static str> {
        match self {
            Resource::Incidents => None,
            _ => Some("identityProtection"),
        }
    }

    fn default_poll_secs(self) -> f64 {
        match self {
            Resource::Incidents => 60.0,
            _ => 300.0,
        }
    }

    /// Security API: 150 requests/minute per app and tenant. Identity Protection: 1/s per
    /// tenant shared by every app, so stay well under it.
    fn default_rpm(self) -> u32 {
        match self {
            Resource::Incidents => 150,
            _ => 30,
        }
    }

    /// Requests at once: Identity Protection allows one per second per tenant, shared by
    /// every app of the tenant, so never a burst there.
    fn default_burst(self, rpm: u32) -> u32 {
        match self {
            Resource::Incidents => rpm.min(10),
            _ => 1,
        }
    }

    fn default_page_size(self) -> Option<u32> {
        match self {
            Resource::Incidents => Some(50),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    ClientSecret,
    Certificate,
    ManagedIdentity,
    WorkloadIdentity,
}

/// Client assertion style: `RS256` with `x5t` (SHA-1 thumbprint) or `PS256` with `x5t#S256`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum AssertionAlg {
    #[default]
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "PS256")]
    Ps256,
}

/// One tenant: its credentials and, optionally, its own noise filters.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub tenant_id: String,
    /// Application (client) id; for a user-assigned managed identity, its client id.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub auth: AuthMethod,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub certificate_path: Option<PathBuf>,
    /// PEM RSA key; defaults to `certificate_path` (key and certificate in one file).
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    #[serde(default)]
    pub assertion_algorithm: AssertionAlg,
    /// Send the certificate chain (`x5c`) for subject name / issuer authentication.
    #[serde(default)]
    pub send_certificate_chain: bool,
    /// Workload identity: defaults to `$AZURE_FEDERATED_TOKEN_FILE`.
    #[serde(default)]
    pub federated_token_file: Option<PathBuf>,
    /// Managed identity token endpoint (IMDS style); default IMDS or App Service's.
    #[serde(default)]
    pub managed_identity_endpoint: Option<String>,
    #[serde(default)]
    pub filters: Option<NoiseFilters>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tenants: Vec<TenantConfig>,
    #[serde(default = "default_cloud")]
    cloud: String,
    #[serde(default)]
    login_host: Option<String>,
    #[serde(default)]
    graph_host: Option<String>,
    #[serde(default = "default_api_version")]
    api_version: String,
    #[serde(default)]
    poll_interval_secs: Option<f64>,
    #[serde(default = "default_overlap")]
    overlap_secs: u64,
    #[serde(default = "default_lookback")]
    initial_lookback_days: u32,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    requests_per_minute: Option<u32>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    page_size: Option<u32>,
    #[serde(default = "default_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_retry_initial")]
    retry_initial_ms: u64,
    #[serde(default = "default_retry_max")]
    retry_max_ms: u64,
    #[serde(default = "default_retention")]
    state_retention_days: u32,
    #[serde(default = "default_max_tracked")]
    max_tracked_items: usize,
    #[serde(default = "default_expand_fallback")]
    expand_fallback_secs: u64,
    #[serde(default = "default_rescan_interval")]
    rescan_interval_secs: u64,
    #[serde(default)]
    rescan_lookback_secs: Option<u64>,
    #[serde(default = "default_max_hold")]
    max_watermark_hold_secs: u64,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    filters: NoiseFilters,
}

fn default_cloud() -> String {
    "global".into()
}
fn default_api_version() -> String {
    "beta".into()
}
fn default_overlap() -> u64 {
    300
}
fn default_lookback() -> u32 {
    7
}
fn default_timeout() -> u64 {
    60
}
fn default_max_retries() -> u32 {
    8
}
fn default_retry_initial() -> u64 {
    1000
}
fn default_retry_max() -> u64 {
    60_000
}
fn default_retention() -> u32 {
    30
}
fn default_max_tracked() -> usize {
    100_000
}
fn default_expand_fallback() -> u64 {
    3600
}
fn default_rescan_interval() -> u64 {
    6 * 3600
}
const DEFAULT_RESCAN_LOOKBACK: u64 = 24 * 3600;
fn default_max_hold() -> u64 {
    12 * 3600
}

/// The periodic deep re-scan: every `interval`, one poll reads from `lookback_secs` behind
/// the watermark instead of `overlap_secs`, for objects Graph lists late (an update shown
/// in the list long after its time); the state drops what was already sent.
#[derive(Clone, Copy, Debug)]
pub struct Rescan {
    pub interval: Duration,
    pub lookback_secs: u64,
}

/// A validated Graph source configuration.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    pub resource: Resource,
    pub tenants: Vec<TenantConfig>,
    /// Token authority, e.g. `https://login.microsoftonline.com`.
    pub login_host: String,
    /// Graph host, e.g. `https://graph.microsoft.com`.
    pub graph_host: String,
    pub api_version: String,
    pub poll_interval: Duration,
    pub overlap_secs: u64,
    pub initial_lookback_days: u32,
    pub start_time: Option<state::Micros>,
    pub requests_per_minute: u32,
    pub burst: u32,
    pub page_size: Option<u32>,
    pub request_timeout: Duration,
    pub retry: client::RetryPolicy,
    pub state_retention_days: u32,
    pub max_tracked_items: usize,
    /// How long incidents are listed without `$expand=alerts` once it kept failing.
    pub expand_fallback: Duration,
    /// `None`: off (`rescan_interval_secs = 0`).
    pub rescan: Option<Rescan>,
    /// How long every poll may come back partial before the watermark moves anyway.
    pub max_watermark_hold: Duration,
    pub ca_file: Option<PathBuf>,
    pub filters: NoiseFilters,
    /// Set by `m365-forwarder backfill`: read this window once instead of polling.
    pub backfill: Option<Arc<backfill::Plan>>,
}

impl GraphConfig {
    /// The noise filters of a tenant: its own table, else the source's.
    pub fn filters_for<'a>(&'a self, tenant: &'a TenantConfig) -> &'a NoiseFilters {
        tenant.filters.as_ref().unwrap_or(&self.filters)
    }
}

pub fn incidents_factory(name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    factory(Resource::Incidents, name, table, prefix)
}

pub fn risk_detections_factory(
    name: &str,
    table: toml::Value,
    prefix: &str,
) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    factory(Resource::RiskDetections, name, table, prefix)
}

pub fn risky_users_factory(name: &str, table: toml::Value, prefix: &str) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    factory(Resource::RiskyUsers, name, table, prefix)
}

fn https_host(value: &str, path: &str) -> Result<String, ConfigIssue> {
    let url = reqwest::Url::parse(value).map_err(|e| ConfigIssue::new(path, format!("`{value}` is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(ConfigIssue::new(
            path,
            format!(
                "`{value}` must be an https:// URL (tokens are never sent in clear text; use ca_file for a private CA)"
            ),
        ));
    }
    if url.query().is_some() || !url.path().trim_end_matches('/').is_empty() {
        return Err(ConfigIssue::new(
            path,
            format!("`{value}` must be a scheme and host only, like https://graph.microsoft.com"),
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// (login host, Graph host) of a cloud name.
fn cloud_hosts(raw: &RawConfig, prefix: &str) -> Result<(String, String), ConfigIssue> {
    let fixed = |login: &str, graph: &str| -> Result<(String, String), ConfigIssue> {
        for (key, v) in [("login_host", &raw.login_host), ("graph_host", &raw.graph_host)] {
            if v.is_some() {
                return Err(ConfigIssue::new(
                    format!("{prefix}.{key}"),
                    format!("only allowed with cloud = \"custom\" (cloud is `{}`)", raw.cloud),
                ));
            }
        }
        Ok((login.to_string(), graph.to_string()))
    };
    match raw.cloud.to_ascii_lowercase().as_str() {
        "global" | "public" | "gcc" => fixed("https://login.microsoftonline.com", "https://graph.microsoft.com"),
        "usgov" | "gcchigh" | "gcc_high" => fixed("https://login.microsoftonline.us", "https://graph.microsoft.us"),
        "dod" => fixed("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
        "china" | "21vianet" => Err(ConfigIssue::new(
            format!("{prefix}.cloud"),
            "the Microsoft Graph security and Identity Protection APIs are not available in the China (21Vianet) \
             cloud; use global, usgov, dod or custom",
        )),
        "custom" => {
            let get = |key: &str, v: &Option<String>| {
                v.as_deref()
                    .ok_or_else(|| ConfigIssue::new(format!("{prefix}.{key}"), "required with cloud = \"custom\""))
                    .and_then(|v| https_host(v, &format!("{prefix}.{key}")))
            };
            Ok((get("login_host", &raw.login_host)?, get("graph_host", &raw.graph_host)?))
        }
        other => Err(ConfigIssue::new(
            format!("{prefix}.cloud"),
            format!("unknown cloud `{other}`, expected global, usgov, dod or custom"),
        )),
    }
}

fn check_tenant(t: &TenantConfig, p: &str) -> Result<(), ConfigIssue> {
    let bad_id = t.tenant_id.is_empty()
        || !t
            .tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if bad_id {
        return Err(ConfigIssue::new(
            format!("{p}.tenant_id"),
            "must be a tenant GUID or domain name",
        ));
    }
    let need_client = !matches!(t.auth, AuthMethod::ManagedIdentity);
    if need_client && t.client_id.as_deref().is_none_or(str::is_empty) {
        return Err(ConfigIssue::new(
            format!("{p}.client_id"),
            format!("required with auth = \"{}\"", auth_name(t.auth)),
        ));
    }
    match t.auth {
        AuthMethod::ClientSecret => {
            if t.client_secret.as_ref().is_none_or(|s| s.expose().is_empty()) {
                return Err(ConfigIssue::new(
                    format!("{p}.client_secret"),
                    "required with auth = \"client_secret\" (write it as \"${ENV_VAR}\" or \"${file:PATH}\")",
                ));
            }
        }
        AuthMethod::Certificate => {
            let cert = t.certificate_path.as_ref().ok_or_else(|| {
                ConfigIssue::new(format!("{p}.certificate_path"), "required with auth = \"certificate\"")
            })?;
            let key = t.private_key_path.as_ref().unwrap_or(cert);
            auth::CertCredential::load(cert, key, t.assertion_algorithm, t.send_certificate_chain)
                .map_err(|e| ConfigIssue::new(format!("{p}.certificate_path"), e.to_string()))?;
        }
        AuthMethod::WorkloadIdentity => {
            if t.federated_token_file.is_none() && std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_none() {
                return Err(ConfigIssue::new(
                    format!("{p}.federated_token_file"),
                    "required with auth = \"workload_identity\" when AZURE_FEDERATED_TOKEN_FILE is not set",
                ));
            }
        }
        AuthMethod::ManagedIdentity => {}
    }
    let secret_elsewhere = t.client_secret.is_some() && t.auth != AuthMethod::ClientSecret;
    if secret_elsewhere {
        return Err(ConfigIssue::new(
            format!("{p}.client_secret"),
            format!("not used with auth = \"{}\"", auth_name(t.auth)),
        ));
    }
    if let Some(ep) = &t.managed_identity_endpoint {
        reqwest::Url::parse(ep)
            .map_err(|e| ConfigIssue::new(format!("{p}.managed_identity_endpoint"), e.to_string()))?;
    }
    Ok(())
}

fn auth_name(a: AuthMethod) -> &'static str {
    match a {
        AuthMethod::ClientSecret => "client_secret",
        AuthMethod::Certificate => "certificate",
        AuthMethod::ManagedIdentity => "managed_identity",
        AuthMethod::WorkloadIdentity => "workload_identity",
    }
}

fn check_filters(resource: Resource, f: &NoiseFilters, p: &str) -> Result<(), ConfigIssue> {
    match resource {
        Resource::RiskyUsers if f.uses_sources() => Err(ConfigIssue::new(
            p,
            "risky users have no service or detection source; use severities, statuses or titles (user principal names)",
        )),
        Resource::RiskDetections if f.uses_service_sources() => Err(ConfigIssue::new(
            p,
            "risk detections have no service source; use include/exclude_detection_sources (the detection's `source`)",
        )),
        _ => Ok(()),
    }
}

fn factory(
    resource: Resource,
    _name: &str,
    table: toml::Value,
    prefix: &str,
) -> Result<Box<dyn SourceConfig>, ConfigIssue> {
    let raw: RawConfig = typed(table, prefix)?;
    let (login_host, graph_host) = cloud_hosts(&raw, prefix)?;
    if raw.tenants.is_empty() {
        return Err(ConfigIssue::new(
            format!("{prefix}.tenants"),
            "at least one tenant is required",
        ));
    }
    for (i, t) in raw.tenants.iter().enumerate() {
        let p = format!("{prefix}.tenants[{i}]");
        check_tenant(t, &p)?;
        if raw.tenants[..i]
            .iter()
            .any(|o| o.tenant_id.eq_ignore_ascii_case(&t.tenant_id))
        {
            return Err(ConfigIssue::new(
                format!("{p}.tenant_id"),
                format!("tenant `{}` is listed twice", t.tenant_id),
            ));
        }
        if let Some(f) = &t.filters {
            check_filters(resource, f, &format!("{p}.filters"))?;
        }
    }
    check_filters(resource, &raw.filters, &format!("{prefix}.filters"))?;
    if raw.api_version != "beta" && raw.api_version != "v1.0" {
        return Err(ConfigIssue::new(
            format!("{prefix}.api_version"),
            format!("`{}` is not a Graph version, expected beta or v1.0", raw.api_version),
        ));
    }
    let poll = raw.poll_interval_secs.unwrap_or(resource.default_poll_secs());
    if !(poll.is_finite() && (0.05..=86_400.0).contains(&poll)) {
        return Err(ConfigIssue::new(
            format!("{prefix}.poll_interval_secs"),
            "must be between 0.05 and 86400",
        ));
    }
    let page_size = raw.page_size.or(resource.default_page_size());
    if let Some(n) = page_size {
        if !(1..=1000).contains(&n) {
            return Err(ConfigIssue::new(
                format!("{prefix}.page_size"),
                "must be between 1 and 1000 (Graph caps $top at 1000)",
            ));
        }
    }
    let rpm = raw.requests_per_minute.unwrap_or(resource.default_rpm());
    if rpm == 0 {
        return Err(ConfigIssue::new(
            format!("{prefix}.requests_per_minute"),
            "must be greater than 0",
        ));
    }
    if raw.burst == Some(0) {
        return Err(ConfigIssue::new(format!("{prefix}.burst"), "must be greater than 0"));
    }
    let start_time = match &raw.start_time {
        Some(s) => Some(state::parse_time(s).ok_or_else(|| {
            ConfigIssue::new(
                format!("{prefix}.start_time"),
                format!("`{s}` is not an RFC 3339 time like 2026-11-01T00:00:00Z"),
            )
        })?),
        None => None,
    };
    // The default lookback is fitted to the overlap and the retention (no re-scan when the
    // overlap already reaches as far); a configured one must fit them.
    let retention_secs = raw.state_retention_days as u64 * 86_400;
    let lookback = match raw.rescan_lookback_secs {
        Some(l) if raw.rescan_interval_secs > 0 => {
            if l <= raw.overlap_secs {
                return Err(ConfigIssue::new(
                    format!("{prefix}.rescan_lookback_secs"),
                    "must be more than overlap_secs (or set rescan_interval_secs = 0 to turn the re-scan off)",
                ));
            }
            if l * 2 > retention_secs {
                return Err(ConfigIssue::new(
                    format!("{prefix}.rescan_lookback_secs"),
                    "state_retention_days must cover at least twice the re-scan lookback, or re-read objects would be sent again",
                ));
            }
            l
        }
        Some(l) => l,
        None => DEFAULT_RESCAN_LOOKBACK.min(retention_secs / 2),
    };
    let rescan = (raw.rescan_interval_secs > 0 && lookback > raw.overlap_secs).then_some(Rescan {
        interval: Duration::from_secs(raw.rescan_interval_secs),
        lookback_secs: lookback,
    });
    if (raw.state_retention_days as u64) * 86_400 < raw.overlap_secs * 2 {
        return Err(ConfigIssue::new(
            format!("{prefix}.state_retention_days"),
            "must cover at least twice overlap_secs, or re-read objects would be sent again",
        ));
    }
    if raw.request_timeout_secs == 0 {
        return Err(ConfigIssue::new(
            format!("{prefix}.request_timeout_secs"),
            "must be greater than 0",
        ));
    }
    if let Some(ca) = &raw.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| ConfigIssue::new(format!("{prefix}.ca_file"), format!("{}: {e}", ca.display())))?;
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            ConfigIssue::new(
                format!("{prefix}.ca_file"),
                format!("{}: not PEM certificates: {e}", ca.display()),
            )
        })?;
    }
    Ok(Box::new(GraphConfig {
        resource,
        tenants: raw.tenants,
        login_host,
        graph_host,
        api_version: raw.api_version,
        poll_interval: Duration::from_secs_f64(poll),
        overlap_secs: raw.overlap_secs,
        initial_lookback_days: raw.initial_lookback_days,
        start_time,
        requests_per_minute: rpm,
        burst: raw.burst.unwrap_or(resource.default_burst(rpm)),
        page_size,
        request_timeout: Duration::from_secs(raw.request_timeout_secs),
        retry: client::RetryPolicy {
            max_retries: raw.max_retries,
            initial: Duration::from_millis(raw.retry_initial_ms.max(1)),
            max: Duration::from_millis(raw.retry_max_ms.max(raw.retry_initial_ms).max(1)),
        },
        state_retention_days: raw.state_retention_days,
        max_tracked_items: raw.max_tracked_items.max(1),
        expand_fallback: Duration::from_secs(raw.expand_fallback_secs.max(1)),
        rescan,
        max_watermark_hold: Duration::from_secs(raw.max_watermark_hold_secs.max(1)),
        ca_file: raw.ca_file,
        filters: raw.filters,
        backfill: None,
    }))
}

impl SourceConfig for GraphConfig {
    fn build(&self, name: &str) -> Result<Box<dyn Source>, SourceError> {
        let fatal = |message: String| SourceError::Fatal {
            source_name: name.to_string(),
            message,
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(self.request_timeout)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("m365-forwarder/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).map_err(|e| fatal(format!("ca_file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| fatal(format!("ca_file {}: {e}", ca.display())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| fatal(format!("HTTP client: {e}")))?;
        let mut credentials = Vec::new();
        for t in &self.tenants {
            let cred = match t.auth {
                AuthMethod::ClientSecret => {
                    auth::Credential::Secret(t.client_secret.clone().unwrap_or_else(|| Secret::new("")))
                }
                AuthMethod::Certificate => {
                    let cert = t.certificate_path.clone().unwrap_or_default();
                    let key = t.private_key_path.clone().unwrap_or_else(|| cert.clone());
                    auth::Credential::Certificate(
                        auth::CertCredential::load(&cert, &key, t.assertion_algorithm, t.send_certificate_chain)
                            .map_err(|e| fatal(format!("tenant {}: {e}", t.tenant_id)))?,
                    )
                }
                AuthMethod::WorkloadIdentity => auth::Credential::WorkloadIdentity {
                    token_file: t
                        .federated_token_file
                        .clone()
                        .or_else(|| std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from))
                        .ok_or_else(|| fatal(format!("tenant {}: no federated token file", t.tenant_id)))?,
                },
                AuthMethod::ManagedIdentity => auth::Credential::ManagedIdentity {
                    endpoint: t.managed_identity_endpoint.clone(),
                },
            };
            credentials.push(cred);
        }
        Ok(Box::new(poller::GraphSource {
            config: Arc::new(self.clone()),
            http,
            credentials,
        }))
    }

    fn is_finite(&self) -> bool {
        self.backfill.is_some()
    }

    fn backfill(&self, plan: &Arc<backfill::Plan>) -> Option<Box<dyn SourceConfig>> {
        Some(Box::new(GraphConfig {
            backfill: Some(plan.clone()),
            ..self.clone()
        }))
    }
}

#[cfg(test)]
mod tests;
