//! HTTP side of the Splunk HEC sink: posting event batches (gzip), querying indexer
//! acknowledgments, the health endpoint, and what each reply code means for delivery
//! (siem-outputs.md 5.3: retry, configuration error, or data error to dead-letter).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde::Deserialize;

use crate::config::Secret;

pub const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";

/// A HEC reply: HTTP status and the JSON body's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub code: Option<i64>,
    pub text: String,
    pub ack_id: Option<u64>,
    /// Zero-based index of the envelope that failed (code 6).
    pub invalid_event: Option<usize>,
    /// `Retry-After` in seconds (a proxy or load balancer in front of HEC may send it).
    pub retry_after: Option<Duration>,
}

/// Most of a reply body read: HEC's replies are small JSON objects; a larger body (an
/// error page, a misbehaving proxy) is cut here instead of being held whole.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The body of `resp`, at most `cap` bytes of it.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - out.len();
        if chunk.len() >= room {
            out.extend_from_slice(&chunk[..room]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `Retry-After` as a number of seconds (the HTTP-date form is not used by HEC's proxies
/// and is ignored).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    text: String,
    code: Option<i64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

impl Reply {
    pub fn parse(status: u16, body: &[u8]) -> Reply {
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => Reply {
                status,
                code: b.code,
                text: b.text,
                ack_id: b.ack_id,
                invalid_event: b.invalid_event,
                retry_after: None,
            },
            Err(_) => Reply {
                status,
                text: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                ..Reply::default()
            },
        }
    }

    /// `HTTP 400, HEC code 6 (Invalid data format)`.
    pub fn describe(&self) -> String {
        match self.code {
            Some(c) => format!("HTTP {}, HEC code {c} ({})", self.status, self.text),
            None if self.text.is_empty() => format!("HTTP {}", self.status),
            None => format!("HTTP {}: {}", self.status, self.text),
        }
    }
}

/// What a reply to `/services/collector/event` means for the events of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken; delivered now, or once `ack_id` is acknowledged.
    Accepted { ack_id: Option<u64> },
    /// Busy, throttled, server error or no answer: nothing was taken; retry with backoff
    /// (at least `Retry-After` when the reply had it).
    Retry(String, Option<Duration>),
    /// Token, index or channel problem: nothing was taken and retrying will not help until
    /// the configuration changes; retried with backoff (never dropped), logged as an error.
    Config(String),
    /// The events are refused for good: dead-letter the one named, or bisect the request.
    Data {
        code: Option<i64>,
        reason: &'static str,
        detail: String,
        invalid_event: Option<usize>,
    },
}

/// Dead-letter reason of a data error code.
fn data_reason(code: i64) -> Option<&'static str> {
    Some(match code {
        5 => "hec_no_data",
        6 => "hec_invalid_data_format",
        12 => "hec_event_field_required",
        13 => "hec_event_field_blank",
        15 => "hec_indexed_fields_error",
        _ => return None,
    })
}

pub fn classify(r: &Reply) -> Outcome {
    let detail = r.describe();
    match (r.status, r.code) {
        // HEC answers every accepted request with code 0 (§5.3). A 2xx without it is not
        // HEC's (a proxy's or a login page, a wrong port): nothing says the events were
        // taken, so they are not counted as delivered.
        (200..=299, Some(0)) => Outcome::Accepted { ack_id: r.ack_id },
        (200..=299, None) => Outcome::Config(format!("not a HEC reply: {detail}")),
        (413, _) => Outcome::Data {
            code: r.code,
            reason: "hec_request_too_large",
            detail,
            invalid_event: None,
        },
        (400, Some(c)) if data_reason(c).is_some() => Outcome::Data {
            code: Some(c),
            reason: data_reason(c).unwrap_or("hec_rejected"),
            detail,
            invalid_event: r.invalid_event,
        },
        (429 | 500..=599, _) | (408, _) => Outcome::Retry(detail, r.retry_after),
        _ => Outcome::Config(detail),
    }
}

/// A random channel id (GUID form).
pub fn new_channel() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HEC request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("gzip: {0}")]
    Gzip(#[from] std::io::Error),
    #[error("unexpected acknowledgment reply: {0}")]
    AckReply(String),
    /// The acknowledgment query was refused with `Retry-After` (a busy indexer, or a load
    /// balancer in front of it).
    #[error("acknowledgment query refused: {detail}; retry after {} s", retry_after.as_secs())]
    AckWait { detail: String, retry_after: Duration },
}

#[derive(Clone)]
pub struct HecClient {
    http: reqwest::Client,
    event_url: String,
    ack_url: String,
    health_url: String,
    gzip: bool,
}

