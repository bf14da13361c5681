#![allow(clippy::unwrap_used)]
//! `p2psip man --out DIR` writes the man pages the Debian package installs: one per
//! visible (sub)command, named the way `man` looks them up (`p2psip-enroll-server-token.1`),
//! none for hidden subcommands, and each renders without a groff warning.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use support::BIN;

/// The subcommands `p2psip <path> --help` lists (clap's "Commands:" block), without `help`.
fn listed_subcommands(path: &[String]) -> Vec<String> {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "{path:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Page names for `path` and everything under it, as `--help` shows the tree.
fn expected_pages(path: &mut Vec<String>, pages: &mut BTreeSet<String>) {
    let mut name = vec!["p2psip".to_owned()];
    name.extend(path.iter().cloned());
    pages.insert(format!("{}.1", name.join("-")));
    for sub in listed_subcommands(path) {
        path.push(sub);
        expected_pages(path, pages);
        path.pop();
    }
}

#[test]
fn one_page_per_visible_subcommand_and_each_renders_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut expected = BTreeSet::new();
    expected_pages(&mut Vec::new(), &mut expected);
    assert!(expected.contains("p2psip-config-check.1"), "{expected:?}");
    assert!(!expected.contains("p2psip-man.1"), "`man` is hidden");
    let written: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, expected);

    let root = std::fs::read_to_string(dir.path().join("p2psip.1")).unwrap();
    assert!(root.contains(".SH FILES"), "{root}");
    assert!(root.contains("/etc/p2psip/p2psip.toml"), "{root}");
    assert!(root.contains("\\fBp2psip\\-peer\\fR(1)"), "{root}");
    // A subcommand's page has its own options and the global ones, and points up.
    let peer = std::fs::read_to_string(dir.path().join("p2psip-peer.1")).unwrap();
    for needle in [
        ".TH p2psip-peer 1",
        "\\-\\-control",
        "\\-\\-config",
        "\\fBp2psip\\fR(1)",
    ] {
        assert!(
            peer.contains(needle),
            "no {needle} in p2psip-peer.1:\n{peer}"
        );
    }
    let token = std::fs::read_to_string(dir.path().join("p2psip-enroll-server-token.1")).unwrap();
    assert!(
        token.contains("\\fBp2psip\\-enroll\\-server\\fR(1)"),
        "{token}"
    );

    if !testkit::have_tool("groff", "groff-base") {
        return;
    }
    for page in &written {
        // -k: the pages are UTF-8 (as man(1) reads them); -ww: every warning; -z: no output.
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.path().join(page))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
