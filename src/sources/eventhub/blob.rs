//! A small Azure Blob Storage REST client for the blob checkpoint store: Put Blob, Set Blob
//! Metadata, Get Blob Properties, List Blobs (`include=metadata`) and Create Container, with
//! `If-Match` / `If-None-Match` conditions, authorized by Shared Key (HMAC-SHA256 over the
//! canonicalized request, as the Storage REST reference describes), a SAS token, or an Entra ID
//! bearer token (scope `https://storage.azure.com/.default`).
//!
//! Why not `azure_storage_blob`: every published version depends on a stable azure_core line
//! (0.31, 0.32, 1.0, 1.1) that a `1.2.0-beta.1` pre-release does not satisfy, so it would pull
//! a second azure_core next to the one `azure_messaging_eventhubs` 0.16 needs (and 1.x needs
//! rustc 1.88, above this crate's `rust-version`). The five calls below are all the store uses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use base64::Engine as _;
use reqwest::{Method, StatusCode};

/// The Storage REST API version sent as `x-ms-version`.
const API_VERSION: &str = "2021-08-06";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("storage connection string: {0}")]
    ConnectionString(&'static str),
    #[error("blob storage request {operation}: {source}")]
    Http {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("blob storage {operation}: HTTP {status} {code}")]
    Status {
        operation: &'static str,
        status: u16,
        code: String,
    },
    #[error("blob storage token: {0}")]
    Token(String),
    #[error("blob storage response: {0}")]
    Response(String),
}

impl BlobError {
    /// HTTP status of a refused request, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            BlobError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How requests are authorized.
#[derive(Clone)]
pub enum BlobAuth {
    SharedKey {
        account: String,
        key: Vec<u8>,
    },
    /// A SAS query string (without the leading `?`).
    Sas(String),
    Bearer(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobAuth::SharedKey { .. } => "SharedKey(***)",
            BlobAuth::Sas(_) => "Sas(***)",
            BlobAuth::Bearer(_) => "Bearer",
        })
    }
}

/// A storage connection string, parsed: the blob endpoint and its credential.
pub fn parse_connection_string(cs: &str) -> Result<(String, BlobAuth), BlobError> {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or(BlobError::ConnectionString("expected Key=Value pairs"))?;
        kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    if kv
        .get("usedevelopmentstorage")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        kv.entry("accountname".into()).or_insert("devstoreaccount1".into());
        kv.entry("accountkey".into()).or_insert(AZURITE_KEY.into());
        kv.entry("blobendpoint".into())
            .or_insert("http://127.0.0.1:10000/devstoreaccount1".into());
    }
    let account = kv.get("accountname").cloned();
    let endpoint = match (kv.get("blobendpoint"), &account) {
        (Some(e), _) => e.trim_end_matches('/').to_string(),
        (None, Some(a)) => format!(
            "{}://{a}.blob.{}",
            kv.get("defaultendpointsprotocol").map_or("https", String::as_str),
            kv.get("endpointsuffix").map_or("core.windows.net", String::as_str)
        ),
        (None, None) => return Err(BlobError::ConnectionString("needs BlobEndpoint or AccountName")),
    };
    let auth = match (kv.get("sharedaccesssignature"), kv.get("accountkey"), account) {
        (Some(sas), _, _) => BlobAuth::Sas(sas.trim_start_matches('?').to_string()),
        (None, Some(key), Some(account)) => BlobAuth::SharedKey {
            account,
            key: base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| BlobError::ConnectionString("AccountKey is not base64"))?,
        },
        _ => {
            return Err(BlobError::ConnectionString(
                "needs AccountName and AccountKey, or SharedAccessSignature",
            ))
        }
    };
    Ok((endpoint, auth))
}

/// The well-known key of the Azurite development account `devstoreaccount1`.
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// What Get Blob Properties, Put Blob or List Blobs tell about one blob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobItem {
    pub name: String,
    /// Quoted, as in the `ETag` header.
    pub etag: String,
    /// `Last-Modified` as sent (RFC 1123).
    pub last_modified: String,
    /// Metadata with lower-cased names.
    pub metadata: BTreeMap<String, String>,
}