impl HecClient {
    /// `endpoint` is the base URL (`https://splunk:8088`); `tls` is used for https.
    pub fn new(
        endpoint: &str,
        token: &Secret,
        channel: &str,
        gzip: bool,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<HecClient, String> {
        let mut headers = HeaderMap::new();
        let mut auth =
            HeaderValue::from_str(&format!("Splunk {}", token.expose())).map_err(|_| "token has invalid characters")?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            CHANNEL_HEADER,
            HeaderValue::from_str(channel).map_err(|_| "invalid channel id")?,
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            // A redirect would turn the POST into a GET without its body (301-303), and its
            // answer is not HEC's: 3xx is a configuration error (the endpoint to fix).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let base = endpoint.trim_end_matches('/');
        Ok(HecClient {
            http,
            event_url: format!("{base}/services/collector/event"),
            ack_url: format!("{base}/services/collector/ack?channel={channel}"),
            health_url: format!("{base}/services/collector/health"),
            gzip,
        })
    }

    /// POSTs one batch body: the envelopes, each followed by a newline.
    pub async fn post_events(&self, envelopes: &[&[u8]]) -> Result<Reply, ClientError> {
        let mut req = self.http.post(&self.event_url).header(CONTENT_TYPE, "application/json");
        let len: usize = envelopes.iter().map(|e| e.len() + 1).sum();
        let payload = if self.gzip {
            let z = flate2::write::GzEncoder::new(Vec::with_capacity(len / 4 + 64), flate2::Compression::fast());
            // Gathered into a small buffer that stays in cache, compressed 64 KiB at a time.
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, z);
            for e in envelopes {
                w.write_all(e)?;
                w.write_all(b"\n")?;
            }
            req = req.header(CONTENT_ENCODING, "gzip");
            w.into_inner().map_err(|e| e.into_error())?.finish()?
        } else {
            let mut body = Vec::with_capacity(len);
            for e in envelopes {
                body.extend_from_slice(e);
                body.push(b'\n');
            }
            body
        };
        let resp = req.body(payload).send().await?;
        let status = resp.status().as_u16();
        let wait = retry_after(&resp);
        let bytes = read_capped(resp, MAX_REPLY_BYTES).await?;
        Ok(Reply {
            retry_after: wait,
            ..Reply::parse(status, &bytes)
        })
    }

    /// Which of `ids` are indexed (`true` is reported once: record it at once).
    pub async fn query_acks(&self, ids: &[u64]) -> Result<HashMap<u64, bool>, ClientError> {
        let body = serde_json::json!({ "acks": ids }).to_string();
        let resp = self
            .http
            .post(&self.ack_url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let wait = retry_after(&resp);
        // An answer for every id asked about is ~20 bytes each.
        let bytes = read_capped(resp, MAX_REPLY_BYTES + ids.len() * 32).await?;
        if status != 200 {
            let detail = Reply::parse(status, &bytes).describe();
            return Err(match wait {
                Some(retry_after) => ClientError::AckWait { detail, retry_after },
                None => ClientError::AckReply(detail),
            });
        }
        #[derive(Deserialize)]
        struct Acks {
            acks: HashMap<String, bool>,
        }
        let a: Acks = serde_json::from_slice(&bytes).map_err(|e| {
            // The start of what came is enough to tell a proxy's page from HEC's answer.
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
            ClientError::AckReply(format!("{e}: {shown}"))
        })?;
        Ok(a.acks
            .into_iter()
            .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
            .collect())
    }

    /// `GET /services/collector/health` with the token.
    pub async fn health(&self) -> Result<Reply, ClientError> {
        let resp = self.http.get(&self.health_url).send().await?;
        let status = resp.status().as_u16();
        let bytes = read_capped(resp, MAX_REPLY_BYTES).await?;
        Ok(Reply::parse(status, &bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: u16, body: &str) -> Outcome {
        classify(&Reply::parse(status, body.as_bytes()))
    }

    #[test]
    fn codes_table() {
        assert_eq!(
            r(200, r#"{"text":"Success","code":0,"ackId":7}"#),
            Outcome::Accepted { ack_id: Some(7) }
        );
        assert_eq!(
            r(200, r#"{"text":"Success","code":0}"#),
            Outcome::Accepted { ack_id: None }
        );
        for (s, b) in [
            (503, r#"{"text":"Server is busy","code":9}"#),
            (500, r#"{"text":"Internal server error","code":8}"#),
            (429, r#"{"text":"ACK channel at capacity","code":27}"#),
            (502, "<html>bad gateway</html>"),
        ] {
            assert!(matches!(r(s, b), Outcome::Retry(_, None)), "{s} {b}");
        }
        for (s, b) in [
            (403, r#"{"text":"Invalid token","code":4}"#),
            (401, r#"{"text":"Token is required","code":2}"#),
            (400, r#"{"text":"Incorrect index","code":7}"#),
            (400, r#"{"text":"Data channel is missing","code":10}"#),
            (404, "not found"),
            (400, "no json"),
        ] {
            assert!(matches!(r(s, b), Outcome::Config(_)), "{s} {b}");
        }
        match r(
            400,
            r#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#,
        ) {
            Outcome::Data {
                code,
                reason,
                detail,
                invalid_event,
            } => {
                assert_eq!(
                    (code, reason, invalid_event),
                    (Some(6), "hec_invalid_data_format", Some(3))
                );
                assert_eq!(detail, "HTTP 400, HEC code 6 (Invalid data format)");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            r(400, r#"{"text":"Event field cannot be blank","code":13}"#),
            Outcome::Data {
                reason: "hec_event_field_blank",
                ..
            }
        ));
        assert!(matches!(r(413, ""), Outcome::Data { .. }));
        // A 2xx that is not HEC's (a proxy's page, a wrong port, an empty object) does not
        // count as delivered, nor does a redirect.
        for (s, b) in [(200, "<html>Please log in</html>"), (200, "{}"), (204, ""), (302, "")] {
            assert!(matches!(r(s, b), Outcome::Config(_)), "{s} {b}");
        }
    }

    /// A reply body larger than a HEC reply is cut at the cap, not held whole.
    #[tokio::test]
    async fn reply_bodies_are_read_up_to_the_cap() {
        let big = vec![b'x'; 1 << 20];
        let resp = reqwest::Response::from(axum::http::Response::new(big));
        assert_eq!(read_capped(resp, MAX_REPLY_BYTES).await.unwrap().len(), MAX_REPLY_BYTES);
        let small = reqwest::Response::from(axum::http::Response::new(b"{\"code\":0}".to_vec()));
        assert_eq!(read_capped(small, MAX_REPLY_BYTES).await.unwrap(), b"{\"code\":0}");
    }

    #[test]
    fn channel_is_a_guid() {
        let c = new_channel();
        assert_eq!(c.len(), 36);
        let parts: Vec<_> = c.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_ne!(c, new_channel());
    }
}
