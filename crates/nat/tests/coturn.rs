#![allow(clippy::unwrap_used)]
//! Interop with coturn (Debian `coturn`), both directions:
//! - our Binding and TURN client against `turnserver` (static user and TURN REST secret);
//! - coturn's `turnutils_stunclient` / `turnutils_uclient` against our server.
//!
//! Skipped LOUDLY (a `SKIPPED:` line) when the binaries are missing; a failure under CI.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nat::{
    BindingOptions, CredentialStore, Credentials, Limits, ServerConfig, StunServer, TurnClient,
    TurnOptions,
};
use tokio::net::UdpSocket;

mod support;

use support::{assert_rejected, echo_peer, relay_echo};

fn have(bin: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        testkit::tool_missing(bin, "coturn");
    }
    found
}

/// coturn on loopback; killed by PID on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn coturn(auth: &[&str]) -> Coturn {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::ports::free_port();
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--realm=p2psip.test",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--allow-loopback-peers",
            "--log-file=stdout",
            "--simple-log",
            &format!("--pidfile={}", dir.path().join("turn.pid").display()),
        ])
        .args(auth)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The guard kills it by PID on every path from here, panics included.
    let guard = Coturn {
        child,
        addr,
        _dir: dir,
    };
    // Ready when it answers a Binding.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let quick = BindingOptions::quick(Duration::from_millis(100));
    for _ in 0..50 {
        if nat::binding_request(&sock, addr, &quick).await.is_ok() {
            return guard;
        }
    }
    panic!("coturn did not come up on {addr}");
}

#[tokio::test]
async fn our_client_against_coturn_static_user() {
    if !have("turnserver") {
        return;
    }
    let c = coturn(&["--lt-cred-mech", "--user=test:test"]).await;
    let (local, mapped) =
        nat::reflexive_address(c.addr, &BindingOptions::quick(Duration::from_secs(2)))
            .await
            .unwrap();
    assert_eq!(local, mapped);
    let peer = echo_peer().await;
    let opts = TurnOptions::default();
    let mut turn = TurnClient::allocate(c.addr, Credentials::new("test", "test"), opts.clone())
        .await
        .unwrap();
    assert_eq!(turn.relayed_addr().ip(), c.addr.ip());
    turn.create_permission(peer).await.unwrap();
    relay_echo(&mut turn, peer, 10).await;
    turn.bind_channel(peer).await.unwrap();
    relay_echo(&mut turn, peer, 10).await;
    turn.close().await;
    let err = TurnClient::allocate(c.addr, Credentials::new("test", "wrong"), opts)
        .await
        .unwrap_err();
    assert_rejected(&err, 401);
}

#[tokio::test]
async fn our_rest_credentials_against_coturn_auth_secret() {
    if !have("turnserver") {
        return;
    }
    let c = coturn(&[
        "--use-auth-secret",
        "--static-auth-secret=shared-with-enrollment",
    ])
    .await;
    let now = service::time::unix_secs();
    let creds = Credentials::rest(b"shared-with-enrollment", "1593", now, 600);
    let peer = echo_peer().await;
    let mut turn = TurnClient::allocate(c.addr, creds, TurnOptions::default())
        .await
        .unwrap();
    turn.bind_channel(peer).await.unwrap();
    relay_echo(&mut turn, peer, 5).await;
    turn.close().await;
}

async fn our_server() -> nat::ServerHandle {
    let mut creds = CredentialStore::new();
    creds.add_user(Credentials::new("test", "test"));
    let mut cfg = ServerConfig::loopback(creds);
    cfg.limits = Limits {
        max_allocations_per_user: 64,
        ..Limits::default()
    };
    StunServer::bind(cfg).await.unwrap().spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_stunclient_against_our_server() {
    if !have("turnutils_stunclient") {
        return;
    }
    let srv = our_server().await;
    let out = tokio::process::Command::new("timeout")
        .args(["10", "turnutils_stunclient", "-p"])
        .arg(srv.local_addr.port().to_string())
        .arg("127.0.0.1")
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_uclient_against_our_server() {
    if !have("turnutils_uclient") {
        return;
    }
    let srv = our_server().await;
    let port = srv.local_addr.port().to_string();
    // -y: the clients relay to each other through our server. With channels (default) and
    // with Send/Data indications (-c).
    for extra in [&[][..], &["-c"][..]] {
        let out = tokio::process::Command::new("timeout")
            .args([
                "30",
                "turnutils_uclient",
                "-p",
                &port,
                "-u",
                "test",
                "-w",
                "test",
                "-y",
            ])
            .args(["-n", "20", "-m", "2", "-l", "200"])
            .args(extra)
            .arg("127.0.0.1")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        println!("uclient {extra:?}: {tail:?}");
        // uclient exits 0 even on failure: the loss line is the verdict.
        assert!(text.contains("Total lost packets 0 "), "{text}");
        let totals = text
            .lines()
            .rev()
            .find(|l| l.contains("start_mclient: tot_send_msgs="))
            .unwrap();
        let nums: Vec<u64> = totals
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|t| t.parse().ok())
            .collect();
        let (sent, recv) = (nums[nums.len() - 2], nums[nums.len() - 1]);
        assert!(sent > 0 && sent == recv, "{totals}");
    }
    let stats = srv.shutdown().await.unwrap();
    assert!(stats.allocations_created >= 8, "{stats:?}");
}
