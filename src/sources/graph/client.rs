//! Graph HTTP client of one tenant: the per-tenant request budget, bearer tokens, and the
//! error rules: 429/503 honour Retry-After (seconds or HTTP date) and never resend
//! earlier, other transient errors back off exponentially with jitter, 401 refreshes the
//! token once, 206 is a partial page, and configuration errors (403, 400) are reported as such.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER, WARNING};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::auth::{guid, AuthError, TokenProvider};
use crate::telemetry::{GraphMetrics, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("shutting down")]
    ShuttingDown,
    #[error("cannot get an access token: {0}")]
    Auth(#[from] AuthError),
    #[error("Graph answered 401 Unauthorized again after a token refresh ({0}); check the tenant id, the application's admin consent and the cloud (a token for one Graph host is refused by another)")]
    Unauthorized(String),
    #[error("Graph answered 403 Forbidden ({detail}); grant the application the {permission} application permission with admin consent")]
    Forbidden { detail: String, permission: &'static str },
    #[error("Graph answered 400 Bad Request ({0}); the forwarder never sends $skip, so a paging limit here means page_size is too large or the nextLink expired")]
    BadRequest(String),
    #[error("Graph answered {last} {attempts} times in a row; giving up until the next poll")]
    Exhausted {
        last: String,
        attempts: u32,
        /// HTTP status of the last answer (`None` for a transport error).
        status: Option<u16>,
    },
    #[error("refusing to follow @odata.nextLink `{0}`: it does not point at the configured Graph host")]
    ForeignLink(String),
    #[error("Graph answered {status} ({detail})")]
    Unexpected { status: u16, detail: String },
}

impl GraphError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GraphError::ShuttingDown => "shutdown",
            GraphError::Auth(_) => "auth",
            GraphError::Unauthorized(_) => "unauthorized",
            GraphError::Forbidden { .. } => "forbidden",
            GraphError::BadRequest(_) => "bad_request",
            GraphError::Exhausted { .. } => "retries_exhausted",
            GraphError::ForeignLink(_) => "foreign_next_link",
            GraphError::Unexpected { .. } => "unexpected_status",
        }
    }
}

/// One page as received.
#[derive(Debug)]
pub struct Page {
    pub body: Bytes,
    /// `Some(Warning header)` for a 206 Partial Content answer.
    pub partial: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with jitter for attempt `n` (1-based): a random delay between
    /// half and all of `initial * 2^(n-1)`, capped at `max`.
    pub fn backoff(&self, n: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max);
        base.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// The Graph client of one tenant of one source.
pub struct GraphClient {
    pub http: reqwest::Client,
    pub tokens: TokenProvider,
    /// The request budget, shared by every source of this tenant on the same API family.
    budget: Arc<Budget>,
    /// `https://host[:port]`: a nextLink must start with it.
    pub graph_origin: String,
    pub retry: RetryPolicy,
    pub permission: &'static str,
    pub metrics: Arc<Metrics>,
    pub source: Arc<str>,
    pub tenant: Arc<str>,
    pub shutdown: CancellationToken,
}

/// A tenant's request budget on one API family: the rate limiter, and no request before
/// `not_before` (the last 429/503's `Retry-After`, or backoff, also holds after the retries
/// of that request ran out, for the next poll).
struct Budget {
    /// The quota and its limiter; a shared budget takes the stricter quota when another
    /// source asks for less ([`Budget::tighten`]).
    limiter: std::sync::RwLock<(Quota, Arc<DefaultDirectRateLimiter>)>,
    not_before: std::sync::Mutex<Option<Instant>>,
}

impl Budget {
    fn new(quota: Quota) -> Budget {
        Budget {
            limiter: std::sync::RwLock::new((quota, Arc::new(RateLimiter::direct(quota)))),
            not_before: std::sync::Mutex::new(None),
        }
    }

    fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        self.limiter.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Takes the stricter of this budget's quota and `quota` (the lower rate, the smaller
    /// burst), so that no source of a shared budget goes faster than it was configured to.
    fn tighten(&self, quota: Quota, key: &str) {
        let mut l = self.limiter.write().unwrap_or_else(|e| e.into_inner());
        let period = l.0.replenish_interval().max(quota.replenish_interval());
        let burst = l.0.burst_size().min(quota.burst_size());
        let Some(stricter) = Quota::with_period(period).map(|q| q.allow_burst(burst)) else {
            return;
        };
        if stricter != l.0 {
            tracing::warn!(
                budget = %key,
                per_minute = 60.0 / period.as_secs_f64(),
                burst = burst.get(),
                "sources sharing a tenant's Identity Protection request budget ask for different rates; \
                 the lower rate and burst apply to all of them"
            );
            *l = (stricter, Arc::new(RateLimiter::direct(stricter)));
        }
    }
}

/// The budgets in use, by (Graph origin, tenant and API family): Identity Protection allows
/// one request per second per tenant for every app, so the risk detection and risky user
/// sources of a tenant share one (the lowest rate and burst any of them asks for); the
/// security API's limit is per app and tenant, so each incidents source keeps its own.
fn budget(key: Option<(String, String)>, quota: Quota) -> Arc<Budget> {
    type Registry = std::sync::Mutex<std::collections::HashMap<(String, String), std::sync::Weak<Budget>>>;
    static SHARED: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    let new = || Arc::new(Budget::new(quota));
    let Some(key) = key else { return new() };
    let mut map = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.retain(|_, b| b.strong_count() > 0);
    if let Some(b) = map.get(&key).and_then(std::sync::Weak::upgrade) {
        b.tighten(quota, &key.1);
        return b;
    }
    let b = new();
    map.insert(key, Arc::downgrade(&b));
    b
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// `code: message` of a Graph error body, with the request ids for support cases.
fn describe(status: u16, headers: &HeaderMap, body: &[u8], client_request_id: &str) -> String {
    let env: Option<ErrorEnvelope> = serde_json::from_slice(body).ok();
    let (code, message) = env
        .and_then(|e| e.error)
        .map(|e| (e.code.unwrap_or_default(), e.message.unwrap_or_default()))
        .unwrap_or_default();
    let request_id = headers.get("request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    let mut message: String = message.chars().take(300).collect();
    if code.is_empty() && message.is_empty() {
        message = format!("HTTP {status}");
    }
    format!("{code}: {message}; request-id {request_id}, client-request-id {client_request_id}")
}

/// `Retry-After` as a delay from now: delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(ms.max(0) as u64).min(Duration::from_secs(86_400)))
}

impl GraphClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        tokens: TokenProvider,
        graph_origin: String,
        requests_per_minute: u32,
        burst: u32,
        retry: RetryPolicy,
        permission: &'static str,
        metrics: Arc<Metrics>,
        source: Arc<str>,
        tenant: Arc<str>,
        shutdown: CancellationToken,
        shared_family: Option<&str>,
    ) -> GraphClient {
        let rpm = NonZeroU32::new(requests_per_minute.max(1)).expect("non-zero");
        let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
        let shared = shared_family.map(|f| (graph_origin.clone(), format!("{}/{f}", tenant.to_ascii_lowercase())));
        GraphClient {
            http,
            tokens,
            budget: budget(shared, Quota::per_minute(rpm).allow_burst(burst)),
            graph_origin,
            retry,
            permission,
            metrics,
            source,
            tenant,
            shutdown,
        }
    }

    fn labels(&self) -> crate::telemetry::TenantLabels {
        GraphMetrics::tenant(&self.source, &self.tenant)
    }

    fn count_status(&self, status: &str) {
        self.metrics
            .graph
            .requests
            .get_or_create(&GraphMetrics::tenant_value(&self.source, &self.tenant, status))
            .inc();
    }

    fn count_wait(&self, waited: Duration) {
        self.metrics.graph.throttle_waits.get_or_create(&self.labels()).inc();
        self.metrics
            .graph
            .throttle_wait_seconds
            .get_or_create(&self.labels())
            .inc_by(waited.as_secs_f64());
    }

    async fn sleep(&self, d: Duration) -> Result<(), GraphError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(GraphError::ShuttingDown),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Wait for the tenant's request budget, and out the last `Retry-After`.
    async fn budget(&self) -> Result<(), GraphError> {
        let hold = *self.budget.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = hold.and_then(|t| t.checked_duration_since(Instant::now())) {
            tracing::debug!(tenant = %self.tenant, wait_ms = d.as_millis() as u64, "waiting out the last Retry-After");
            self.count_wait(d);
            self.sleep(d).await?;
        }
        let start = Instant::now();
        let limiter = self.budget.limiter();
        tokio::select! {
            _ = self.shutdown.cancelled() => return Err(GraphError::ShuttingDown),
            _ = limiter.until_ready() => {}
        }
        let waited = start.elapsed();
        if waited > Duration::from_millis(5) {
            self.count_wait(waited);
        }
        Ok(())
    }

