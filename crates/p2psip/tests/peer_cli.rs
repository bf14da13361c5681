//! Real processes: `p2psip enroll-server`, three `p2psip enroll`, three (secure)
//! `p2psip peer` on mutual TLS over loopback. The ring converges, `p2psip lookup` finds the true owner,
//! SIGTERM makes one peer leave gracefully (exit 0) and the other two heal; a revoked peer
//! is refused.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use support::{
    PeerProc, create_token, ea_command, enroll, id_of, ok, owner_of, run, spawn, start_ea,
};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Timeouts on top of [`support::FAST_TIMERS`].
const FAST: &[&str] = &[
    "--rpc-timeout-ms",
    "300",
    "--lookup-timeout-ms",
    "1000",
    "--log",
    "net=warn,p2psip=info",
];

fn start_peer(dir: &Path, extra: &[&str]) -> PeerProc {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend_from_slice(support::FAST_TIMERS);
    args.extend_from_slice(FAST);
    let peer = support::start_peer(dir, &args, 2);
    assert!(peer.proc.first_lines[1].starts_with("control http://"));
    peer
}

fn status(p: &PeerProc) -> Option<Value> {
    support::status(&p.dir)
}

fn wait_converged(peers: &[&PeerProc]) -> Duration {
    support::wait_converged(peers, Duration::from_secs(20))
}

fn check_lookups(peers: &[&PeerProc], bits: u32) {
    let ids: Vec<u128> = peers.iter().map(|p| p.id).collect();
    let keys: Vec<u128> = ids
        .iter()
        .flat_map(|&i| [i, (i + 1) % (1 << bits)])
        .chain([0, (1 << bits) - 1])
        .collect();
    for p in peers {
        for &k in &keys {
            let out = ok(run(&[
                "lookup",
                "--dir",
                p.dir.to_str().unwrap(),
                "--key",
                &k.to_string(),
            ]));
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                id_of(&v["owner"]),
                Some(owner_of(&ids, k)),
                "key {k}: {out}"
            );
        }
    }
}

#[test]
fn three_peer_processes_converge_heal_and_refuse_the_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ea");
    let data_s = data.to_str().unwrap();
    let bits = 16;
    let (_ea, url) = start_ea(&mut ea_command(&data, 16));
    let token = create_token(&data, &["--uses", "4"]);
    let token = token.as_str();
    let dirs: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("p{i}"))).collect();
    for d in &dirs {
        enroll(&url, token, d, &[]);
    }

    let t0 = Instant::now();
    let a = start_peer(&dirs[0], &["--create"]);
    let boot = a.bootstrap();
    let b = start_peer(&dirs[1], &["--bootstrap", &boot]);
    let mut c = start_peer(&dirs[2], &["--bootstrap", &boot]);
    let took = wait_converged(&[&a, &b, &c]);
    eprintln!(
        "3 peer processes converged {took:?} after the last start ({:?} in all)",
        t0.elapsed()
    );
    check_lookups(&[&a, &b, &c], bits);

    // SIGTERM: graceful leave, exit 0, and the other two heal.
    let t1 = Instant::now();
    let exit = c.terminate();
    assert!(exit.success(), "{exit:?}");
    eprintln!("SIGTERM → exit in {:?}", t1.elapsed());
    assert!(!c.dir.join("control.addr").exists());
    let took = wait_converged(&[&a, &b]);
    eprintln!("healed in {took:?}");
    check_lookups(&[&a, &b], bits);

    // Revoke the fourth node, then restart the third (it loads the fresh CRL at start; the
    // others would see it at their next refresh) and let the revoked node try to join
    // through it: refused, logged, and the ring is unaffected.
    let revoked_id: u128 = {
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dirs[3].join("node.json")).unwrap())
                .unwrap();
        cfg["node_id"].as_str().unwrap().parse().unwrap()
    };
    ok(run(&[
        "enroll-server",
        "revoke",
        "--data",
        data_s,
        "--node",
        &revoked_id.to_string(),
    ]));
    c = start_peer(&dirs[2], &["--bootstrap", &boot]);
    wait_converged(&[&a, &b, &c]);
    let c_boot = c.bootstrap();
    let mut d = spawn(
        &[
            "peer",
            "--dir",
            dirs[3].to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &c_boot,
            "--log",
            "warn",
        ],
        2,
    );
    std::thread::sleep(Duration::from_millis(800));
    let st = status(&c).unwrap();
    let reasons = st["stats"]["recent_refusals"].to_string();
    assert!(reasons.contains("revoked"), "{reasons}");
    let d_status = ok(run(&[
        "status",
        "--control",
        d.first_lines[1].trim_start_matches("control http://"),
    ]));
    let d_status: Value = serde_json::from_str(&d_status).unwrap();
    assert!(
        d_status["successors"].as_array().unwrap().is_empty(),
        "{d_status}"
    );
    let _ = d.child.kill();
    // The ring is unaffected.
    wait_converged(&[&a, &b, &c]);
    check_lookups(&[&a, &b, &c], bits);
    eprintln!("total {:?}", t0.elapsed());
}
