//! Real SIPp processes against real front-end listeners (UDP and TCP on loopback), two
//! front-ends joined by the in-process overlay: REGISTER / refresh / unregister, 404 for an
//! unknown AoR, 400 for a malformed request, and full SIPp UAC → front-end A → overlay →
//! front-end B → SIPp UAS calls (INVITE/180/200/ACK/BYE). Skips loudly without `sipp`.
#![allow(clippy::unwrap_used)]

use overlay::NodeId;
use overlay::secure::{Ed25519Registry, Ed25519Signer};
use sip::driver::{self, DriverLimits, FrontEndTask};
use sip::{FrontEnd, FrontEndConfig, LoopbackNet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

fn have_sipp() -> bool {
    let ok = std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!(
            "SKIPPED: sipp (Debian package sip-tester) is not installed; run ./scripts/test as root to install it"
        );
    }
    ok
}

fn scenario(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sipp", name]
        .iter()
        .collect();
    p.display().to_string()
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn frontends(n: usize) -> Vec<FrontEndTask> {
    let mut keys = Ed25519Registry::default();
    let mut signers = Vec::new();
    for i in 0..n {
        let (s, _) = Ed25519Signer::generate().unwrap();
        keys.insert(NodeId(i as u128 + 1), s.public_key());
        signers.push(s);
    }
    let keys = Arc::new(keys);
    let net = LoopbackNet::new(keys.clone(), 0);
    let mut out = Vec::new();
    for (i, s) in signers.into_iter().enumerate() {
        let id = NodeId(i as u128 + 1);
        let k = keys.clone();
        let t = driver::start(
            "127.0.0.1:0".parse().unwrap(),
            DriverLimits::default(),
            move |local| {
                FrontEnd::new(
                    FrontEndConfig::new("p2psip.test", local),
                    id,
                    Box::new(s),
                    k,
                )
            },
            net.join(id),
        )
        .await
        .unwrap();
        out.push(t);
    }
    out
}

fn sipp_cmd(transport: &str, target: SocketAddr, extra: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", "sipp", "-t", transport, "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .arg(target.to_string())
        .args([
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-max_recv_loops",
            "10000",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn run_ok(mut c: Command, what: &str) {
    let out = c.output().await.unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: sipp failed ({:?}):\n{text}",
        out.status
    );
}

async fn register_flow(transport: &str) {
    let fes = frontends(1).await;
    let a = fes[0].local;
    let c = sipp_cmd(
        transport,
        a,
        &[
            "-sf",
            &scenario("register.xml"),
            "-s",
            "alice",
            "-key",
            "contact_port",
            "5999",
            "-m",
            "3",
        ],
    );
    run_ok(c, "register/refresh/unregister").await;
    // Each call of the scenario: register, refresh, unregister = 3 stores accepted.
    assert_eq!(fes[0].stats().frontend.registered, 9);
    for f in fes {
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_register_refresh_unregister_udp_and_tcp() {
    if !have_sipp() {
        return;
    }
    register_flow("u1").await;
    register_flow("t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_invite_unknown_aor_is_404_and_malformed_is_400() {
    if !have_sipp() {
        return;
    }
    let fes = frontends(1).await;
    let a = fes[0].local;
    for t in ["u1", "t1"] {
        run_ok(
            sipp_cmd(t, a, &["-sf", &scenario("invite-404.xml"), "-m", "2"]),
            "404",
        )
        .await;
        run_ok(
            sipp_cmd(t, a, &["-sf", &scenario("malformed.xml"), "-m", "2"]),
            "400",
        )
        .await;
    }
    let s = fes[0].stats().frontend;
    assert_eq!(s.not_found, 4, "{s:?}");
    assert_eq!(s.bad_requests, 4, "{s:?}");
    for f in fes {
        f.shutdown().await;
    }
}

async fn call_flow(transport: &str, calls: u32) {
    let fes = frontends(2).await;
    let (a, b) = (fes[0].local, fes[1].local);
    let uas_port = free_port();
    let mut uas = Command::new("timeout");
    uas.args([
        "60",
        "sipp",
        "-sn",
        "uas",
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-p",
    ])
    .arg(uas_port.to_string())
    .args(["-nostdin", "-m"])
    .arg(calls.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let uas = uas.spawn().unwrap();
    // Bob registers at B with the UAS as his contact.
    let port = uas_port.to_string();
    run_ok(
        sipp_cmd(
            transport,
            b,
            &[
                "-sf",
                &scenario("register-keep.xml"),
                "-s",
                "bob",
                "-key",
                "contact_port",
                &port,
                "-m",
                "1",
            ],
        ),
        "register bob",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = calls.to_string();
    run_ok(
        sipp_cmd(
            transport,
            a,
            &["-sn", "uac", "-s", "bob", "-m", &n, "-r", "20", "-l", "20"],
        ),
        "uac calls",
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(20), uas.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "uas failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (sa, sb) = (fes[0].stats().frontend, fes[1].stats().frontend);
    assert_eq!(sa.calls_out, u64::from(calls), "{sa:?}");
    assert_eq!(sb.calls_in, u64::from(calls), "{sb:?}");
    for f in fes {
        f.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_calls_sipp_uas_through_two_frontends_udp() {
    if !have_sipp() {
        return;
    }
    call_flow("u1", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_calls_sipp_uas_through_two_frontends_tcp() {
    if !have_sipp() {
        return;
    }
    call_flow("t1", 20).await;
}