/// A blob container at `endpoint/container`.
#[derive(Clone, Debug)]
pub struct BlobClient {
    http: reqwest::Client,
    endpoint: String,
    container: String,
    auth: BlobAuth,
}

/// A precondition on a write.
#[derive(Clone, Copy, Debug)]
pub enum Condition<'a> {
    None,
    /// `If-Match: <etag>`.
    Match(&'a str),
    /// `If-None-Match: *` (create only).
    Absent,
}

fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

/// Percent-encode a blob name for the URL path (segments kept).
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b'$' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl BlobClient {
    pub fn new(endpoint: &str, container: &str, auth: BlobAuth) -> Result<BlobClient, BlobError> {
        // `pool_max_idle_per_host(0)`: the client is used from more than one runtime.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| BlobError::Http {
                operation: "client",
                source,
            })?;
        Ok(BlobClient {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            container: container.to_string(),
            auth,
        })
    }

    fn url(&self, blob: Option<&str>, query: &[(&str, &str)]) -> Result<reqwest::Url, BlobError> {
        let mut s = format!("{}/{}", self.endpoint, self.container);
        if let Some(b) = blob {
            s.push('/');
            s.push_str(&encode_path(b));
        }
        let mut url = reqwest::Url::parse(&s).map_err(|e| BlobError::Response(format!("bad blob URL: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        if let BlobAuth::Sas(sas) = &self.auth {
            let joined = match url.query() {
                Some(q) if !q.is_empty() => format!("{q}&{sas}"),
                _ => sas.clone(),
            };
            url.set_query(Some(&joined));
        }
        Ok(url)
    }

    /// Send one request with the standard headers and its authorization.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: reqwest::Url,
        mut headers: BTreeMap<String, String>,
    ) -> Result<reqwest::Response, BlobError> {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert("x-ms-date".into(), date);
        headers.insert("x-ms-version".into(), API_VERSION.into());
        let put = method == Method::PUT;
        let mut req = self.http.request(method.clone(), url.clone());
        match &self.auth {
            BlobAuth::SharedKey { account, key } => {
                let sts = string_to_sign(&method, &url, &headers, account);
                let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
                let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, sts.as_bytes()));
                req = req.header("Authorization", format!("SharedKey {account}:{sig}"));
            }
            BlobAuth::Sas(_) => {}
            BlobAuth::Bearer(cred) => {
                let token = cred
                    .get_token(&[STORAGE_SCOPE], None)
                    .await
                    .map_err(|e| BlobError::Token(e.to_string()))?;
                req = req.header("Authorization", format!("Bearer {}", token.token.secret()));
            }
        }
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if put {
            req = req.header("Content-Length", "0").body(Vec::<u8>::new());
        }
        let resp = req.send().await.map_err(|source| BlobError::Http {
            operation,
            // A SAS is in the URL's query: never in an error message.
            source: source.without_url(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Err(BlobError::Status {
            operation,
            status,
            code,
        })
    }

    /// Create the container; one that exists already is fine.
    pub async fn create_container(&self) -> Result<(), BlobError> {
        let url = self.url(None, &[("restype", "container")])?;
        match self.send("create container", Method::PUT, url, BTreeMap::new()).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(StatusCode::CONFLICT.as_u16()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Put an empty block blob with `metadata`; returns its new ETag and Last-Modified.
    pub async fn put_blob(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
        condition: Condition<'_>,
    ) -> Result<BlobItem, BlobError> {
        let mut headers = meta_headers(metadata, condition);
        headers.insert("x-ms-blob-type".into(), "BlockBlob".into());
        let resp = self
            .send("put blob", Method::PUT, self.url(Some(name), &[])?, headers)
            .await?;
        Ok(item_of(name, &resp, metadata.clone()))
    }

    /// Replace the metadata of an existing blob.
    pub async fn set_metadata(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
        condition: Condition<'_>,
    ) -> Result<BlobItem, BlobError> {
        let url = self.url(Some(name), &[("comp", "metadata")])?;
        let resp = self
            .send("set blob metadata", Method::PUT, url, meta_headers(metadata, condition))
            .await?;
        Ok(item_of(name, &resp, metadata.clone()))
    }

    /// Properties and metadata of one blob; `None` when it does not exist.
    pub async fn properties(&self, name: &str) -> Result<Option<BlobItem>, BlobError> {
        let url = self.url(Some(name), &[])?;
        match self
            .send("get blob properties", Method::HEAD, url, BTreeMap::new())
            .await
        {
            Ok(resp) => {
                let metadata = resp
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        let key = k.as_str().strip_prefix("x-ms-meta-")?;
                        Some((key.to_ascii_lowercase(), v.to_str().ok()?.to_string()))
                    })
                    .collect();
                Ok(Some(item_of(name, &resp, metadata)))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every blob whose name starts with `prefix`, with its metadata.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobItem>, BlobError> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut q = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
                ("include", "metadata"),
            ];
            if !marker.is_empty() {
                q.push(("marker", marker.as_str()));
            }
            let url = self.url(None, &q)?;
            let resp = self.send("list blobs", Method::GET, url, BTreeMap::new()).await?;
            let text = resp.text().await.map_err(|source| BlobError::Http {
                operation: "list blobs",
                source: source.without_url(),
            })?;
            let (items, next) = parse_list(&text)?;
            out.extend(items);
            match next {
                Some(n) if !n.is_empty() => marker = n,
                _ => return Ok(out),
            }
        }
    }
}

fn meta_headers(metadata: &BTreeMap<String, String>, condition: Condition<'_>) -> BTreeMap<String, String> {
    let mut h: BTreeMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (format!("x-ms-meta-{k}"), v.clone()))
        .collect();
    match condition {
        Condition::None => {}
        Condition::Match(etag) => {
            h.insert("If-Match".into(), quoted(etag));
        }
        Condition::Absent => {
            h.insert("If-None-Match".into(), "*".into());
        }
    }
    h
}

