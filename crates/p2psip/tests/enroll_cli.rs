//! Real processes: `p2psip enroll-server` on a loopback port, tokens and revocation via
//! the CLI, `p2psip enroll` writing a node directory, and `kill -9` losing no certificate.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use support::{Proc, create_token, ea_command, enroll, ok, run, start_ea};

use std::path::Path;

/// The E&A on a free port with 11-bit Node-IDs, handing out an SOS and a STUN URL.
fn start(data: &Path) -> (Proc, String) {
    start_ea(ea_command(data, 11).args([
        "--sos-url",
        "https://127.0.0.1:7500",
        "--stun-url",
        "stun:127.0.0.1:3478",
    ]))
}

#[test]
fn enroll_server_and_client_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ea");
    let data_s = data.to_str().unwrap();
    let (mut server, url) = start(&data);

    let token = create_token(&data, &["--role", "csp", "--uses", "1"]);
    let token = token.as_str();
    assert!(token.starts_with("p2pt_"), "{token}");
    let fp = support::fingerprint_of(&url).unwrap();

    // First contact over HTTPS without a pin is refused before anything is sent; a wrong
    // pin fails the handshake, and the token stays unused.
    let tries = tmp.path().join("node-x");
    let tries_s = tries.to_str().unwrap();
    let enroll_with = |out: &str, extra: &[&str]| {
        let mut args = vec!["enroll", "--server", &url, "--token", token, "--out", out];
        args.extend_from_slice(extra);
        run(&args)
    };
    let unpinned = enroll_with(tries_s, &[]);
    assert!(!unpinned.status.success());
    assert!(String::from_utf8_lossy(&unpinned.stderr).contains("--ca-fingerprint"));
    let wrong_pin = "00".repeat(32);
    let wrong = enroll_with(tries_s, &["--ca-fingerprint", &wrong_pin]);
    assert!(!wrong.status.success());
    assert!(!tries.join("node.json").exists());

    let out = tmp.path().join("node-a");
    let out_s = out.to_str().unwrap();
    let printed = enroll(
        &url,
        token,
        &out,
        &[
            "--role",
            "csp",
            "--location",
            "-33.87,151.21",
            "--listen",
            "127.0.0.1:6001",
        ],
    );
    assert!(printed.contains("role csp"), "{printed}");

    // Key 0600, chain = own certificate + CA, node config readable by the peer.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca_mode = std::fs::metadata(data.join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(ca_mode & 0o777, 0o600);
    }
    let chain = std::fs::read_to_string(out.join("chain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let cfg: enroll::NodeConfig =
        serde_json::from_str(&std::fs::read_to_string(out.join("node.json")).unwrap()).unwrap();
    assert_eq!(cfg.role, enroll::Role::Csp);
    assert_eq!(cfg.overlay.id_bits, 11);
    assert!(cfg.node_id.0 < 2048);
    assert_eq!(
        cfg.services.sos_url.as_deref(),
        Some("https://127.0.0.1:7500")
    );
    assert_eq!(cfg.listen, Some("127.0.0.1:6001".parse().unwrap()));
    let ders = enroll::cert::pem_to_der(&chain, "CERTIFICATE").unwrap();
    let who = enroll::cert::identity_from_cert(&ders[0]).unwrap();
    assert_eq!(who.node_id, cfg.node_id);

    // The token was single-use.
    let node_b = tmp.path().join("node-b");
    let again = enroll_with(node_b.to_str().unwrap(), &["--ca-fingerprint", &fp]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("token_used_up"));

    // Renewal keeps ID and key.
    let key_before = std::fs::read_to_string(out.join("key.pem")).unwrap();
    let printed = ok(run(&[
        "enroll", "--server", &url, "--renew", "--out", out_s,
    ]));
    assert!(
        printed.contains(&format!("node {}", cfg.node_id)),
        "{printed}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("key.pem")).unwrap(),
        key_before
    );

    // Revocation through the CLI.
    let id = cfg.node_id.to_string();
    let printed = ok(run(&[
        "enroll-server",
        "revoke",
        "--data",
        data_s,
        "--node",
        &id,
    ]));
    assert!(printed.contains("2 certificate(s)"), "{printed}");

    // kill -9: every certificate handed out is on disk.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let dir = enroll::DataDir::open(&data).unwrap();
    assert_eq!(dir.cert_count().unwrap(), 2);
    drop(server);

    // Restart reuses the CA; parameters are pinned.
    let (server, _) = start(&data);
    let ca_after = run(&["enroll-server", "token", "create", "--data", data_s]);
    assert!(ca_after.status.success());
    drop(server);
    let wrong = run(&[
        "enroll-server",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data_s,
        "--id-bits",
        "128",
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("id_bits"));
}

#[test]
fn locality_report_prints_both_schemes() {
    let out = ok(run(&[
        "enroll-server",
        "locality-report",
        "--peers",
        "300",
        "--bits",
        "64",
    ]));
    assert!(out.contains("location") && out.contains("sha1"), "{out}");
}

/// Plain HTTP only when asked for, and then said loudly: the E&A with `--insecure-http`
/// prints an `http://` URL and a warning, and enrollment over it works without a pin (with a
/// warning of its own). Without the flag an E&A on 0.0.0.0 with no `--public-name` refuses
/// to start, since no client could verify its certificate.
#[test]
fn insecure_http_is_explicit_and_loud() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ea");
    let err = tmp.path().join("ea.err");
    let mut cmd = ea_command(&data, 11);
    cmd.arg("--insecure-http")
        .stderr(std::fs::File::create(&err).unwrap());
    let ea = support::spawn_cmd(&mut cmd, 2);
    let url = support::url_after(&ea, "listening on ");
    assert!(url.starts_with("http://"), "{url}");
    let warned = std::fs::read_to_string(&err).unwrap();
    assert!(warned.contains("WARNING: --insecure-http"), "{warned}");
    let token = create_token(&data, &[]);
    let out = tmp.path().join("node");
    let done = run(&[
        "enroll",
        "--server",
        &url,
        "--token",
        &token,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stderr).contains("plain HTTP"));
    drop(ea);

    let nameless = run(&[
        "enroll-server",
        "--listen",
        "0.0.0.0:0",
        "--data",
        data.to_str().unwrap(),
        "--id-bits",
        "11",
    ]);
    assert!(!nameless.status.success());
    assert!(String::from_utf8_lossy(&nameless.stderr).contains("--public-name"));
}
