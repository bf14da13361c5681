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
        "[stun-server]\nlisten = \"127.0.0.1:0\"\nrealm = \"from-file\"\nmax_allocations = 7\n\n\
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
