//! A Microsoft Graph and Entra ID login emulator for the Graph source tests: an HTTPS server
//! on 127.0.0.1 (random port, certificate from a test CA made with rcgen) that serves the
//! token endpoint (client secret, certificate client assertion checked header, claims and
//! signature, federated token), an IMDS-style managed identity endpoint, and
//! `security/incidents`, `identityProtection/riskDetections` and `riskyUsers` with `$filter`
//! (ge/gt/le/lt, clauses joined by `and`), `$expand=alerts`, `$top` (clamped at 1000), `$skip` (> 500 is a 400), opaque
//! `$skiptoken` nextLinks, and scripted faults: 429/503 with or without Retry-After, 206
//! with a Warning header, 401 for an expired token, 5xx. Every request is recorded.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

#[path = "graph_login.rs"]
mod login;
use login::{managed_identity, token};

/// A scripted answer for the next Graph data request of a tenant.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 or 503 with this `Retry-After` value (or none, as Identity Protection does).
    Throttle { status: u16, retry_after: Option<String> },
    /// 206: the page without these ids, with this `Warning` header.
    Partial { hide: Vec<String>, warning: String },
    /// A 5xx with a Graph error body.
    ServerError(u16),
    /// 401 whatever the token.
    Unauthorized,
    /// 400 with the body the service gives for `$skip` > 500.
    BadRequest,
}

#[derive(Clone, Debug, Default)]
pub struct TenantData {
    pub client_id: String,
    pub secret: Option<String>,
    /// DER of the registered application certificate (certificate credentials).
    pub cert_der: Option<Vec<u8>>,
    /// A federated token accepted as client assertion (workload identity).
    pub federated_token: Option<String>,
    /// Client id of a managed identity that gets tokens for this tenant.
    pub managed_identity: Option<String>,
    pub token_ttl_secs: u64,
    pub incidents: Vec<Value>,
    pub risk_detections: Vec<Value>,
    pub risky_users: Vec<Value>,
    pub faults: VecDeque<Fault>,
    /// Requests with `$expand=alerts` answer 500 while this is above 0 (each takes one).
    pub expand_failures: usize,
    /// Ignore `lt`/`le` clauses of `$filter` (a server that does not honour an upper bound).
    pub ignore_upper_bounds: bool,
    /// A throttle storm: once the scripted faults are used up, this share of data requests
    /// answers 429 with `Retry-After` (seeded, so a run can be repeated).
    pub storm: Option<Storm>,
}

/// A seeded 429 storm (see [`TenantData::storm`]).
#[derive(Clone, Debug)]
pub struct Storm {
    /// splitmix64 state.
    pub state: u64,
    /// Percentage of requests throttled.
    pub percent: u64,
    pub retry_after_secs: u64,
}

impl Storm {
    fn throttle_next(&mut self) -> bool {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 100 < self.percent
    }
}

/// One Graph data request as received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub wall: SystemTime,
    pub tenant: String,
    pub path: String,
    /// The raw query string as sent.
    pub query: String,
    /// `$filter`, decoded.
    pub filter: Option<String>,
    pub status: u16,
    pub client_request_id: Option<String>,
    pub prefer: Option<String>,
    /// The `Retry-After` header of the answer, if any.
    pub retry_after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TokenLog {
    pub at: Instant,
    pub tenant: String,
    /// `secret`, `assertion`, `federated` or `managed_identity`.
    pub grant: String,
    /// `alg` of an assertion.
    pub alg: Option<String>,
    pub accepted: bool,
    pub error: Option<String>,
}

struct Cursor {
    ids: Vec<String>,
    offset: usize,
    top: usize,
    expand: bool,
    resource: String,
    /// The query the nextLink carried, to check it comes back verbatim.
    query: String,
}

#[derive(Default)]
pub struct EmuState {
    pub tenants: HashMap<String, TenantData>,
    pub requests: Vec<Logged>,
    pub token_requests: Vec<TokenLog>,
    /// nextLinks that came back altered (must stay 0).
    pub altered_links: usize,
    tokens: HashMap<String, (String, Instant)>,
    cursors: HashMap<String, Cursor>,
    seq: u64,
}

pub struct Emulator {
    pub base: String,
    pub ca_file: PathBuf,
    pub state: Arc<Mutex<EmuState>>,
    _dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

pub fn sample(name: &str) -> Vec<Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/graph")
        .join(name);
    let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["value"].as_array().unwrap().clone()
}

