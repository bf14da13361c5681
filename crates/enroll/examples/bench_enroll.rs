//! Enrollment throughput on loopback: an in-process E&A server (SQLite WAL with
//! synchronous=FULL, CSR verification and certificate signing) driven by C concurrent
//! clients, over HTTPS (as deployed) and over plain HTTP (`--insecure-http`) side by side in
//! one run. Each enrollment opens its own connection, as a peer enrolling once does, so the
//! HTTPS row pays one TLS handshake per enrollment (client and server share the machine's
//! cores). CSRs are made before the clock starts.
//!
//! `cargo run --release -p enroll --example bench_enroll -- [N] [CONCURRENCY]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll::api::Location;
use enroll::ratelimit::RateLimitConfig;
use enroll::{
    Capabilities, DataDir, EnrollClient, EnrollRequest, EnrollServer, Role, ServerConfig,
};
use service::http::Transport;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one run measured.
struct Outcome {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[tokio::main]
async fn main() {
    service::crypto::install_provider();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let conc: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);
    let plain = run(false, n, conc).await;
    let tls = run(true, n, conc).await;
    println!(
        "HTTPS / HTTP: {:.2} x the enrollments/s, {:.2} x the p50 latency, {:.2} x the p99",
        tls.per_sec / plain.per_sec,
        tls.p50_ms / plain.p50_ms,
        tls.p99_ms / plain.p99_ms,
    );
}

/// `n` enrollments by `conc` concurrent clients over HTTPS (`https`) or plain HTTP.
async fn run(https: bool, n: usize, conc: usize) -> Outcome {
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
    let addr = listener.local_addr().unwrap();
    let (transport, url) = if https {
        let names = enroll::service_names(addr, &[]);
        (server.https(&names).unwrap(), format!("https://{addr}"))
    } else {
        (Transport::InsecureHttp, format!("http://{addr}"))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with(listener, transport, async {
        let _ = stopped.await;
    }));

    let csrs: Vec<String> = (0..n)
        .map(|_| enroll::cert::new_key_and_csr().unwrap().1)
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(csrs));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (queue, token, url, trust) = (queue.clone(), token.clone(), url.clone(), trust.clone());
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
                // A client of its own: a connection (and, over HTTPS, a handshake) of its own.
                let client = EnrollClient::new(&url, &trust).unwrap();
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
    let _ = stop.send(());
    let _ = serving.await;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let issued = DataDir::open(dir.path()).unwrap().cert_count().unwrap();
    assert_eq!(
        issued as usize,
        lat.len(),
        "every enrollment is a certificate on disk"
    );
    let out = Outcome {
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        p50_ms: pct(0.5).as_secs_f64() * 1e3,
        p99_ms: pct(0.99).as_secs_f64() * 1e3,
    };
    println!(
        "{:<5}  enrolled {} peers with {conc} concurrent clients in {:.2} s: {:.0} enrollments/s; \
         latency p50 {:.1} ms, p99 {:.1} ms; certificates on disk {issued}",
        if https { "HTTPS" } else { "HTTP" },
        lat.len(),
        wall.as_secs_f64(),
        out.per_sec,
        out.p50_ms,
        out.p99_ms,
    );
    out
}
