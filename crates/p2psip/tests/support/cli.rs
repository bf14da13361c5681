//! Helpers shared by the tests that run the `p2psip` binary as real processes: run a
//! subcommand, check it succeeded, spawn a long-running one and read its first lines.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2psip");

/// A child process killed on drop (unless it already exited).
pub struct Proc {
    pub child: Child,
    pub first_lines: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn and read the first `lines` lines of stdout; the rest is drained by a thread.
pub fn spawn(args: &[&str], lines: usize) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first_lines: Vec<String> = (0..lines).map(|_| out.next().unwrap().unwrap()).collect();
    std::thread::spawn(move || {
        for l in out.map_while(Result::ok) {
            eprintln!("[child] {l}");
        }
    });
    Proc { child, first_lines }
}

/// Run a subcommand to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The stdout of a run that must have succeeded.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The Node-ID in a JSON contact (`{"id": "…"}`).
pub fn id_of(v: &Value) -> Option<u128> {
    v.get("id")?.as_str()?.parse().ok()
}
