//! `p2psip demo`: the paper's 512-peer prototype.

/// Options for `p2psip demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the demo is being built; see the README")
}
