//! `p2psip lookup` and `p2psip status`: ask a running `p2psip peer` through its local
//! control endpoint.

use anyhow::{Context, bail};
use reqwest::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which running peer to ask.
#[derive(clap::Args, Debug)]
pub(crate) struct Target {
    /// Node directory of a running `p2psip peer` (its control address is in control.addr).
    #[arg(long, conflicts_with = "control", required_unless_present = "control")]
    dir: Option<PathBuf>,
    /// Control address of a running `p2psip peer` (printed at start-up).
    #[arg(long)]
    control: Option<SocketAddr>,
}

/// Options for `p2psip lookup`.
#[derive(clap::Args, Debug)]
pub(crate) struct LookupArgs {
    #[command(flatten)]
    target: Target,
    /// The key (decimal, inside the overlay's ID space).
    #[arg(long)]
    key: String,
}

/// Options for `p2psip status`.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

fn control_addr(t: &Target) -> anyhow::Result<SocketAddr> {
    if let Some(a) = t.control {
        return Ok(a);
    }
    let Some(dir) = &t.dir else {
        bail!("give --dir or --control");
    };
    Ok(node::control_addr_of(dir)?)
}

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    service::crypto::install_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let api = service::http::Api::new(&format!("http://{addr}"), Duration::from_secs(30))?;
        match service::http::Api::call::<serde_json::Value>(api.request(Method::GET, path)).await {
            Ok(v) => {
                service::say!("{v}");
                Ok(())
            }
            Err(service::http::AnswerError::Refused { body, .. }) => {
                bail!("the peer answered with an error: {}", body.message)
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("asking the peer at {addr}"))),
        }
    })
}

pub(crate) fn lookup(a: LookupArgs) -> anyhow::Result<()> {
    let key: u128 = a.key.parse().context("--key must be a decimal integer")?;
    get(control_addr(&a.target)?, &format!("/lookup/{key}"))
}

pub(crate) fn status(a: StatusArgs) -> anyhow::Result<()> {
    get(control_addr(&a.target)?, "/status")
}
