//! `p2psip stun-server`: the STUN/TURN server for peers behind NAT (layer 2).

use anyhow::Context;
use nat::{CredentialStore, Credentials, Limits, PortRange, ServerConfig, StunServer};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Options for `p2psip stun-server`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// UDP address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "0.0.0.0:3478")]
    listen: SocketAddr,
    /// Long-term credential realm.
    #[arg(long, default_value = "p2psip")]
    realm: String,
    /// File holding the TURN REST shared secret (shared with the E&A server); enables
    /// usernames `<expiry-unix>:<node-id>` with password base64(HMAC-SHA1(secret, username)).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Static user `name:password` (repeatable), e.g. for tests and operators.
    #[arg(long = "user", value_name = "U:P")]
    users: Vec<String>,
    /// IP relay sockets bind to and advertise (default: the listen IP).
    #[arg(long)]
    relay_ip: Option<IpAddr>,
    /// Relay port range `LO-HI` (default: ephemeral ports).
    #[arg(long, value_parser = |s: &str| PortRange::parse(s, 1))]
    relay_ports: Option<PortRange>,
    /// Allocations in total (508 beyond).
    #[arg(long, default_value_t = Limits::default().max_allocations)]
    max_allocations: usize,
    /// Allocations per user / enrolled peer (486 beyond).
    #[arg(long, default_value_t = Limits::default().max_allocations_per_user)]
    max_allocations_per_user: usize,
    /// Permissions per allocation (508 beyond).
    #[arg(long, default_value_t = Limits::default().max_permissions)]
    max_permissions: usize,
    /// Channel bindings per allocation (508 beyond).
    #[arg(long, default_value_t = Limits::default().max_channels)]
    max_channels: usize,
    /// TCP address for monitoring over HTTP: `GET /metrics` (OpenMetrics, `p2psip_stun_*`),
    /// `/healthz`, `/readyz` (the server's loop answers). Off without it; keep it on
    /// loopback or an operator network.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// The TURN REST secret in `path`.
pub(crate) fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    Credentials::read_secret_file(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let mut creds = CredentialStore::new();
    for u in &a.users {
        creds.add_user(
            Credentials::parse_user_pass(u)
                .with_context(|| format!("bad --user {u:?}, want name:password"))?,
        );
    }
    if let Some(f) = &a.secret_file {
        creds.set_rest_secret(read_secret(f)?);
    }
    if creds.is_empty() {
        tracing::warn!(
            "no --user and no --secret-file: STUN Binding works, every TURN request gets 401"
        );
    }
    let config = ServerConfig {
        listen: a.listen,
        realm: a.realm,
        credentials: creds,
        relay_ip: a.relay_ip,
        relay_ports: a.relay_ports.map(|r| (r.first, r.last)),
        limits: Limits {
            max_allocations: a.max_allocations,
            max_allocations_per_user: a.max_allocations_per_user,
            max_permissions: a.max_permissions,
            max_channels: a.max_channels,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = StunServer::bind(config).await?;
        // Monitoring stops with the server: when its loop has returned.
        let (stop_monitor, monitor_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut monitoring = None;
        if let Some(addr) = a.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?;
            let bound = listener.local_addr()?;
            monitoring = Some(tokio::spawn(service::monitor::serve(
                listener,
                server.monitor(),
                async {
                    let _ = monitor_stopped.await;
                },
            )));
            service::output::say(format_args!("stun-server metrics on http://{bound}"));
        }
        service::output::say(format_args!(
            "stun-server listening udp {}",
            server.local_addr()
        ));
        let stop = super::stop_signal();
        service::notify::ready(&format!("STUN/TURN on udp {}", server.local_addr()));
        let stats = server
            .run(async {
                stop.await;
                service::notify::stopping();
            })
            .await?;
        let _ = stop_monitor.send(());
        if let Some(task) = monitoring {
            task.await?.context("serving the metrics")?;
        }
        eprintln!(
            "stun-server stopped: {} allocations created, {} quota rejects, {} capacity rejects",
            stats.allocations_created, stats.quota_rejects, stats.capacity_rejects
        );
        Ok(())
    })
}
