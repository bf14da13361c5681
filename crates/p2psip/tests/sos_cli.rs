//! The paper check through the command line: offline, and against a real `p2psip sos`.

mod support;

use support::{BIN, sos_tls, spawn_cmd, url_after};

use std::process::Command;

fn p2psip() -> Command {
    Command::new(BIN)
}

#[test]
fn check_paper_offline() {
    let out = p2psip()
        .args(["sos", "check-paper"])
        .output()
        .expect("run p2psip");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1600->1618           0.7380   0.0410   0.2210   0.79325  ok"),
        "{text}"
    );
    assert!(
        text.contains("1593->1609->1618     0.6624   0.0368   0.3008   0.73760  ok"),
        "{text}"
    );
    assert!(text.contains("paper check passed"), "{text}");
}

#[test]
fn check_paper_and_rank_against_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "cli-test-token\n").expect("write token");
    let tls = sos_tls(&dir.path().join("ea"), &dir.path().join("sos-tls"));
    let ca = tls.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let mut server = spawn_cmd(
        p2psip()
            .args(["sos", "--listen", "127.0.0.1:0", "--tls"])
            .arg(&tls)
            .arg("--db")
            .arg(dir.path().join("sos.db"))
            .arg("--admin-token-file")
            .arg(&token),
        1,
    );
    let url = url_after(&server, "sos listening on ");
    assert!(url.starts_with("https://"), "{url}");

    // Without the CA a client refuses to talk HTTPS to anyone; with another CA the
    // handshake fails.
    let no_ca = p2psip()
        .args(["sos", "rank", "--server", &url, "--route", "1600,1618"])
        .output()
        .expect("run rank");
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--ca"));
    let other = sos_tls(&dir.path().join("other-ea"), &dir.path().join("other-tls"));
    let wrong = p2psip()
        .args([
            "sos",
            "rank",
            "--server",
            &url,
            "--route",
            "1600,1618",
            "--ca",
        ])
        .arg(other.join("ca.pem"))
        .output()
        .expect("run rank");
    assert!(!wrong.status.success());

    let check = p2psip()
        .args([
            "sos",
            "check-paper",
            "--server",
            &url,
            "--ca",
            ca,
            "--admin-token-file",
        ])
        .arg(&token)
        .output()
        .expect("run check-paper");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("paper check passed"), "{text}");

    let rank = p2psip()
        .args([
            "sos",
            "rank",
            "--server",
            &url,
            "--ca",
            ca,
            "--route",
            "1593,1609,1618",
            "--route",
            "1600,1618",
        ])
        .output()
        .expect("run rank");
    let text = String::from_utf8_lossy(&rank.stdout);
    assert!(rank.status.success(), "{text}");
    let first = text.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with("1     1600->1618"), "{text}");

    // Without the token the admin path is refused and the command fails.
    let denied = p2psip()
        .args(["sos", "check-paper", "--server", &url, "--ca", ca])
        .env_remove("P2PSIP_SOS_ADMIN_TOKEN")
        .output()
        .expect("run check-paper");
    assert!(!denied.status.success());

    server.child.kill().expect("stop server");
    let _ = server.child.wait();
}

/// The SOS will not serve without its certificate unless told to serve plain HTTP, and then
/// it says so on stderr and prints an `http://` URL.
#[test]
fn the_sos_needs_its_certificate_or_an_explicit_insecure_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sos.db");
    let refused = p2psip()
        .args(["sos", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .output()
        .expect("run sos");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--tls"));
    let err = dir.path().join("sos.err");
    let server = spawn_cmd(
        p2psip()
            .args(["sos", "--listen", "127.0.0.1:0", "--insecure-http", "--db"])
            .arg(&db)
            .stderr(std::fs::File::create(&err).expect("stderr file")),
        1,
    );
    let url = url_after(&server, "sos listening on ");
    assert!(url.starts_with("http://"), "{url}");
    let warned = std::fs::read_to_string(&err).expect("stderr");
    assert!(warned.contains("WARNING: --insecure-http"), "{warned}");
    let rank = p2psip()
        .args(["sos", "rank", "--server", &url, "--route", "1600,1618"])
        .output()
        .expect("run rank");
    assert!(
        rank.status.success(),
        "{}",
        String::from_utf8_lossy(&rank.stderr)
    );
}