    /// Whether `url` is on the configured Graph host (tokens go nowhere else).
    pub fn same_origin(&self, url: &str) -> bool {
        url.strip_prefix(&self.graph_origin)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// GET one page, retrying as the error rules say.
    pub async fn get(&self, url: &str) -> Result<Page, GraphError> {
        if !self.same_origin(url) {
            return Err(GraphError::ForeignLink(url.to_string()));
        }
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            self.budget().await?;
            let token = self.tokens.token().await?;
            let request_id = guid();
            let send = self
                .http
                .get(url)
                .bearer_auth(&token)
                .header(ACCEPT, "application/json")
                .header("Prefer", "include-unknown-enum-members")
                .header("client-request-id", &request_id)
                .send();
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(GraphError::ShuttingDown),
                r = async {
                    let resp = send.await?;
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, headers, body))
                } => r,
            };
            let (status, headers, body) = match result {
                Ok(x) => x,
                Err(e) => {
                    self.count_status("error");
                    attempts += 1;
                    let detail = format!("transport error: {e}");
                    if attempts > self.retry.max_retries {
                        return Err(GraphError::Exhausted {
                            last: detail,
                            attempts,
                            status: None,
                        });
                    }
                    let d = self.retry.backoff(attempts);
                    tracing::warn!(tenant = %self.tenant, error = %e, retry_in_ms = d.as_millis() as u64, "Graph request failed; retrying");
                    self.count_wait(d);
                    self.sleep(d).await?;
                    continue;
                }
            };
            self.count_status(&status.to_string());
            match status {
                200..=205 | 207..=299 => return Ok(Page { body, partial: None }),
                206 => {
                    let warning = headers
                        .get(WARNING)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("(no Warning header)")
                        .to_string();
                    return Ok(Page {
                        body,
                        partial: Some(warning),
                    });
                }
                401 if !refreshed => {
                    tracing::info!(tenant = %self.tenant, "Graph answered 401; refreshing the access token once");
                    self.tokens.invalidate(&token).await;
                    refreshed = true;
                }
                401 => return Err(GraphError::Unauthorized(describe(status, &headers, &body, &request_id))),
                403 => {
                    return Err(GraphError::Forbidden {
                        detail: describe(status, &headers, &body, &request_id),
                        permission: self.permission,
                    })
                }
                400 => return Err(GraphError::BadRequest(describe(status, &headers, &body, &request_id))),
                429 | 500 | 502 | 503 | 504 => {
                    attempts += 1;
                    let detail = describe(status, &headers, &body, &request_id);
                    let told = retry_after(&headers);
                    if let Some(t) = told {
                        *self.budget.not_before.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + t);
                    }
                    if attempts > self.retry.max_retries {
                        return Err(GraphError::Exhausted {
                            last: format!("{status} ({detail})"),
                            attempts,
                            status: Some(status),
                        });
                    }
                    let d = told.unwrap_or_else(|| self.retry.backoff(attempts));
                    tracing::warn!(
                        tenant = %self.tenant, status, retry_after_ms = d.as_millis() as u64,
                        from_header = told.is_some(), %detail, "Graph throttled or unavailable; waiting"
                    );
                    self.count_wait(d);
                    self.sleep(d).await?;
                }
                _ => {
                    return Err(GraphError::Unexpected {
                        status,
                        detail: describe(status, &headers, &body, &request_id),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_protection_sources_of_a_tenant_share_one_budget() {
        let q = || Quota::per_minute(NonZeroU32::new(30).unwrap()).allow_burst(NonZeroU32::new(1).unwrap());
        let key = |t: &str, f: &str| Some(("https://graph.example".to_string(), format!("{t}/{f}")));
        let a = budget(key("t1", "identityProtection"), q());
        let b = budget(key("t1", "identityProtection"), q());
        assert!(Arc::ptr_eq(&a, &b), "risk detections and risky users of t1: one budget");
        assert!(
            !Arc::ptr_eq(&a, &budget(key("t2", "identityProtection"), q())),
            "another tenant"
        );
        assert!(
            !Arc::ptr_eq(&budget(None, q()), &budget(None, q())),
            "incidents: each its own"
        );
        // One request at once between the two: the second waits for the shared budget.
        assert!(a.limiter().check().is_ok());
        assert!(b.limiter().check().is_err());
    }

    /// Sources of one shared budget asking for different rates: the lowest rate and burst
    /// apply to all of them, whichever started first; a looser one loosens nothing.
    #[test]
    fn a_shared_budget_takes_the_stricter_quota() {
        let q = |per_minute: u32, burst: u32| {
            Quota::per_minute(NonZeroU32::new(per_minute).unwrap()).allow_burst(NonZeroU32::new(burst).unwrap())
        };
        let key = || Some(("https://graph.example".to_string(), "t3/identityProtection".to_string()));
        let a = budget(key(), q(120, 2));
        let b = budget(key(), q(60, 1));
        let c = budget(key(), q(600, 5));
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c));
        assert_eq!(a.limiter.read().unwrap().0, q(60, 1));
        // A burst of one: the first source's second request waits, as does the third's.
        assert!(a.limiter().check().is_ok());
        assert!(a.limiter().check().is_err());
        assert!(c.limiter().check().is_err());
    }
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let at = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(28) && d <= Duration::from_secs(30), "{d:?}");
        h.insert(RETRY_AFTER, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let p = RetryPolicy {
            max_retries: 5,
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(8),
        };
        for _ in 0..20 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_millis(1000));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(2000) && d3 <= Duration::from_millis(4000));
            assert!(p.backoff(30) <= Duration::from_secs(8));
        }
    }

    #[test]
    fn error_bodies_are_described_with_request_ids() {
        let body = br#"{"error":{"code":"TooManyRequests","message":"Too many requests.","innerError":{}}}"#;
        let mut h = HeaderMap::new();
        h.insert("request-id", HeaderValue::from_static("r-1"));
        let d = describe(429, &h, body, "c-1");
        assert_eq!(
            d,
            "TooManyRequests: Too many requests.; request-id r-1, client-request-id c-1"
        );
        assert!(describe(500, &HeaderMap::new(), b"oops", "c").contains("HTTP 500"));
    }
}
