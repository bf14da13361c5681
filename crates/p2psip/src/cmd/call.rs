//! `p2psip call`: ask a running `p2psip peer` to call another peer through the secure
//! overlay (its control endpoint's `POST /call`) and print how it went.

use anyhow::bail;
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
    super::ctl::control_addr_of_dir(&PathBuf::from(from))
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
        service::say!("{}", readable(&v).trim_end());
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

/// The report as a few lines of text.
fn readable(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let to = match v["aor"].as_str() {
        Some(aor) => format!("{aor} (peer {})", s("to")),
        None => s("to"),
    };
    let mut out = format!("call {} -> {to}: {}", s("from"), s("result"));
    if let Some(r) = v["reason"].as_str() {
        out.push_str(&format!(" ({r})"));
    }
    out.push('\n');
    if let Some(ice) = v["ice"].as_str() {
        out.push_str(&format!("  ice: {ice}\n"));
    }
    if let Some(srd) = v["srd_ms"].as_f64() {
        let route: Vec<&str> = v["route"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let cached = v["cached"].as_bool() == Some(true);
        out.push_str(&format!(
            "  ringing after {srd:.1} ms (SRD), route {} -> {} ({} hops)\n",
            if cached { "contact cache" } else { "CSP" },
            route.join(" -> "),
            v["hops"].as_u64().unwrap_or(0),
        ));
    }
    if let Some(ans) = v["answer_ms"].as_f64() {
        out.push_str(&format!("  answered after {ans:.1} ms\n"));
    }
    out.push_str(&format!("  Call-ID {}\n", s("call_id")));
    for m in v["sip"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", m.as_str().unwrap_or("")));
    }
    out
}
