//! The login half of the Graph emulator: the token endpoint (client secret, certificate
//! client assertion checked like Entra ID does, federated token) and an IMDS-style managed
//! identity endpoint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::{EmuState, TokenLog};

fn aad_error(status: u16, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description, "error_codes": [7000215],
        "timestamp": "2026-11-28 10:00:00Z", "trace_id": "t", "correlation_id": "c"});
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn issue(st: &mut EmuState, tenant: &str, ttl: u64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    st.seq += 1;
    // Shaped as Entra's access tokens are: a JWT whose claims name the tenant by its GUID
    // (`tid`), whatever name (GUID or domain) the token request used. Not signed: the
    // emulator checks a token by looking it up.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + ttl;
    let claims = serde_json::json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "tid": tenant,
        "exp": exp,
        "roles": ["SecurityIncident.Read.All"],
        "uti": format!("{}-{:016x}", st.seq, rand::random::<u64>()),
    });
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256","x5t":"emulator"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    st.tokens.insert(
        token.clone(),
        (tenant.to_string(), Instant::now() + Duration::from_secs(ttl)),
    );
    token
}

pub(super) fn token(state: &Mutex<EmuState>, base: &str, tenant: &str, body: &[u8]) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let mut st = state.lock().unwrap();
    // A verified domain of a tenant names it as its GUID does (the assertion's `aud` is
    // still the URL as requested).
    let in_url = tenant;
    let tenant = st
        .domains
        .get(&tenant.to_ascii_lowercase())
        .cloned()
        .unwrap_or_else(|| tenant.to_string());
    let tenant = tenant.as_str();
    let Some(t) = st.tenants.get(tenant).cloned() else {
        return aad_error(400, "invalid_request", "AADSTS90002: Tenant not found.");
    };
    let grant = if form.contains_key("client_secret") {
        "secret"
    } else if t.federated_token.is_some() && form.get("client_assertion") == t.federated_token.as_ref() {
        "federated"
    } else {
        "assertion"
    };
    let mut alg = None;
    let verdict: Result<(), (u16, &str, String)> = (|| {
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return Err((400, "unsupported_grant_type", "AADSTS70003: unsupported grant".into()));
        }
        if form.get("scope") != Some(&format!("{base}/.default")) {
            return Err((
                400,
                "invalid_scope",
                format!("AADSTS70011: invalid scope {:?}", form.get("scope")),
            ));
        }
        if form.get("client_id") != Some(&t.client_id) {
            return Err((
                400,
                "unauthorized_client",
                "AADSTS700016: Application not found in the directory.".into(),
            ));
        }
        match grant {
            "secret" => (form.get("client_secret") == t.secret.as_ref()).then_some(()).ok_or((
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.".into(),
            )),
            "federated" => Ok(()),
            _ => {
                if form.get("client_assertion_type").map(String::as_str)
                    != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                {
                    return Err((
                        400,
                        "invalid_request",
                        "AADSTS900144: client_assertion_type missing".into(),
                    ));
                }
                let jwt = form.get("client_assertion").cloned().unwrap_or_default();
                let aud = format!("{base}/{in_url}/oauth2/v2.0/token");
                let (a, res) = verify_assertion(&jwt, t.cert_der.as_deref(), &aud, &t.client_id);
                alg = a;
                res.map_err(|e| {
                    (
                        401,
                        "invalid_client",
                        format!("AADSTS700027: Client assertion failed: {e}"),
                    )
                })
            }
        }
    })();
    let accepted = verdict.is_ok();
    st.token_requests.push(TokenLog {
        at: Instant::now(),
        tenant: tenant.to_string(),
        grant: grant.to_string(),
        alg,
        accepted,
        error: verdict.as_ref().err().map(|e| e.2.clone()),
    });
    match verdict {
        Ok(()) => {
            let tok = issue(&mut st, tenant, t.token_ttl_secs);
            let body = json!({"token_type": "Bearer", "expires_in": t.token_ttl_secs,
                "ext_expires_in": t.token_ttl_secs, "access_token": tok});
            ([("content-type", "application/json")], body.to_string()).into_response()
        }
        Err((status, error, desc)) => aad_error(status, error, &desc),
    }
}

