//! `p2psip call`: ask a running `p2psip peer` to call another peer through the secure
//! overlay (its control endpoint's `POST /call`) and print how it went.

use anyhow::{Context, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options for `p2psip call`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The calling peer: its node directory (the control address is in control.addr) or its
    /// control address (printed at start-up, `127.0.0.1:PORT`).
    #[arg(long)]
    from: String,
    /// The callee: a Node-ID (decimal), or an AoR `sip:user@domain` a phone registered at
    /// some peer's SIP front-end (`p2psip peer --sip-listen`); the phone rings.
    #[arg(long)]
    to: String,
    /// Time between the ACK and the BYE, ms.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Where the peer named by `--from` listens for control requests.
fn control_of(from: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = from.parse::<SocketAddr>() {
        return Ok(a);
    }
    Ok(node::control_addr_of(&PathBuf::from(from))?)
}

/// Place the call; exit status non-zero unless it completed.
pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let addr = control_of(&a.from)?;
    let body = serde_json::json!({ "to": a.to, "hold_ms": a.hold_ms });
    service::crypto::install_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let v: Value = rt.block_on(async {
        let api = service::http::Api::new(
            &format!("http://{addr}"),
            std::time::Duration::from_secs(120) + std::time::Duration::from_millis(a.hold_ms),
        )?;
        let v: Value =
            service::http::Api::call(api.request(reqwest::Method::POST, "/call").json(&body))
                .await
                .map_err(|e| match e {
                    service::http::AnswerError::Refused { body, .. } => {
                        anyhow::anyhow!("the peer refused the call: {}", body.message)
                    }
                    e => anyhow::Error::new(e).context(format!("asking the peer at {addr}")),
                })?;
        anyhow::Ok(v)
    })?;
    if a.json {
        service::say!("{v}");
    } else {
        let report: node::CallReport =
            serde_json::from_value(v.clone()).context("the peer's answer is not a call report")?;
        service::say!("{}", report.to_string().trim_end());
    }
    match v["result"].as_str() {
        Some("completed") => Ok(()),
        Some(r) => bail!(
            "call {}: {}",
            r,
            v["reason"].as_str().unwrap_or("no reason given")
        ),
        None => bail!("the peer's answer has no result"),
    }
}
