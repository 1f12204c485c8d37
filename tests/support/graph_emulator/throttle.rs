//! Scripted faults of the Graph emulator: the per-tenant queue of [`Fault`]s, the seeded 429
//! [`Storm`], and the answers they make of a data request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{graph_error, EmuState};

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

/// What a scripted fault makes of a data request.
pub(super) enum FaultAnswer {
    /// An error answer instead of the page.
    Respond(Response),
    /// The page without these ids, as 206 with this `Warning` header.
    Partial { hide: Vec<String>, warning: String },
}

/// The tenant's next scripted fault, or else a throttle of its storm, if any.
pub(super) fn next_fault(st: &mut EmuState, tenant: &str) -> Option<Fault> {
    st.tenants.get_mut(tenant).and_then(|t| {
        t.faults.pop_front().or_else(|| {
            let storm = t.storm.as_mut()?;
            storm.throttle_next().then(|| Fault::Throttle {
                status: 429,
                retry_after: Some(storm.retry_after_secs.to_string()),
            })
        })
    })
}

pub(super) fn answer(fault: Fault) -> FaultAnswer {
    match fault {
        Fault::Throttle { status, retry_after } => {
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
            FaultAnswer::Respond(r)
        }
        Fault::ServerError(s) => FaultAnswer::Respond(graph_error(s, "InternalServerError", "Something went wrong.")),
        Fault::Unauthorized => {
            FaultAnswer::Respond(graph_error(401, "InvalidAuthenticationToken", "Token is not valid."))
        }
        Fault::BadRequest => FaultAnswer::Respond(skip_error()),
        Fault::Partial { hide, warning } => FaultAnswer::Partial { hide, warning },
    }
}

/// The 400 the service gives for `$skip` > 500.
pub(super) fn skip_error() -> Response {
    let body = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/graph/error_400_skip.json"),
    )
    .unwrap();
    (StatusCode::BAD_REQUEST, [("content-type", "application/json")], body).into_response()
}
