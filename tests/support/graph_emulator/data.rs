//! Data requests of the Graph emulator: token check, `$filter` (ge/gt/le/lt joined by `and`),
//! ordering, `$top`/`$skip`, `$expand=alerts`, opaque `$skiptoken` nextLinks (checked to come
//! back verbatim), the `alerts_v2` fallback, and the request log.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::throttle::{answer, next_fault, skip_error, FaultAnswer};
use super::{graph_error, Cursor, EmuState, Logged};

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

pub(super) fn data(
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
    let mut hide = Vec::new();
    let mut warning = None;
    match next_fault(&mut st, &tenant).map(answer) {
        Some(FaultAnswer::Respond(r)) => return respond(&mut st, log, r),
        Some(FaultAnswer::Partial { hide: h, warning: w }) => {
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
            return respond(&mut st, log, skip_error());
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
