//! SIPp helpers shared by the front-end tests (in-process overlay, `crates/sip/tests`) and
//! the real-TLS-overlay test (`crates/net/tests`): find SIPp, run a scenario, and run calls
//! SIPp UAC → front-end A → overlay → front-end B → SIPp UAS.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Is SIPp installed? Prints a loud SKIPPED line when it is not.
pub fn have_sipp() -> bool {
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

/// Path of a scenario file in `crates/sip/tests/sipp/`.
pub fn scenario(name: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "sip",
        "tests",
        "sipp",
        name,
    ]
    .iter()
    .collect();
    p.display().to_string()
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// SIPp toward `target` from a free local port, bounded in time.
pub fn sipp_cmd(transport: &str, target: SocketAddr, extra: &[&str]) -> Command {
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

/// Run SIPp and fail the test with its output unless it exits 0.
pub async fn run_ok(mut c: Command, what: &str) {
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

/// A SIPp UAS registers as bob at front-end `b`; a SIPp UAC at front-end `a` calls bob
/// `calls` times (INVITE/180/200/ACK/BYE). Both SIPp processes must succeed.
pub async fn sipp_calls(transport: &str, a: SocketAddr, b: SocketAddr, calls: u32) {
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
}
