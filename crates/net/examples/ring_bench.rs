//! Loopback measurements with real TLS peers in one process:
//! `cargo run --release -p net --example ring_bench -- [PEERS] [LOOKUPS]`.
//!
//! Prints the time to converge, connection set-up time (TCP + TLS 1.3 mutual auth +
//! hello), lookup latency percentiles and hops, and the process RSS growth per peer.
#![allow(clippy::unwrap_used)] // a benchmark: a failure aborts the run

use enroll::cert::{Binding, Ca, Csr, der_to_pem, new_key_and_csr};
use enroll::{Layer, Role};
use net::{CrlStore, Identity, Limits, NetConfig, PeerRuntime, RevocationPolicy, Trust};
use overlay::{ChordConfig, ChordNode, IdSpace, NodeId};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    service::crypto::install_provider();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let lookups: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let bits = 32;
    let t = enroll::server::unix_now();
    let ca = Ca::generate("bench E&A", t, 1).unwrap();
    let crls = CrlStore::new();
    crls.set(ca.crl(&[], t - 60, t + 3600, 1).unwrap());
    let trust = Trust {
        ca: ca.cert_der().clone(),
        crls,
        policy: RevocationPolicy::RequireCrl,
    };
    let mut cc = ChordConfig::new(IdSpace::new(bits).unwrap());
    cc.stabilize_every = Duration::from_millis(200);
    cc.fix_fingers_every = Duration::from_millis(100);
    cc.check_predecessor_every = Duration::from_millis(500);
    cc.ring_check_every = Duration::from_secs(5);
    let cc = Arc::new(cc);
    // Identities first, so the RSS growth counts peers, not key generation.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut ids = Vec::new();
    let mut idents = Vec::new();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = u128::from(x) % (1u128 << bits);
        let (key, csr) = new_key_and_csr().unwrap();
        let der = ca
            .issue(
                &Csr::from_pem(&csr).unwrap(),
                &Binding {
                    node_id: NodeId(id),
                    layer: Layer::ONE,
                    role: Role::Peer,
                },
                [(i % 200) as u8 + 1; 16],
                t - 60,
                t + 3600,
            )
            .unwrap();
        let chain = der_to_pem(&der, "CERTIFICATE") + ca.cert_pem();
        ids.push(id);
        idents.push(Identity::from_pem(&chain, &key).unwrap());
    }
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut peers: Vec<PeerRuntime<ChordNode>> = Vec::new();
    for (i, ident) in idents.into_iter().enumerate() {
        let cfg = NetConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            identity: ident,
            trust: trust.clone(),
            crl_refresh: None,
            limits: Limits::default(),
        };
        let cc = cc.clone();
        let p = PeerRuntime::start(cfg, move |me| ChordNode::new(cc, me, [i as u8; 32]))
            .await
            .unwrap();
        let boot = peers.first().map(|p| p.handle.contact());
        p.handle
            .call(move |nd, now| match boot {
                None => nd.create(now),
                Some(b) => nd.join(now, b),
            })
            .await
            .unwrap();
        peers.push(p);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    loop {
        let mut ok = true;
        for p in &peers {
            let st = p.handle.ring_status().await.unwrap();
            let i = sorted.iter().position(|&v| v == st.me.id.0).unwrap();
            if st.successors.first().map(|c| c.id.0) != Some(sorted[(i + 1) % n])
                || st.predecessor.map(|c| c.id.0) != Some(sorted[(i + n - 1) % n])
            {
                ok = false;
                break;
            }
        }
        if ok {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no convergence");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converge = t0.elapsed();
    // Let fix_fingers fill the finger tables before measuring hops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss1 = rss_kib();
    let mut lat = Vec::new();
    let mut hops = Vec::new();
    let mut wrong = 0;
    let t1 = Instant::now();
    for k in 0..lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = u128::from(x) % (1u128 << bits);
        let p = &peers[k % n];
        let s = Instant::now();
        let f = p.handle.lookup(NodeId(key)).await.unwrap();
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        hops.push((f.path.len() - 1) as f64);
        let owner = sorted
            .iter()
            .copied()
            .find(|&i| i >= key)
            .unwrap_or(sorted[0]);
        if f.owner.id.0 != owner {
            wrong += 1;
        }
    }
    let wall = t1.elapsed();
    let (mut ok, mut sum, mut max) = (0, 0, 0);
    for p in &peers {
        let s = p.handle.stats();
        ok += s.dials_ok;
        sum += s.dial_setup_us_sum;
        max = max.max(s.dial_setup_us_max);
    }
    println!("peers {n}, id bits {bits}");
    println!(
        "converged in {:.2} s (sequential joins through one bootstrap)",
        converge.as_secs_f64()
    );
    println!(
        "connection set-up (TCP + TLS 1.3 mutual + hello): {ok} dials, mean {:.2} ms, max {:.2} ms",
        sum as f64 / ok.max(1) as f64 / 1e3,
        max as f64 / 1e3
    );
    println!(
        "{lookups} sequential lookups in {:.2} s: latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; hops mean {:.2}; wrong owner {wrong}",
        wall.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        hops.iter().sum::<f64>() / hops.len() as f64,
    );
    println!(
        "RSS {rss0} KiB before peers, {rss1} KiB with {n} peers: {:.0} KiB per peer",
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );
    for p in &peers {
        p.handle.shutdown().await.unwrap();
    }
}