/// DER of the first certificate in a PEM file.
pub fn cert_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
}

impl Emulator {
    pub async fn start() -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "m365-forwarder test CA");
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        Emulator::serve(
            tcp,
            format!("https://127.0.0.1:{port}"),
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            ca_file,
            dir,
        )
    }

    /// Serve on `tcp` with this certificate chain; `base` is the URL clients reach it at
    /// (nextLinks are built on it). Used by `examples/graph_emulator.rs` for the demo stack.
    pub fn serve(
        tcp: tokio::net::TcpListener,
        base: String,
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
        ca_file: PathBuf,
        dir: tempfile::TempDir,
    ) -> Emulator {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        };
        let state = Arc::new(Mutex::new(EmuState::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((state.clone(), base.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Emulator {
            base,
            ca_file,
            state,
            _dir: dir,
            stop,
        }
    }

    /// Register a tenant with client-secret credentials and the given incidents.
    pub fn add_tenant(&self, tenant: &str, client_id: &str, secret: &str, incidents: Vec<Value>) {
        self.state.lock().unwrap().tenants.insert(
            tenant.to_string(),
            TenantData {
                client_id: client_id.to_string(),
                secret: Some(secret.to_string()),
                token_ttl_secs: 3600,
                incidents,
                ..Default::default()
            },
        );
    }

    pub fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&mut TenantData) -> R) -> R {
        let mut st = self.state.lock().unwrap();
        f(st.tenants.get_mut(tenant).expect("known tenant"))
    }

    /// Throttle `percent` % of this tenant's data requests (seeded) from now on.
    pub fn set_storm(&self, tenant: &str, seed: u64, percent: u64, retry_after_secs: u64) {
        self.with_tenant(tenant, |t| {
            t.storm = Some(Storm {
                state: seed,
                percent,
                retry_after_secs,
            })
        });
    }

    pub fn push_fault(&self, tenant: &str, fault: Fault) {
        self.with_tenant(tenant, |t| t.faults.push_back(fault));
    }

    /// Replace (by id) or add an incident.
    pub fn upsert_incident(&self, tenant: &str, incident: Value) {
        self.with_tenant(tenant, |t| upsert(&mut t.incidents, incident));
    }

    pub fn upsert_risky_user(&self, tenant: &str, user: Value) {
        self.with_tenant(tenant, |t| upsert(&mut t.risky_users, user));
    }

    pub fn upsert_risk_detection(&self, tenant: &str, detection: Value) {
        self.with_tenant(tenant, |t| upsert(&mut t.risk_detections, detection));
    }

    /// Make every token issued so far for `tenant` expired.
    pub fn expire_tokens(&self, tenant: &str) {
        let mut st = self.state.lock().unwrap();
        let now = Instant::now();
        for (t, exp) in st.tokens.values_mut() {
            if t == tenant {
                *exp = now;
            }
        }
    }

    pub fn requests(&self, tenant: &str) -> Vec<Logged> {
        let st = self.state.lock().unwrap();
        st.requests.iter().filter(|r| r.tenant == tenant).cloned().collect()
    }

    pub fn token_requests(&self, tenant: &str) -> Vec<TokenLog> {
        let st = self.state.lock().unwrap();
        st.token_requests
            .iter()
            .filter(|r| r.tenant == tenant)
            .cloned()
            .collect()
    }

    pub fn altered_links(&self) -> usize {
        self.state.lock().unwrap().altered_links
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

fn upsert(list: &mut Vec<Value>, v: Value) {
    match list.iter_mut().find(|x| x["id"] == v["id"]) {
        Some(slot) => *slot = v,
        None => list.push(v),
    }
}

type AppState = (Arc<Mutex<EmuState>>, String);

fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message,
        "innerError": {"date": "2026-11-28T10:00:00", "request-id": "00000000-0000-4000-8000-000000000001",
        "client-request-id": "00000000-0000-4000-8000-000000000002"}}});
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State((state, base)): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::POST, [tenant, "oauth2", "v2.0", "token"]) => token(&state, &base, tenant, &body),
        (Method::GET, ["metadata", "identity", "oauth2", "token"]) => managed_identity(&state, &base, &headers, &query),
        (Method::GET, [version, rest @ ..]) if *version == "beta" || *version == "v1.0" => {
            data(&state, &base, version, &rest.join("/"), &query, &headers)
        }
        _ => graph_error(404, "UnknownRequest", "no such endpoint"),
    }
}