fn item_of(name: &str, resp: &reqwest::Response, metadata: BTreeMap<String, String>) -> BlobItem {
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    BlobItem {
        name: name.to_string(),
        etag: quoted(&header("etag")),
        last_modified: header("last-modified"),
        metadata,
    }
}

/// The Shared Key string-to-sign (Storage REST, version 2015-02-21 and later).
fn string_to_sign(method: &Method, url: &reqwest::Url, headers: &BTreeMap<String, String>, account: &str) -> String {
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    // Content-Length is empty when zero, as every request here has no body.
    let mut s = format!(
        "{}\n\n\n\n\n\n\n\n{}\n{}\n\n\n",
        method.as_str(),
        h("If-Match"),
        h("If-None-Match")
    );
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    ms.sort();
    for (k, v) in ms {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push_str(&format!("/{account}{}", url.path()));
    let mut q: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        q.entry(k.to_ascii_lowercase()).or_default().push(v.into_owned());
    }
    for (k, mut v) in q {
        v.sort();
        s.push_str(&format!("\n{k}:{}", v.join(",")));
    }
    s
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The text of the first `<tag>...</tag>` in `s` (an empty element gives "").
fn element<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    if let Some(i) = s.find(&open) {
        let rest = &s[i + open.len()..];
        let close = format!("</{tag}>");
        return rest.find(&close).map(|j| &rest[..j]);
    }
    (s.contains(&format!("<{tag}/>")) || s.contains(&format!("<{tag} />"))).then_some("")
}

/// Child elements `<k>v</k>` of a flat XML fragment.
fn children(mut s: &str) -> Result<BTreeMap<String, String>, BlobError> {
    let mut out = BTreeMap::new();
    while let Some(i) = s.find('<') {
        let rest = &s[i + 1..];
        let end = rest
            .find('>')
            .ok_or_else(|| BlobError::Response("unterminated metadata element".into()))?;
        let tag = &rest[..end];
        if let Some(name) = tag.strip_suffix('/') {
            out.insert(name.trim().to_ascii_lowercase(), String::new());
            s = &rest[end + 1..];
            continue;
        }
        let close = format!("</{tag}>");
        let body = &rest[end + 1..];
        let j = body
            .find(&close)
            .ok_or_else(|| BlobError::Response(format!("metadata element {tag} not closed")))?;
        out.insert(tag.to_ascii_lowercase(), unescape(&body[..j]));
        s = &body[j + close.len()..];
    }
    Ok(out)
}

