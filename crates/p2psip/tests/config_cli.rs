#![allow(clippy::unwrap_used)]
//! Config files as an operator uses them: a service takes its options from its section of
//! a TOML file (`--config`), `P2PSIP_*` variables and flags override it, and `p2psip config
//! check` shows the outcome or names the bad key — as real processes.

mod support;

use std::process::{Command, Stdio};
use support::{BIN, spawn_cmd, url_after};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn check(file: &std::path::Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_service_runs_from_its_section_and_flags_and_environment_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "p2psip.toml",
        "[stun-server]\nlisten = \"127.0.0.1:0\"\nrealm = \"from-file\"\nmax_allocations = 7\n\
         user = [\"test:test\"]\n\n\
         [peer]\ndir = \"/srv/p2psip/node\"\nstabilize-ms = 1500\nbootstrap = [\"5@127.0.0.1:9000\"]\n",
    );
    let (ok, out, err) = check(&file, &[("P2PSIP_FANOUT", "6")]);
    assert!(ok, "{err}");
    for line in [
        "[stun-server]",
        "realm = \"from-file\"  # file",
        "max_allocations = \"7\"  # file",
        "[peer]",
        "stabilize_ms = \"1500\"  # file",
        "bootstrap = \"5@127.0.0.1:9000\"  # file",
        "fanout = \"6\"  # environment",
        "fix_fingers_ms = \"4000\"  # default",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }

    // The STUN server runs from the file; a flag wins over it.
    let server = spawn_cmd(
        Command::new(BIN)
            .args(["stun-server", "--config"])
            .arg(&file)
            .args(["--max-allocations", "9"])
            .stderr(Stdio::null()),
        1,
    );
    let addr = url_after(&server, "stun-server listening udp ");
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}

#[test]
fn bad_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[peer]\ndir = \"/x\"\nstabilise_ms = 3\n",
            "unknown key `stabilise_ms` in [peer]",
        ),
        (
            "[peer]\ndir = \"/x\"\nstabilize_ms = \"fast\"\n",
            "--stabilize-ms",
        ),
        ("[peer]\ndir = \"/x\"\ncreate = \"yes\"\n", "key `create`"),
        (
            "[pier]\ndir = \"/x\"\n",
            "[pier] is not a p2psip subcommand",
        ),
        ("dir = \"/x\"\n", "outside any section"),
        ("[peer\ndir = 1\n", "is not valid TOML"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = write(&dir, &format!("bad{i}.toml"), text);
        let (ok, _, err) = check(&file, &[]);
        assert!(!ok, "{text:?} was accepted");
        assert!(
            err.contains(want),
            "{text:?}: {err:?} does not say {want:?}"
        );
    }
    // The service itself refuses the same file before it starts.
    let file = write(&dir, "peer.toml", cases[0].0);
    let out = Command::new(BIN)
        .args(["peer", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stabilise_ms"));
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/p2psip.toml");
    let (ok, out, err) = check(&file, &[]);
    assert!(ok, "{err}");
    for section in ["[enroll-server]", "[sos]", "[stun-server]", "[peer]"] {
        assert!(out.lines().any(|l| l == section), "{out}");
    }
}

/// The systemd units in deploy/systemd pass `systemd-analyze verify` (with this build as
/// /usr/bin/p2psip, and the man pages it writes as the ones their `Documentation=` names),
/// and each starts a subcommand the example config has a section for.
#[test]
fn the_systemd_units_verify() {
    if !testkit::have_tool("systemd-analyze", "systemd") {
        return;
    }
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let example = std::fs::read_to_string(deploy.join("p2psip.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `verify` runs `man` on each Documentation= page; the package installs these.
    let man = dir.path().join("man");
    let out = Command::new(BIN)
        .args(["man", "--out"])
        .arg(man.join("man1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut units = 0;
    for entry in std::fs::read_dir(deploy.join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/bin/p2psip "))
            .unwrap_or_else(|| panic!("{} does not start /usr/bin/p2psip", path.display()));
        let sub = exec.split_whitespace().next().unwrap();
        assert!(
            example.contains(&format!("[{sub}]")),
            "no [{sub}] in deploy/p2psip.toml"
        );
        for needed in [
            "Type=notify",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "StateDirectory=",
        ] {
            assert!(text.contains(needed), "{} lacks {needed}", path.display());
        }
        let local = dir.path().join(path.file_name().unwrap());
        std::fs::write(&local, text.replace("/usr/bin/p2psip", BIN)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .env("MANPATH", &man)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        units += 1;
    }
    assert_eq!(units, 4, "one unit per service");
}

/// `Type=notify`: a service tells the manager it is ready once it serves, and that it is
/// stopping on SIGTERM, then exits.
fn notifies_ready_and_stops_on_sigterm(args: &[&str], status: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut server = spawn_cmd(
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", &sock_path)
            .stderr(Stdio::null()),
        1,
    );
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains(&format!("STATUS={status}")), "{ready:?}");
    let pid = i32::try_from(server.child.id()).unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{args:?}: {status:?}");
}

#[test]
fn every_service_notifies_ready_and_stops_on_sigterm() {
    notifies_ready_and_stops_on_sigterm(
        &["stun-server", "--listen", "127.0.0.1:0"],
        "STUN/TURN on udp 127.0.0.1:",
    );
    // Relative paths: the process runs in its own scratch directory.
    let pki = tempfile::tempdir().unwrap();
    let tls = support::sos_tls(&pki.path().join("ea"), &pki.path().join("sos-tls"));
    notifies_ready_and_stops_on_sigterm(
        &[
            "sos",
            "--listen",
            "127.0.0.1:0",
            "--tls",
            tls.to_str().unwrap(),
            "--db",
            "sos.db",
        ],
        "SOS on https://127.0.0.1:",
    );
    notifies_ready_and_stops_on_sigterm(
        &["enroll-server", "--listen", "127.0.0.1:0", "--data", "ea"],
        "E&A on https://127.0.0.1:",
    );
}
