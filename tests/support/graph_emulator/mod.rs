//! A Microsoft Graph and Entra ID login emulator for the Graph source tests: an HTTPS server
//! on 127.0.0.1 (random port, certificate from a test CA made with rcgen) that serves the
//! token endpoint (client secret, certificate client assertion checked header, claims and
//! signature, federated token), an IMDS-style managed identity endpoint, and
//! `security/incidents`, `identityProtection/riskDetections` and `riskyUsers` with `$filter`
//! (ge/gt/le/lt, clauses joined by `and`), `$expand=alerts`, `$top` (clamped at 1000), `$skip` (> 500 is a 400), opaque
//! `$skiptoken` nextLinks, and scripted faults: 429/503 with or without Retry-After, 206
//! with a Warning header, 401 for an expired token, 5xx. Every request is recorded.
//!
//! Here: the HTTPS server, the test-facing API and the request routing; `state` holds the
//! tenants and logs, `data` answers the data requests (filtering, paging), `throttle` the
//! scripted faults and 429 storms, `login` the token and managed identity endpoints.
#![allow(dead_code)]

mod data;
mod login;
mod state;
mod throttle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use data::data;
use login::{managed_identity, token};
use state::{upsert, Cursor};
pub use state::{EmuState, Logged, TenantData, TokenLog};
pub use throttle::{Fault, Storm};

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

    /// Let `domain` name `tenant` at the token endpoint (a verified domain).
    pub fn add_domain(&self, domain: &str, tenant: &str) {
        self.state
            .lock()
            .unwrap()
            .domains
            .insert(domain.to_ascii_lowercase(), tenant.to_string());
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
