//! State of the Graph emulator: the tenants (credentials, data, scripted behaviour), the
//! request and token logs, issued tokens and the paging cursors behind `$skiptoken`s.

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime};

use serde_json::Value;

use super::{Fault, Storm};

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

pub(super) struct Cursor {
    pub(super) ids: Vec<String>,
    pub(super) offset: usize,
    pub(super) top: usize,
    pub(super) expand: bool,
    pub(super) resource: String,
    /// The query the nextLink carried, to check it comes back verbatim.
    pub(super) query: String,
}

#[derive(Default)]
pub struct EmuState {
    pub tenants: HashMap<String, TenantData>,
    pub requests: Vec<Logged>,
    pub token_requests: Vec<TokenLog>,
    /// Verified domains (lower case) and the tenant each names.
    pub domains: HashMap<String, String>,
    /// nextLinks that came back altered (must stay 0).
    pub altered_links: usize,
    pub(super) tokens: HashMap<String, (String, Instant)>,
    pub(super) cursors: HashMap<String, Cursor>,
    pub(super) seq: u64,
}

pub(super) fn upsert(list: &mut Vec<Value>, v: Value) {
    match list.iter_mut().find(|x| x["id"] == v["id"]) {
        Some(slot) => *slot = v,
        None => list.push(v),
    }
}
