//! TLS client settings shared by the syslog (RFC 5425) and Splunk HEC sinks: rustls with
//! the ring provider, the system trust store or a CA bundle, an optional client certificate,
//! and an explicit, loudly logged switch to skip server verification.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

/// `[sinks.NAME.tls]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM bundle of the CAs that may sign the server certificate. Default: the system
    /// trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against. Default: the host of the address.
    /// The syslog sink also sends it as SNI; the HEC sink sends the endpoint's host as SNI
    /// (none for an IP address) and verifies the certificate against this name.
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for tests: it removes the protection TLS gives.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} `{path}`: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cert_file and key_file must be set together")]
    HalfClientCert,
    #[error("no usable CA certificate: {0}")]
    NoRoots(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
    #[error("certificate verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

impl TlsOptions {
    /// Checks the files can be read and parsed (used by `validate`).
    pub fn check(&self) -> Result<(), TlsError> {
        self.client_config().map(|_| ())
    }

    /// The name to verify: `server_name`, else `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
    }

    /// A rustls client configuration (no ALPN).
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
        let builder = if self.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Verifier {
                check_as: None,
                provider: provider(),
            }))
        } else if self.server_name.is_some() {
            // Clients that connect by URL (reqwest) check the certificate against the URL's
            // host: this verifier checks it against `server_name` instead, whatever the host.
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Verifier {
                check_as: Some((inner, self.server_name("")?)),
                provider: provider(),
            }))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => {
                let chain = read_certs(c, "cert_file")?;
                let key = PrivateKeyDer::from_pem_file(k).map_err(|e| TlsError::File {
                    what: "key_file",
                    path: k.clone(),
                    message: e.to_string(),
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::HalfClientCert),
        };
        Ok(config)
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for c in read_certs(path, "ca_file")? {
                    roots.add(c).map_err(|e| TlsError::File {
                        what: "ca_file",
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(TlsError::NoRoots(format!(
                        "the system trust store is empty{}; set tls.ca_file",
                        if errors.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", errors.join("; "))
                        }
                    )));
                }
            }
        }
        Ok(roots)
    }
}

/// A custom server certificate check: the usual WebPKI verification (chain, validity,
/// revocation settings) against a configured name instead of the one the connection was
/// opened with, or, when `insecure_skip_verify` is set, none at all. Handshake signatures
/// are always checked.
#[derive(Debug)]
struct Verifier {
    /// `None`: any certificate is accepted.
    check_as: Option<(Arc<WebPkiServerVerifier>, ServerName<'static>)>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check_as {
            Some((inner, name)) => inner.verify_server_cert(end_entity, intermediates, name, ocsp, now),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_half_client_cert_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let o = TlsOptions {
            ca_file: Some(missing.clone()),
            ..Default::default()
        };
        let e = o.check().unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let o = TlsOptions {
            ca_file: Some(empty),
            ..Default::default()
        };
        assert!(o.check().unwrap_err().to_string().contains("no PEM certificate"));
        let o = TlsOptions {
            insecure_skip_verify: true,
            cert_file: Some(missing),
            ..Default::default()
        };
        assert!(matches!(o.check(), Err(TlsError::HalfClientCert)));
        let o = TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        };
        assert!(o.check().is_ok());
        assert!(o.server_name("127.0.0.1").is_ok());
        assert!(o.server_name("[::1]").is_ok());
        assert!(o.server_name("bad name!").is_err());
    }
}
