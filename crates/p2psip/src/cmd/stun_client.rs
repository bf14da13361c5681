//! `p2psip stun-client`: learn the server-reflexive address and, with credentials, check a
//! TURN allocation end to end with a relay echo. For operators and tests.

use anyhow::{Context, bail};
use nat::{BindingOptions, Credentials, TurnClient, TurnOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options for `p2psip stun-client`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// STUN/TURN server (UDP).
    #[arg(long)]
    server: SocketAddr,
    /// Static TURN user `name:password`.
    #[arg(long, value_name = "U:P")]
    user: Option<String>,
    /// TURN REST shared secret file (with --node-id).
    #[arg(long, requires = "node_id")]
    secret_file: Option<PathBuf>,
    /// Node-ID for REST credentials.
    #[arg(long)]
    node_id: Option<String>,
    /// Lifetime of generated REST credentials, seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Echo datagrams to send through the relay.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Bytes per echo datagram.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Echo peer to use (default: a local echo peer this command starts next to the client).
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// Use a channel binding (ChannelData) instead of Send/Data indications.
    #[arg(long)]
    channel: bool,
    /// Give up after this many milliseconds per step.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let creds = match (&a.user, &a.secret_file, &a.node_id) {
        (Some(u), _, _) => {
            Some(Credentials::parse_user_pass(u).context("bad --user, want name:password")?)
        }
        (None, Some(f), Some(id)) => {
            let secret = super::stun_server::read_secret(f)?;
            let now = service::time::unix_secs();
            Some(Credentials::rest(&secret, id, now, a.ttl))
        }
        _ => None,
    };
    let timeout = Duration::from_millis(a.timeout_ms);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (local, mapped) = nat::reflexive_address(a.server, &BindingOptions::quick(timeout))
            .await
            .context("STUN Binding")?;
        service::say!("local {local}");
        service::say!("reflexive {mapped}");
        let Some(creds) = creds else { return Ok(()) };
        let t0 = Instant::now();
        let mut turn = TurnClient::allocate(
            a.server,
            creds,
            TurnOptions {
                timeout,
                ..TurnOptions::default()
            },
        )
        .await
        .context("TURN Allocate")?;
        service::say!(
            "relayed {} (allocated in {:.1} ms)",
            turn.relayed_addr(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        let peer = match a.peer {
            Some(p) => p,
            None => nat::spawn_udp_echo(SocketAddr::new(turn.local_addr().ip(), 0)).await?,
        };
        if a.channel {
            turn.bind_channel(peer).await.context("ChannelBind")?;
        } else {
            turn.create_permission(peer)
                .await
                .context("CreatePermission")?;
        }
        let tally = nat::probe_turn(&mut turn, peer, a.count, a.size, timeout)
            .await
            .context("relay")?;
        for why in &tally.failures {
            eprintln!("{why}");
        }
        let (ok, avg, max) = (tally.ok(), tally.avg_ms(), tally.max_ms());
        service::say!(
            "echo {ok}/{} via {peer} rtt avg {avg:.3} ms max {max:.3} ms",
            a.count
        );
        turn.close().await;
        if tally.lost() > 0 {
            bail!("{} of {} echoes lost", tally.lost(), a.count);
        }
        Ok(())
    })
}
