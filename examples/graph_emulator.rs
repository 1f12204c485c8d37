//! The Microsoft Graph + Entra ID login emulator of the tests (`tests/support/graph_emulator/`)
//! as a standalone HTTPS server, so the `demo` compose profile runs with no Microsoft account.
//! It serves one tenant with the bundled sample incidents (with alerts), risk detections and
//! risky users, and changes one incident every `EMULATOR_UPDATE_SECS` so the live poll has
//! something to forward. Not a security boundary: demo and tests only.
//!
//! ```sh
//! cargo run --example graph_emulator            # serve (settings from the environment)
//! cargo run --example graph_emulator healthcheck   # exit 0 when the port accepts connections
//! ```
//!
//! Environment: `EMULATOR_LISTEN` (default `0.0.0.0:8443`), `EMULATOR_PUBLIC_URL` (the URL
//! clients use, nextLinks are built on it; default `https://graph-emulator:8443`),
//! `EMULATOR_CERT` / `EMULATOR_KEY` (PEM server certificate chain and key; without them a CA
//! and certificate are made at start and the CA is written to `EMULATOR_CA_OUT`),
//! `EMULATOR_TENANT_ID`, `EMULATOR_CLIENT_ID`, `EMULATOR_CLIENT_SECRET` (required),
//! `EMULATOR_UPDATE_SECS` (default 60, 0 = never).

#[path = "../tests/support/graph_emulator/mod.rs"]
mod graph_emulator;

use std::time::Duration;

use graph_emulator::Emulator;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

const INCIDENTS_1: &str = include_str!("../tests/data/graph/incidents_page1.json");
const INCIDENTS_2: &str = include_str!("../tests/data/graph/incidents_page2.json");
const RISK_DETECTIONS: &str = include_str!("../tests/data/graph/risk_detections.json");
const RISKY_USERS: &str = include_str!("../tests/data/graph/risky_users.json");

fn values(page: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(page).expect("bundled sample is JSON");
    v["value"].as_array().cloned().unwrap_or_default()
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn healthcheck(listen: &str) -> std::process::ExitCode {
    let port = listen.rsplit(':').next().unwrap_or("8443");
    let addr = format!("127.0.0.1:{port}");
    let ok = addr
        .parse()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
        .is_some();
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("graph emulator: nothing listens on {addr}");
        std::process::ExitCode::FAILURE
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let listen = env("EMULATOR_LISTEN", "0.0.0.0:8443");
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(&listen);
    }
    let Ok(secret) = std::env::var("EMULATOR_CLIENT_SECRET") else {
        eprintln!("graph emulator: set EMULATOR_CLIENT_SECRET (the forwarder's client_secret)");
        return std::process::ExitCode::from(2);
    };
    let tenant = env("EMULATOR_TENANT_ID", "d13c513a-42f8-4da1-97b1-165f0971b7c4");
    let client = env("EMULATOR_CLIENT_ID", "3f2d6c1e-8a4b-4c5d-9e6f-7a8b9c0d1e2f");
    let public = env("EMULATOR_PUBLIC_URL", "https://graph-emulator:8443");
    let tcp = match tokio::net::TcpListener::bind(&listen).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("graph emulator: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let emu = match (std::env::var("EMULATOR_CERT"), std::env::var("EMULATOR_KEY")) {
        (Ok(cert), Ok(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
                .and_then(|it| it.collect())
                .unwrap_or_else(|e| panic!("EMULATOR_CERT {cert}: {e}"));
            let key = PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| panic!("EMULATOR_KEY {key}: {e}"));
            Emulator::serve(
                tcp,
                public.clone(),
                chain,
                key,
                cert.into(),
                tempfile::tempdir().unwrap(),
            )
        }
        _ => {
            drop(tcp);
            let emu = Emulator::start().await;
            eprintln!(
                "graph emulator: no EMULATOR_CERT/EMULATOR_KEY; serving on {} with a fresh CA in {}",
                emu.base,
                emu.ca_file.display()
            );
            if let Ok(out) = std::env::var("EMULATOR_CA_OUT") {
                std::fs::copy(&emu.ca_file, out).expect("EMULATOR_CA_OUT is writable");
            }
            emu
        }
    };
    let mut incidents = values(INCIDENTS_1);
    incidents.extend(values(INCIDENTS_2));
    emu.add_tenant(&tenant, &client, &secret, incidents.clone());
    emu.with_tenant(&tenant, |t| {
        t.risk_detections = values(RISK_DETECTIONS);
        t.risky_users = values(RISKY_USERS);
    });
    eprintln!(
        "graph emulator: tenant {tenant}, client {client}: {} incidents at {} (listening on {listen})",
        incidents.len(),
        emu.base
    );
    let every: u64 = env("EMULATOR_UPDATE_SECS", "60").parse().unwrap_or(60);
    let statuses = ["active", "inProgress", "resolved"];
    let mut tick = 0usize;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(every.max(1))), if every > 0 => {
                // One incident changes status "now": the forwarder's next poll sends an update.
                let mut inc = incidents[tick % incidents.len()].clone();
                let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                inc["lastUpdateDateTime"] = json!(now);
                inc["status"] = json!(statuses[(tick / incidents.len() + 1) % statuses.len()]);
                eprintln!("graph emulator: incident {} is now {}", inc["id"], inc["status"]);
                emu.upsert_incident(&tenant, inc);
                tick += 1;
            }
        }
    }
    emu.stop();
    std::process::ExitCode::SUCCESS
}
