#![allow(clippy::unwrap_used)]
//! `p2psip stun-server` prints its bound address; `p2psip stun-client` probes it
//! (reflexive address, TURN allocation, relay echo) — as real processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn stun_server_and_client_subcommands() {
    let bin = env!("CARGO_BIN_EXE_p2psip");
    let mut server = Command::new(bin)
        .args([
            "stun-server",
            "--listen",
            "127.0.0.1:0",
            "--realm",
            "p2psip.test",
        ])
        .args(["--user", "test:test", "--max-allocations-per-user", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("stun-server listening udp ")
        .unwrap()
        .to_owned();
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
    let _ = server.kill();
    let _ = server.wait();
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
