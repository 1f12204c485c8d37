//! Access tokens for Microsoft Graph, per tenant: OAuth 2.0 client credentials with a client
//! secret or a certificate (signed JWT client assertion), workload identity federation (a
//! federated token file as the client assertion) and managed identity (IMDS or App
//! Service). Tokens are cached and refreshed before they expire; one refresh at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::json;

use super::AssertionAlg;
use crate::config::Secret;
use crate::telemetry::{GraphMetrics, Metrics};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token request to {url} failed: {detail}")]
    Transport { url: String, detail: String },
    #[error(
        "token endpoint {url} refused client {client_id} of tenant {tenant} (HTTP {status}): {error}: {description}"
    )]
    Refused {
        url: String,
        client_id: String,
        tenant: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("token response from {url} is not understood: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("signing the client assertion failed")]
    Sign,
}

/// A certificate credential: the RSA key and the certificate's thumbprints.
#[derive(Clone)]
pub struct CertCredential {
    key: Arc<RsaKeyPair>,
    alg: AssertionAlg,
    x5t: String,
    x5t_s256: String,
    /// Base64 DER of the chain, sent as `x5c` when asked (subject name / issuer auth).
    chain: Option<Vec<String>>,
}

impl std::fmt::Debug for CertCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertCredential")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

fn file_err(path: &Path, detail: impl Into<String>) -> AuthError {
    AuthError::File {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

impl CertCredential {
    /// Load a PEM certificate (the first one is the application's; more are its chain) and
    /// a PEM RSA private key (PKCS#8 or PKCS#1; it may be in the same file).
    pub fn load(cert: &Path, key: &Path, alg: AssertionAlg, send_chain: bool) -> Result<CertCredential, AuthError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err(cert, format!("cannot read certificate: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert, format!("bad PEM certificate: {e}")))?;
        let leaf = certs
            .first()
            .ok_or_else(|| file_err(cert, "no CERTIFICATE block found"))?;
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, format!("cannot read private key: {e}")))?;
        let pair = match &key_der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(file_err(key, "not an RSA private key (PKCS#8 or PKCS#1 PEM expected)")),
        }
        .map_err(|e| file_err(key, format!("unusable RSA private key: {e}")))?;
        // The certificate's SubjectPublicKeyInfo holds the PKCS#1 public key verbatim.
        let public = ring::signature::KeyPair::public_key(&pair).as_ref();
        if !leaf.as_ref().windows(public.len()).any(|w| w == public) {
            return Err(file_err(
                key,
                format!("private key does not match the certificate {}", cert.display()),
            ));
        }
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.as_ref());
        let sha256 = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        Ok(CertCredential {
            key: Arc::new(pair),
            alg,
            x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
            chain: send_chain.then(|| certs.iter().map(|c| STANDARD.encode(c.as_ref())).collect()),
        })
    }

    /// A signed assertion for `client_id` at the token endpoint `aud`, valid 10 minutes.
    pub fn assertion(&self, client_id: &str, aud: &str) -> Result<String, AuthError> {
        let mut header = match self.alg {
            AssertionAlg::Rs256 => json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t}),
            AssertionAlg::Ps256 => json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256}),
        };
        if let Some(chain) = &self.chain {
            header["x5c"] = json!(chain);
        }
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "aud": aud, "iss": client_id, "sub": client_id, "jti": guid(),
            "nbf": now, "iat": now, "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        let padding: &'static dyn ring::signature::RsaEncoding = match self.alg {
            AssertionAlg::Rs256 => &ring::signature::RSA_PKCS1_SHA256,
            AssertionAlg::Ps256 => &ring::signature::RSA_PSS_SHA256,
        };
        self.key
            .sign(padding, &SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| AuthError::Sign)?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// How a tenant proves who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    Secret(Secret),
    Certificate(CertCredential),
    /// Kubernetes workload identity: the file holds a token from the cluster's issuer,
    /// re-read on every refresh (it rotates).
    WorkloadIdentity {
        token_file: PathBuf,
    },
    /// IMDS style endpoint (default `169.254.169.254`), or App Service's when
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set.
    ManagedIdentity {
        endpoint: Option<String>,
    },
}

struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// Tokens of one tenant.
pub struct TokenProvider {
    pub http: reqwest::Client,
    pub tenant: String,
    pub client_id: Option<String>,
    pub credential: Credential,
    /// `{login}/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    /// The Graph host (`https://graph.microsoft.com`): scope `{graph}/.default`.
    pub resource: String,
    pub metrics: Arc<Metrics>,
    pub source: Arc<str>,
    cache: tokio::sync::Mutex<Option<Cached>>,
    /// The tenant GUID the tokens are issued for (their `tid` claim), once one was read.
    guid: std::sync::OnceLock<Arc<str>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    expires_on: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

fn number(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The `tid` claim of an access token (a JWT), lower-cased, when it is a GUID. The payload
/// is read without checking the signature: the token came from the token endpoint over
/// TLS and is only ever sent back to Graph; the claim only names the tenant.
pub fn token_tenant(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Claims {
        tid: Option<String>,
    }
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let tid = serde_json::from_slice::<Claims>(&bytes).ok()?.tid?;
    is_guid(&tid).then(|| tid.to_ascii_lowercase())
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A random (version 4) GUID.
pub fn guid() -> String {
    let b: u128 = (rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl TokenProvider {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        tenant: String,
        client_id: Option<String>,
        credential: Credential,
        login: &str,
        resource: String,
        metrics: Arc<Metrics>,
        source: Arc<str>,
    ) -> TokenProvider {
        TokenProvider {
            http,
            token_url: format!("{login}/{tenant}/oauth2/v2.0/token"),
            tenant,
            client_id,
            credential,
            resource,
            metrics,
            source,
            cache: tokio::sync::Mutex::new(None),
            guid: std::sync::OnceLock::new(),
        }
    }

    /// The tenant's GUID, as the `tid` claim of the last access token names it (`None`
    /// before the first token, or when the tokens are not JWTs). The configured
    /// `tenant_id` may be a domain name; records that carry no `tenantId` (risk
    /// detections, risky users) are stamped with this, as the Event Hub records are.
    pub fn tenant_guid(&self) -> Option<Arc<str>> {
        self.guid.get().cloned()
    }

    /// A valid token: the cached one, or a new one when it is due for refresh.
    pub async fn token(&self) -> Result<Arc<str>, AuthError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        if let Some(c) = cache.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        match self.fetch().await {
            Ok((token, lifetime)) => {
                let early = (lifetime / 2).min(Duration::from_secs(300));
                if self.guid.get().is_none() {
                    if let Some(tid) = token_tenant(&token) {
                        let _ = self.guid.set(Arc::from(tid));
                    }
                }
                let token: Arc<str> = Arc::from(token);
                *cache = Some(Cached {
                    token: token.clone(),
                    refresh_at: now + lifetime - early,
                    expires_at: now + lifetime,
                });
                tracing::debug!(tenant = %self.tenant, lifetime_secs = lifetime.as_secs(), "new access token");
                Ok(token)
            }
            Err(e) => match cache.as_ref().filter(|c| now < c.expires_at) {
                // Refresh failed early: keep using the token while it is still valid.
                Some(c) => {
                    tracing::warn!(tenant = %self.tenant, error = %e, "token refresh failed; the current token is still valid");
                    Ok(c.token.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forget `token` (Graph answered 401 with it), so the next call fetches a new one.
    pub async fn invalidate(&self, token: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| &*c.token == token) {
            *cache = None;
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .graph
            .token_requests
            .get_or_create(&GraphMetrics::tenant_value(&self.source, &self.tenant, outcome))
            .inc();
    }

    async fn fetch(&self) -> Result<(String, Duration), AuthError> {
        let client_id = self.client_id.clone().unwrap_or_default();
        let scope = format!("{}/.default", self.resource);
        let request = match &self.credential {
            Credential::ManagedIdentity { endpoint } => self.managed_identity_request(endpoint.as_deref()),
            cred => {
                let mut form: Vec<(&str, String)> = vec![
                    ("client_id", client_id.clone()),
                    ("scope", scope),
                    ("grant_type", "client_credentials".into()),
                ];
                match cred {
                    Credential::Secret(s) => form.push(("client_secret", s.expose().to_string())),
                    Credential::Certificate(c) => {
                        form.push(("client_assertion_type", JWT_BEARER.into()));
                        form.push(("client_assertion", c.assertion(&client_id, &self.token_url)?));
                    }
                    Credential::WorkloadIdentity { token_file } => {
                        let t = tokio::fs::read_to_string(token_file)
                            .await
                            .map_err(|e| file_err(token_file, format!("cannot read federated token: {e}")))?;
                        form.push(("client_assertion_type", JWT_BEARER.into()));
                        form.push(("client_assertion", t.trim().to_string()));
                    }
                    Credential::ManagedIdentity { .. } => unreachable!("handled above"),
                }
                self.http.post(&self.token_url).form(&form)
            }
        };
        let url = match &self.credential {
            Credential::ManagedIdentity { endpoint } => endpoint.clone().unwrap_or_else(|| IMDS_ENDPOINT.into()),
            _ => self.token_url.clone(),
        };
        let resp = request.send().await.map_err(|e| {
            self.count("error");
            AuthError::Transport {
                url: url.clone(),
                detail: e.to_string(),
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| AuthError::Transport {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let parsed: Result<TokenResponse, _> = serde_json::from_slice(&body);
        match parsed {
            Ok(TokenResponse {
                access_token: Some(token),
                expires_in,
                expires_on,
                ..
            }) if (200..300).contains(&status) => {
                self.count("ok");
                let secs = expires_in.as_ref().and_then(number).or_else(|| {
                    expires_on
                        .as_ref()
                        .and_then(number)
                        .map(|on| on - chrono::Utc::now().timestamp())
                });
                let secs = secs.unwrap_or(3600).clamp(60, 86_400) as u64;
                Ok((token, Duration::from_secs(secs)))
            }
            Ok(r) => {
                let error = r.error.unwrap_or_else(|| format!("http_{status}"));
                self.count(&error);
                Err(AuthError::Refused {
                    url,
                    client_id,
                    tenant: self.tenant.clone(),
                    status,
                    error,
                    description: r
                        .error_description
                        .unwrap_or_else(|| "no error_description".into())
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                })
            }
            Err(e) => {
                self.count("bad_response");
                Err(AuthError::BadResponse {
                    url,
                    detail: format!("HTTP {status}: {e}"),
                })
            }
        }
    }

    fn managed_identity_request(&self, endpoint: Option<&str>) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, String)> = vec![("resource", self.resource.clone())];
        if let Some(id) = &self.client_id {
            query.push(("client_id", id.clone()));
        }
        let app_service = (
            std::env::var("IDENTITY_ENDPOINT").ok(),
            std::env::var("IDENTITY_HEADER").ok(),
        );
        match (endpoint, app_service) {
            (None, (Some(ep), Some(header))) => {
                query.push(("api-version", "2019-08-01".into()));
                self.http.get(ep).query(&query).header("X-IDENTITY-HEADER", header)
            }
            (ep, _) => {
                query.push(("api-version", "2018-02-01".into()));
                self.http
                    .get(ep.unwrap_or(IMDS_ENDPOINT))
                    .query(&query)
                    .header("Metadata", "true")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/graph/auth")
            .join(p)
    }

    #[test]
    fn guids_are_version_4() {
        let g = guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"), "{g}");
        assert_ne!(guid(), g);
    }

    #[test]
    fn the_tenant_guid_is_read_from_the_token_claims() {
        let jwt = |claims: &str| {
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode(claims),
                URL_SAFE_NO_PAD.encode([7u8; 32])
            )
        };
        let t =
            jwt(r#"{"aud":"https://graph.microsoft.com","tid":"72F988BF-86F1-41AF-91AB-2D7CD011DB47","roles":["x"]}"#);
        assert_eq!(
            token_tenant(&t).as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        assert_eq!(
            token_tenant(&jwt(r#"{"tid":"contoso.onmicrosoft.com"}"#)),
            None,
            "not a GUID"
        );
        assert_eq!(token_tenant(&jwt(r#"{"oid":"x"}"#)), None);
        assert_eq!(token_tenant("opaque-token"), None);
        assert_eq!(token_tenant(&format!("{t}.extra")), None, "a JWE has five parts");
    }

    #[test]
    fn assertion_has_the_documented_header_and_claims() {
        let c = CertCredential::load(&data("app_cert.pem"), &data("app_key.pem"), AssertionAlg::Rs256, false).unwrap();
        let jwt = c
            .assertion("client-1", "https://login.example/t/oauth2/v2.0/token")
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"].as_str().unwrap().len(), 27, "base64url of 20 bytes");
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert!(claims["exp"].as_i64().unwrap() > claims["nbf"].as_i64().unwrap());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 256);
    }

    #[test]
    fn mismatched_key_and_certificate_are_refused() {
        let err = CertCredential::load(
            &data("app_cert.pem"),
            &data("other_key.pem"),
            AssertionAlg::Rs256,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        // PKCS#1 keys load too.
        CertCredential::load(
            &data("other_cert.pem"),
            &data("other_key.pem"),
            AssertionAlg::Ps256,
            true,
        )
        .unwrap();
    }
}