/// Check a client assertion as Entra ID does: header (alg, x5t or x5t#S256 of the registered
/// certificate), signature with the certificate's key, and aud, iss, sub, exp, nbf, jti.
fn verify_assertion(
    jwt: &str,
    cert: Option<&[u8]>,
    aud: &str,
    client_id: &str,
) -> (Option<String>, Result<(), String>) {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return (None, Err("not a JWS".into()));
    }
    let decode = |s: &str| -> Result<Value, String> {
        let b = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
        serde_json::from_slice(&b).map_err(|e| e.to_string())
    };
    let header = match decode(parts[0]) {
        Ok(h) => h,
        Err(e) => return (None, Err(format!("header: {e}"))),
    };
    let alg = header["alg"].as_str().map(str::to_string);
    let res = (|| {
        let cert = cert.ok_or("no certificate registered for the application")?;
        let claims = decode(parts[1]).map_err(|e| format!("claims: {e}"))?;
        if header["typ"] != "JWT" {
            return Err("typ is not JWT".to_string());
        }
        let sha1 = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert));
        let sha256 = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, cert));
        let verifier = match header["alg"].as_str() {
            Some("RS256") if header["x5t"] == sha1.as_str() => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") if header["x5t#S256"] == sha256.as_str() => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            Some("RS256") | Some("PS256") => return Err("thumbprint does not match the registered certificate".into()),
            other => return Err(format!("unsupported alg {other:?}")),
        };
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|e| e.to_string())?;
        let der = rustls::pki_types::CertificateDer::from(cert.to_vec());
        let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("certificate: {e:?}"))?;
        ee.verify_signature(verifier, format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .map_err(|e| format!("signature: {e:?}"))?;
        let now = chrono::Utc::now().timestamp();
        if claims["aud"] != aud {
            return Err(format!("aud {} is not {aud}", claims["aud"]));
        }
        if claims["iss"] != client_id || claims["sub"] != client_id {
            return Err("iss and sub must be the client id".into());
        }
        let exp = claims["exp"].as_i64().ok_or("no exp")?;
        if exp <= now || exp > now + 3600 {
            return Err(format!("exp {exp} out of range"));
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 300) {
            return Err("nbf in the future".into());
        }
        if claims["jti"].as_str().is_none_or(str::is_empty) {
            return Err("no jti".into());
        }
        Ok(())
    })();
    (alg, res)
}

pub(super) fn managed_identity(state: &Mutex<EmuState>, base: &str, headers: &HeaderMap, query: &str) -> Response {
    let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return aad_error(400, "invalid_request", "Required metadata header not specified");
    }
    let mut st = state.lock().unwrap();
    let found = st
        .tenants
        .iter()
        .find(|(_, t)| t.managed_identity.is_some() && t.managed_identity.as_ref() == q.get("client_id"))
        .map(|(k, t)| (k.clone(), t.token_ttl_secs));
    let ok = found.is_some() && q.get("resource").map(String::as_str) == Some(base);
    let tenant = found.as_ref().map(|f| f.0.clone()).unwrap_or_default();
    st.token_requests.push(TokenLog {
        at: Instant::now(),
        tenant: tenant.clone(),
        grant: "managed_identity".into(),
        alg: None,
        accepted: ok,
        error: None,
    });
    if !ok {
        return aad_error(400, "invalid_request", "Identity not found");
    }
    let ttl = found.unwrap().1;
    let tok = issue(&mut st, &tenant, ttl);
    let body = json!({"access_token": tok, "expires_in": ttl.to_string(), "resource": base, "token_type": "Bearer"});
    ([("content-type", "application/json")], body.to_string()).into_response()
}
