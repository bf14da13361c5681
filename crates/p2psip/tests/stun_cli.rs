#![allow(clippy::unwrap_used)]
//! `p2psip stun-server` prints its bound address; `p2psip stun-client` probes it
//! (reflexive address, TURN allocation, relay echo) — as real processes.

mod support;

use support::{BIN, spawn_cmd, url_after};

use std::process::{Command, Stdio};

#[test]
fn stun_server_and_client_subcommands() {
    let bin = BIN;
    let mut server = spawn_cmd(
        Command::new(bin)
            .args([
                "stun-server",
                "--listen",
                "127.0.0.1:0",
                "--realm",
                "p2psip.test",
            ])
            .args(["--user", "test:test", "--max-allocations-per-user", "1"])
            .stderr(Stdio::null()),
        1,
    );
    let addr = url_after(&server, "stun-server listening udp ");
    let out = Command::new(bin)
        .args([
            "stun-client",
            "--server",
            &addr,
            "--user",
            "test:test",
            "--count",
            "5",
            "--channel",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let bad = Command::new(bin)
        .args([
            "stun-client",
            "--server",
            &addr,
            "--user",
            "test:wrong",
            "--timeout-ms",
            "2000",
        ])
        .output()
        .unwrap();
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("reflexive 127.0.0.1:"), "{text}");
    assert!(text.contains("relayed 127.0.0.1:"), "{text}");
    assert!(text.contains("echo 5/5"), "{text}");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