/// Blobs and the next marker of a List Blobs response.
pub fn parse_list(xml: &str) -> Result<(Vec<BlobItem>, Option<String>), BlobError> {
    let mut items = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Blob>") {
        let after = &rest[i + 6..];
        let end = after
            .find("</Blob>")
            .ok_or_else(|| BlobError::Response("List Blobs: <Blob> not closed".into()))?;
        let blob = &after[..end];
        let name =
            element(blob, "Name").ok_or_else(|| BlobError::Response("List Blobs: blob without a name".into()))?;
        items.push(BlobItem {
            name: unescape(name),
            etag: quoted(&unescape(element(blob, "Etag").unwrap_or_default())),
            last_modified: element(blob, "Last-Modified").unwrap_or_default().to_string(),
            metadata: match element(blob, "Metadata") {
                Some(m) => children(m)?,
                None => BTreeMap::new(),
            },
        });
        rest = &after[end + 7..];
    }
    let next = element(rest, "NextMarker").map(unescape);
    Ok((items, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let (e, a) = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(e, "http://127.0.0.1:10000/devstoreaccount1");
        assert!(
            matches!(a, BlobAuth::SharedKey { ref account, ref key } if account == "devstoreaccount1" && key == b"key")
        );
        let (e, a) =
            parse_connection_string("AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net").unwrap();
        assert_eq!(e, "https://acct.blob.core.windows.net");
        assert_eq!(format!("{a:?}"), "SharedKey(***)");
        let (_, a) = parse_connection_string(
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x",
        )
        .unwrap();
        assert!(matches!(a, BlobAuth::Sas(ref s) if s == "sv=1&sig=x"));
        assert!(parse_connection_string("AccountName=acct").is_err());
    }

    #[test]
    fn list_response_with_metadata() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Prefix>ns/hub/$Default/ownership/</Prefix><Blobs><Blob><Name>ns/hub/$Default/ownership/0</Name><Properties><Last-Modified>Sun, 29 Nov 2026 04:00:00 GMT</Last-Modified><Etag>0x8DD1</Etag></Properties><Metadata><ownerid>a&amp;b</ownerid></Metadata></Blob><Blob><Name>ns/hub/$Default/ownership/1</Name><Properties><Etag>"0x8DD2"</Etag></Properties><Metadata><ownerid /></Metadata></Blob></Blobs><NextMarker /></EnumerationResults>"#;
        let (items, next) = parse_list(xml).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].etag, "\"0x8DD1\"");
        assert_eq!(items[0].metadata["ownerid"], "a&b");
        assert_eq!(items[0].last_modified, "Sun, 29 Nov 2026 04:00:00 GMT");
        assert_eq!(items[1].etag, "\"0x8DD2\"");
        assert_eq!(items[1].metadata["ownerid"], "");
        assert_eq!(next.as_deref(), Some(""));
    }

    #[tokio::test]
    async fn a_sas_never_appears_in_an_error() {
        // Nothing listens on port 9 of loopback: the request fails with a connection error.
        let c = BlobClient::new(
            "http://127.0.0.1:9/acct",
            "c",
            BlobAuth::Sas("sv=2021&sig=SECRETSIG".into()),
        )
        .unwrap();
        let e = c.list("p/").await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SECRETSIG"), "{text}");
    }

    #[test]
    fn shared_key_string_to_sign() {
        let url = reqwest::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container&comp=list&prefix=ns%2Fh%2F",
        )
        .unwrap();
        let mut h = BTreeMap::new();
        h.insert("x-ms-version".to_string(), API_VERSION.to_string());
        h.insert("x-ms-date".to_string(), "Sun, 29 Nov 2026 04:00:00 GMT".to_string());
        let s = string_to_sign(&Method::GET, &url, &h, "devstoreaccount1");
        assert_eq!(
            s,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 29 Nov 2026 04:00:00 GMT\nx-ms-version:2021-08-06\n/devstoreaccount1/devstoreaccount1/c\ncomp:list\nprefix:ns/h/\nrestype:container"
        );
    }
}
