//! Real SIPp processes for the tests that drive SIP front-ends from outside: sip's own
//! front-end tests (in-process overlay), net's SIP-over-TLS test and p2psip's tests on peer
//! processes. Find SIPp, run a scenario from `crates/sip/tests/sipp/`, start a UAS phone
//! and register it, and run calls SIPp UAC → front-end A → overlay → front-end B → SIPp
//! UAS.
//!
//! These are test helpers: a failure to start or finish a process is the test's failure,
//! so they panic with what SIPp said.

use crate::ports::free_port;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a SIPp process may live before `timeout` ends it, in seconds.
const PROCESS_LIMIT_SECS: &str = "60";

/// How long the UAS phone may take to finish its calls once the UAC is done.
const UAS_FINISH: Duration = Duration::from_secs(20);

/// Is SIPp installed? When it is not: a loud SKIPPED line, or a failure under CI
/// ([`crate::tool_missing`]).
pub fn have_sipp() -> bool {
    let ok = std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        crate::tool_missing("sipp", "sip-tester");
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

/// SIPp toward `target` from a free local port, bounded in time.
pub fn sipp_cmd(transport: &str, target: SocketAddr, extra: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        PROCESS_LIMIT_SECS,
        "sipp",
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-p",
    ])
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

/// Fail the test with a process's output unless it exited 0.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: sipp failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run SIPp and fail the test with its output unless it exits 0.
pub async fn run_ok(mut c: Command, what: &str) {
    let out = c.output().await.expect("run sipp");
    assert_ok(&out, what);
}

/// A SIPp UAS phone on a free port that answers `calls` calls and then exits; returns the
/// process and its port.
pub fn spawn_uas(transport: &str, calls: u32) -> (Child, u16) {
    let port = free_port();
    let mut uas = Command::new("timeout");
    uas.args([PROCESS_LIMIT_SECS, "sipp", "-sn", "uas", "-t", transport])
        .args(["-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-nostdin", "-m"])
        .arg(calls.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (uas.spawn().expect("spawn the sipp UAS"), port)
}

/// Register `user` at `front_end` with the contact port of the UAS phone on `uas_port`.
pub async fn register_uas(transport: &str, front_end: SocketAddr, user: &str, uas_port: u16) {
    let port = uas_port.to_string();
    let register = scenario("register-keep.xml");
    let args = [
        "-sf",
        &register,
        "-s",
        user,
        "-key",
        "contact_port",
        &port,
        "-m",
        "1",
    ];
    run_ok(
        sipp_cmd(transport, front_end, &args),
        &format!("register {user}"),
    )
    .await;
}

/// Wait for the UAS phone to finish its calls and return what it printed.
pub async fn finish_uas(uas: Child) -> Output {
    tokio::time::timeout(UAS_FINISH, uas.wait_with_output())
        .await
        .expect("the UAS phone finished in time")
        .expect("the UAS phone's output")
}

/// A SIPp UAS registers as bob at front-end `b`; a SIPp UAC at front-end `a` calls bob
/// `calls` times (INVITE/180/200/ACK/BYE). Both SIPp processes must succeed.
pub async fn sipp_calls(transport: &str, a: SocketAddr, b: SocketAddr, calls: u32) {
    let (uas, uas_port) = spawn_uas(transport, calls);
    register_uas(transport, b, "bob", uas_port).await;
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
    assert_ok(&finish_uas(uas).await, "uas");
}
