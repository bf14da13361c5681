//! Enrollment throughput on loopback: an in-process E&A server (real HTTP, SQLite WAL with
//! synchronous=FULL, CSR verification and certificate signing) driven by C concurrent
//! clients. CSRs are made before the clock starts, so the number is the server's.
//!
//! `cargo run --release -p enroll --example bench_enroll -- [N] [CONCURRENCY]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll::api::Location;
use enroll::ratelimit::RateLimitConfig;
use enroll::{
    Capabilities, DataDir, EnrollClient, EnrollRequest, EnrollServer, Role, ServerConfig,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    service::crypto::install_provider();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let conc: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);

    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        rate_limit: RateLimitConfig {
            per_sec: 0.0,
            ..RateLimitConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = EnrollServer::open(dir.path(), cfg).unwrap();
    let trust = service::tls::Trust::ca_pem(server.ca_pem()).unwrap();
    let token = DataDir::open(dir.path())
        .unwrap()
        .create_token(Role::Peer, None, n as u32, Duration::from_secs(3600))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));

    let csrs: Vec<String> = (0..n)
        .map(|_| enroll::cert::new_key_and_csr().unwrap().1)
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(csrs));
    let client = EnrollClient::new(&url, &trust).unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (queue, client, token) = (queue.clone(), client.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u32;
            loop {
                let Some(csr) = queue.lock().unwrap().pop() else {
                    break;
                };
                let city =
                    enroll::cities::CITIES[(w * 7 + i as usize) % enroll::cities::CITIES.len()];
                i += 1;
                let req = EnrollRequest {
                    token: token.clone(),
                    csr,
                    role: None,
                    capabilities: Capabilities::default(),
                    location: Some(Location {
                        lat: city.lat,
                        lon: city.lon,
                    }),
                    listen: None,
                };
                let t = Instant::now();
                client.enroll(&req).await.expect("enroll");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let issued = DataDir::open(dir.path()).unwrap().cert_count().unwrap();
    println!(
        "enrolled {} peers with {conc} concurrent clients in {:.2} s: {:.0} enrollments/s; \
         latency p50 {:.1} ms, p99 {:.1} ms; certificates on disk {issued}",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}
