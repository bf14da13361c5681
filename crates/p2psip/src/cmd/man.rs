//! `p2psip man --out DIR` (hidden): write the man pages the Debian package installs, from
//! the same clap definitions the binary parses with (see `crate::manpages`).

use clap::builder::Command;
use std::path::PathBuf;

/// Options for `p2psip man`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Directory to write the pages to (`p2psip.1`, `p2psip-peer.1`, …); made if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub(crate) fn run(a: Args, root: Command) -> anyhow::Result<()> {
    let pages = crate::manpages::write_all(root, &a.out)?;
    service::say!("{} man pages in {}", pages.len(), a.out.display());
    Ok(())
}
