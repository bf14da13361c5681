//! `p2psip sip-frontends --sip-credentials` as a real process, driven by real SIPp over UDP
//! and TCP: SIPp answers the 401 digest challenge and registers; a wrong password is
//! challenged again; alice's credentials cannot register bob's AoR (403). Skips loudly
//! without `sipp`.
#![allow(clippy::unwrap_used)]

mod support;

use support::{BIN, Proc, spawn_cmd};
use testkit::ports::free_port;
use testkit::sipp::{have_sipp, scenario};

use std::path::Path;
use std::process::{Command, Stdio};

/// Run a SIPp scenario against `target`; true when SIPp exits 0 (scenario passed).
fn sipp(transport: &str, target: &str, sf: &str, aor: &str, user: &str, pw: &str) -> bool {
    let out = Command::new("timeout")
        .args(["30", "sipp", "-t", transport, "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .arg(target)
        .args(["-sf", &scenario(sf), "-s", aor, "-au", user, "-ap", pw])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "sipp {sf} {aor} as {user}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Start the front-ends `cmd` describes, their stderr kept in `dir`; once the first has said
/// where it listens, return the process and what it has logged.
fn start_front_end(dir: &Path, cmd: &mut Command) -> (Proc, String) {
    let stderr = dir.join("stderr");
    let front_end = spawn_cmd(cmd.stderr(std::fs::File::create(&stderr).unwrap()), 1);
    let first = &front_end.first_lines[0];
    assert!(first.starts_with("frontend "), "{first}");
    let log = std::fs::read_to_string(&stderr).unwrap();
    (front_end, log)
}

#[test]
fn sipp_registers_with_digest_credentials_udp_and_tcp() {
    if !have_sipp() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("sip-users");
    std::fs::write(&creds, "# test users\nalice:wonderland\nbob:builder\n").unwrap();
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let (_front_end, log) = start_front_end(
        dir.path(),
        Command::new(BIN)
            .args([
                "sip-frontends",
                "--sip-listen",
                &target,
                "--sip-credentials",
            ])
            .arg(&creds)
            // SIPp 3.6 reads only the first challenge and knows only MD5.
            .args(["--sip-digest", "MD5,SHA-256"]),
    );
    assert!(
        log.contains("SIP front-end with digest authentication: 2 users"),
        "{log}"
    );
    for t in ["u1", "t1"] {
        assert!(
            sipp(
                t,
                &target,
                "register-auth.xml",
                "alice",
                "alice",
                "wonderland"
            ),
            "alice with her password over {t}"
        );
        assert!(
            sipp(t, &target, "register-auth.xml", "bob", "bob", "builder"),
            "bob with his password over {t}"
        );
        assert!(
            !sipp(
                t,
                &target,
                "register-auth.xml",
                "alice",
                "alice",
                "wonderLand"
            ),
            "a wrong password must not register over {t}"
        );
        assert!(
            sipp(
                t,
                &target,
                "register-auth-403.xml",
                "bob",
                "alice",
                "wonderland"
            ),
            "alice registering bob's AoR gets 403 over {t}"
        );
    }
}

#[test]
fn without_credentials_the_front_end_says_it_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_front_end, log) = start_front_end(
        dir.path(),
        Command::new(BIN).args(["sip-frontends", "--sip-listen", "127.0.0.1:0"]),
    );
    assert!(
        log.contains("SIP front-end without authentication"),
        "{log}"
    );
}

#[test]
fn bad_credentials_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("sip-users");
    std::fs::write(&creds, "alice:wonderland\nno-colon-here\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "sip-frontends",
            "--sip-listen",
            "127.0.0.1:0",
            "--sip-credentials",
        ])
        .arg(&creds)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
}
