//! `p2psip enroll`: enroll with an E&A server (or renew) and write a node directory.

use anyhow::{Context, bail};
use enroll::api::Location;
use enroll::client::NODE_FILE;
use enroll::layer::{DeviceClass, NatType};
use enroll::{Capabilities, EnrollClient, EnrollRequest, Role};
use service::tls::Trust;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options for `p2psip enroll`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// E&A server base URL, e.g. https://127.0.0.1:7400.
    #[arg(long)]
    server: String,
    /// Enrollment token (not needed with --renew).
    #[arg(long, env = "P2PSIP_TOKEN")]
    token: Option<String>,
    /// Output directory: key.pem (0600), chain.pem, ca.pem, node.json.
    #[arg(long)]
    out: PathBuf,
    /// Renew the certificate in --out with its existing key instead of enrolling.
    #[arg(long)]
    renew: bool,
    /// Requested role (must match the token).
    #[arg(long)]
    role: Option<Role>,
    /// Location "LAT,LON" in degrees; without it the server uses the source address.
    #[arg(long, allow_hyphen_values = true)]
    location: Option<Location>,
    /// Overlay address this peer will listen on (offered to others as bootstrap).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Pin the CA: SHA-256 fingerprint (hex) of its certificate, as `enroll-server token
    /// create` and the server's start print it. The server must present a certificate
    /// from that CA, else nothing (not the token) is sent. Needed on first contact unless
    /// --ca is given; a renewal trusts the node directory's ca.pem.
    #[arg(long)]
    ca_fingerprint: Option<String>,
    /// The E&A CA certificate (PEM) to verify the server with, instead of a fingerprint.
    #[arg(long, conflicts_with = "ca_fingerprint")]
    ca: Option<PathBuf>,
    /// NAT type: none (public IP), full-cone, restricted, port-restricted, symmetric, unknown.
    #[arg(long, default_value = "unknown")]
    nat: String,
    /// CPU cores.
    #[arg(long, default_value_t = 4)]
    cpu_cores: u32,
    /// Upstream bandwidth, kbit/s.
    #[arg(long, default_value_t = 20_000)]
    bandwidth_kbps: u64,
    /// Expected uptime, hours.
    #[arg(long, default_value_t = 24.0)]
    uptime_hours: f64,
    /// Device class: server, desktop, laptop, mobile.
    #[arg(long, default_value = "desktop")]
    device: String,
    /// On a wireless link.
    #[arg(long)]
    wireless: bool,
}

fn from_json_str<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .with_context(|| format!("bad --{what} {s:?}"))
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    service::crypto::install_provider();
    let trust = trust(&a)?;
    let client = EnrollClient::new(&a.server, &trust)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if let Some(pin) = &a.ca_fingerprint {
            client.ca(Some(pin)).await?;
        }
        let (key_pem, resp) = if a.renew {
            client.renew_node_dir(&a.out).await?
        } else {
            let Some(token) = a.token.clone() else {
                bail!("--token is needed to enroll");
            };
            let capabilities = Capabilities {
                nat: from_json_str::<NatType>("nat", &a.nat)?,
                cpu_cores: a.cpu_cores,
                bandwidth_kbps: a.bandwidth_kbps,
                uptime_hours: a.uptime_hours,
                device: from_json_str::<DeviceClass>("device", &a.device)?,
                wireless: a.wireless,
            };
            let (key_pem, csr) = enroll::cert::new_key_and_csr()?;
            let resp = client
                .enroll(&EnrollRequest {
                    token,
                    csr,
                    role: a.role,
                    capabilities,
                    location: a.location,
                    listen: a.listen,
                })
                .await?;
            (key_pem, resp)
        };
        enroll::client::check_answered_ca(&trust, &resp.ca)?;
        let cfg = enroll::write_node_dir(&a.out, &key_pem, &resp, client.base(), a.listen)?;
        service::say!(
            "node {} layer {} role {} valid until {} (unix); wrote {}",
            cfg.node_id,
            cfg.layer,
            cfg.role,
            cfg.not_after,
            a.out.join(NODE_FILE).display()
        );
        Ok(())
    })
}

/// Whom to believe is the E&A: the pinned fingerprint, the --ca file, or (renewal) the node
/// directory's ca.pem. A first contact over HTTPS with none of them is refused: the token
/// would go to whoever answers.
fn trust(a: &Args) -> anyhow::Result<Trust> {
    if let Some(pin) = &a.ca_fingerprint {
        return Ok(Trust::pinned(pin)?);
    }
    let file = match &a.ca {
        Some(f) => f.clone(),
        None if a.renew => a.out.join(enroll::client::CA_FILE),
        None if a.server.starts_with("http://") => {
            tracing::warn!(
                "enrolling over plain HTTP without a pinned CA: the token and the CA are \
                 unprotected (the server runs with --insecure-http)"
            );
            return Ok(Trust::Ca(Vec::new()));
        }
        None => bail!(
            "first contact with {} needs --ca-fingerprint (printed by `enroll-server token \
             create` and at the server's start) or --ca FILE",
            a.server
        ),
    };
    Trust::ca_file(&file).with_context(|| format!("the E&A CA {}", file.display()))
}
