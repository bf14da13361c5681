//! Man pages rendered from the clap definitions the binary parses its arguments with, so
//! `man p2psip-peer` says exactly what `p2psip peer --help` says and cannot drift from it.
//! The Debian package installs them (`p2psip man --out DIR`, run by `scripts/package`).

use anyhow::Context;
use clap::Command;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the package puts where, for the FILES section of p2psip(1). The paths match
/// `[package.metadata.deb]` in crates/p2psip/Cargo.toml and the units in deploy/systemd.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/p2psip/p2psip.toml",
        "The services' configuration: one section per subcommand, keys are its long options \
         (check it with p2psip config check).",
    ),
    (
        "/usr/lib/systemd/system/p2psip-*.service",
        "One unit per service (enroll-server, sos, stun-server, peer); each starts \
         /usr/bin/p2psip SUBCOMMAND --config /etc/p2psip/p2psip.toml. None is enabled or \
         started when the package is installed: edit the configuration first.",
    ),
    (
        "/var/lib/p2psip/",
        "State of each service in its own directory, owned by the user systemd makes for it.",
    ),
    (
        "/usr/share/doc/p2psip/examples/p2psip.toml",
        "The documented example configuration, as shipped.",
    ),
    (
        "/usr/share/doc/p2psip/grafana/p2psip.json",
        "A Grafana dashboard over the services' Prometheus metrics.",
    ),
];

/// Write one page per visible command: `p2psip.1`, `p2psip-peer.1`,
/// `p2psip-config-check.1`, … into `out` (made if missing). Hidden subcommands get none.
/// Returns the files written, parents after their subcommands.
pub(crate) fn write_all(root: Command, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut root = root.disable_help_subcommand(true);
    // Building sets each subcommand's display name (`p2psip-peer`), which names its page.
    root.build();
    let source = format!("p2psip {}", root.get_version().unwrap_or_default());
    let mut written = Vec::new();
    write_tree(&root, None, &source, out, &mut written)?;
    Ok(written)
}

/// The page of `cmd` (whose parent's page is `parent`, `None` for the root) and those of its
/// visible subcommands.
fn write_tree(
    cmd: &Command,
    parent: Option<&str>,
    source: &str,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, Some(page_name(cmd)), source, out, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("p2psip manual");
    let path = out.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("rendering {}", path.display()))?;
    if parent.is_none() {
        page.extend_from_slice(files_section().as_bytes());
    }
    page.extend_from_slice(see_also(cmd, parent).as_bytes());
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&page)
        .and_then(|()| file.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// The FILES section in roff.
fn files_section() -> String {
    let mut s = String::from(".SH FILES\n");
    for (path, what) in FILES {
        s.push_str(&format!(".TP\n\\fI{}\\fR\n{}\n", roff(path), roff(what)));
    }
    s
}

/// A built command's page name: `p2psip-enroll-server-token` (clap's display name).
fn page_name(cmd: &Command) -> &str {
    cmd.get_display_name().unwrap_or(cmd.get_name())
}

/// SEE ALSO: the parent's page and the pages of the direct subcommands.
fn see_also(cmd: &Command, parent: Option<&str>) -> String {
    let mut refs: Vec<&str> = parent.into_iter().collect();
    refs.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(page_name),
    );
    if refs.is_empty() {
        return String::new();
    }
    let list: Vec<String> = refs
        .iter()
        .map(|r| format!("\\fB{}\\fR(1)", roff(r)))
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", list.join(",\n"))
}

/// Escape text for a roff line: backslashes, hyphens (so they stay hyphens, not dashes) and
/// a leading dot or quote that would make the line a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}