/// The last-updated field a resource filters on.
fn field_of(resource: &str) -> Option<&'static str> {
    match resource {
        "security/incidents" => Some("lastUpdateDateTime"),
        "identityProtection/riskDetections" => Some("lastUpdatedDateTime"),
        "identityProtection/riskyUsers" => Some("riskLastUpdatedDateTime"),
        "security/alerts_v2" => Some("lastUpdateDateTime"),
        _ => None,
    }
}

fn time_of(v: &Value, field: &str) -> i64 {
    v[field]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map_or(0, |d| d.timestamp_micros())
}

fn data(
    state: &Mutex<EmuState>,
    base: &str,
    version: &str,
    resource: &str,
    query: &str,
    headers: &HeaderMap,
) -> Response {
    let Some(field) = field_of(resource) else {
        return graph_error(404, "UnknownRequest", "no such resource");
    };
    let mut st = state.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let token = st.tokens.get(bearer).cloned();
    let q: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let log = Logged {
        at: Instant::now(),
        wall: SystemTime::now(),
        tenant: token.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
        path: format!("/{version}/{resource}"),
        query: query.to_string(),
        filter: get("$filter"),
        status: 200,
        client_request_id: headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        prefer: headers.get("prefer").and_then(|v| v.to_str().ok()).map(str::to_string),
        retry_after: None,
    };
    let respond = |st: &mut EmuState, log: Logged, r: Response| {
        let mut log = log;
        log.status = r.status().as_u16();
        log.retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        st.requests.push(log);
        r
    };
    let tenant = match token {
        Some((t, exp)) if exp > Instant::now() => t,
        _ => {
            let mut r = graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            );
            r.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"\", error=\"invalid_token\"".parse().unwrap(),
            );
            return respond(&mut st, log, r);
        }
    };
    let fault = st.tenants.get_mut(&tenant).and_then(|t| {
        t.faults.pop_front().or_else(|| {
            let storm = t.storm.as_mut()?;
            storm.throttle_next().then(|| Fault::Throttle {
                status: 429,
                retry_after: Some(storm.retry_after_secs.to_string()),
            })
        })
    });
    let mut hide = Vec::new();
    let mut warning = None;
    match fault {
        Some(Fault::Throttle { status, retry_after }) => {
            let body = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/graph/error_429.json"),
            )
            .unwrap();
            let mut r = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            return respond(&mut st, log, r);
        }
        Some(Fault::ServerError(s)) => {
            return respond(
                &mut st,
                log,
                graph_error(s, "InternalServerError", "Something went wrong."),
            )
        }
        Some(Fault::Unauthorized) => {
            return respond(
                &mut st,
                log,
                graph_error(401, "InvalidAuthenticationToken", "Token is not valid."),
            )
        }
        Some(Fault::BadRequest) => {
            let r = (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                skip_error_body(),
            )
                .into_response();
            return respond(&mut st, log, r);
        }
        Some(Fault::Partial { hide: h, warning: w }) => {
            hide = h;
            warning = Some(w);
        }
        None => {}
    }
    if get("$expand").as_deref() == Some("alerts") {
        let t = st.tenants.get_mut(&tenant).unwrap();
        if t.expand_failures > 0 {
            t.expand_failures -= 1;
            return respond(
                &mut st,
                log,
                graph_error(500, "InternalServerError", "Internal error while expanding alerts."),
            );
        }
    }
    if resource == "security/alerts_v2" {
        // Only what the fallback asks: `$filter=incidentId eq '<id>'`, one page.
        let f = get("$filter").unwrap_or_default();
        let Some(id) = f.strip_prefix("incidentId eq '").and_then(|r| r.strip_suffix('\'')) else {
            return respond(&mut st, log, graph_error(400, "BadRequest", "Unsupported filter"));
        };
        let alerts: Vec<Value> = st.tenants[&tenant]
            .incidents
            .iter()
            .flat_map(|i| i["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["incidentId"] == id)
            .collect();
        let body = json!({"@odata.context": format!("{base}/{version}/$metadata#security/alerts_v2"), "value": alerts});
        let r = ([("content-type", "application/json")], body.to_string()).into_response();
        return respond(&mut st, log, r);
    }
    let items: Vec<Value> = {
        let t = &st.tenants[&tenant];
        match resource {
            "security/incidents" => t.incidents.clone(),
            "identityProtection/riskDetections" => t.risk_detections.clone(),
            _ => t.risky_users.clone(),
        }
    };
    let (ids, offset, top, expand) = if let Some(skiptoken) = get("$skiptoken") {
        let without: String = query
            .split('&')
            .filter(|p| !p.starts_with("$skiptoken="))
            .collect::<Vec<_>>()
            .join("&");
        match st.cursors.remove(&skiptoken) {
            Some(c) if c.resource == resource => {
                if c.query != without {
                    st.altered_links += 1;
                }
                (c.ids, c.offset, c.top, c.expand)
            }
            _ => return respond(&mut st, log, graph_error(400, "BadRequest", "Invalid skip token.")),
        }
    } else {
        if get("$skip")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s > 500)
        {
            let r = (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                skip_error_body(),
            )
                .into_response();
            return respond(&mut st, log, r);
        }
        let mut selected: Vec<&Value> = items.iter().collect();
        if let Some(f) = get("$filter") {
            let lax = st.tenants[&tenant].ignore_upper_bounds;
            // `field op value`, or several joined by `and` (op: ge, gt, le, lt).
            for clause in f.split(" and ") {
                let words: Vec<&str> = clause.split_whitespace().collect();
                match words.as_slice() {
                    [fld, op @ ("ge" | "gt" | "le" | "lt"), value] if *fld == field => {
                        let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) else {
                            return respond(&mut st, log, graph_error(400, "BadRequest", "Invalid filter literal"));
                        };
                        let at = at.timestamp_micros();
                        let op = *op;
                        if lax && (op == "lt" || op == "le") {
                            continue;
                        }
                        selected.retain(|v| {
                            let t = time_of(v, field);
                            match op {
                                "ge" => t >= at,
                                "gt" => t > at,
                                "le" => t <= at,
                                _ => t < at,
                            }
                        });
                    }
                    _ => return respond(&mut st, log, graph_error(400, "BadRequest", "Invalid filter clause")),
                }
            }
        }
        // Newest first, as the service tends to answer; clients must not rely on any order.
        selected.sort_by(|a, b| {
            time_of(b, field)
                .cmp(&time_of(a, field))
                .then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
        });
        let top = get("$top")
            .and_then(|t| t.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, 1000);
        let expand = get("$expand").as_deref() == Some("alerts");
        let ids = selected
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect();
        (ids, 0, top, expand)
    };
    let page_ids: Vec<&String> = ids.iter().skip(offset).take(top).collect();
    let mut value = Vec::new();
    for id in &page_ids {
        if hide.contains(id) {
            continue;
        }
        if let Some(mut v) = items.iter().find(|v| v["id"].as_str() == Some(id.as_str())).cloned() {
            if resource == "security/incidents" && !expand {
                v.as_object_mut().unwrap().remove("alerts");
            }
            value.push(v);
        }
    }
    let mut body = json!({"@odata.context": format!("{base}/{version}/$metadata#{resource}"), "value": value});
    if offset + top < ids.len() {
        st.seq += 1;
        let skiptoken = URL_SAFE_NO_PAD.encode(format!("{tenant};{};{}", st.seq, offset + top));
        // Like the service: the original query re-encoded, plus the skip token.
        let carried: Vec<(String, String)> = q.iter().filter(|(k, _)| k != "$skiptoken").cloned().collect();
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(carried.iter())
            .finish()
            .replace("%24", "$");
        st.cursors.insert(
            skiptoken.clone(),
            Cursor {
                ids: ids.clone(),
                offset: offset + top,
                top,
                expand,
                resource: resource.to_string(),
                query: encoded.clone(),
            },
        );
        let sep = if encoded.is_empty() { "" } else { "&" };
        body["@odata.nextLink"] = json!(format!(
            "{base}/{version}/{resource}?{encoded}{sep}$skiptoken={skiptoken}"
        ));
    }
    let mut r = ([("content-type", "application/json")], body.to_string()).into_response();
    let rid = format!("{:032x}", rand::random::<u128>());
    r.headers_mut().insert("request-id", rid.parse().unwrap());
    if let Some(c) = &log.client_request_id {
        r.headers_mut().insert("client-request-id", c.parse().unwrap());
    }
    if let Some(w) = warning {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r.headers_mut().insert("warning", w.parse().unwrap());
    }
    respond(&mut st, log, r)
}

fn skip_error_body() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/graph/error_400_skip.json"),
    )
    .unwrap()
}
