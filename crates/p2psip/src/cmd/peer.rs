//! `p2psip peer`: a real Chord peer on mutual TLS, with a local control HTTP endpoint.

use anyhow::{Context, bail};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use net::{Handle, Limits, NetConfig, NodeDir, PeerRuntime, RevocationPolicy};
use overlay::{ChordConfig, ChordNode, Contact, Event, IdSpace, NodeId};
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// File in the node directory holding the running peer's control address.
pub(crate) const CONTROL_FILE: &str = "control.addr";

/// What to do while no CRL could be loaded.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum CrlPolicy {
    /// Refuse to start, and refuse every peer, without a CRL (fail closed).
    Require,
    /// Start and accept peers without revocation checks until a CRL loads (logged).
    AllowMissing,
}

/// Options for `p2psip peer`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Node directory written by `p2psip enroll` (key.pem, chain.pem, ca.pem, node.json).
    #[arg(long)]
    dir: PathBuf,
    /// TLS listen address [default: `listen` from node.json, else 127.0.0.1:0].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address announced to other peers [default: the bound address].
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Peer to join through, as NODE-ID@ADDR (repeatable) [default: the bootstrap list in
    /// node.json].
    #[arg(long, value_parser = parse_contact)]
    bootstrap: Vec<Contact>,
    /// Start a new ring instead of joining one.
    #[arg(long)]
    create: bool,
    /// Local control HTTP endpoint (status, lookups). Unauthenticated, so loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Revocation policy when no CRL can be loaded.
    #[arg(long, value_enum, default_value = "require")]
    crl_policy: CrlPolicy,
    /// CRL source, URL or file [default: crl_url from node.json].
    #[arg(long)]
    crl: Option<String>,
    /// CRL refresh interval, seconds (keep well below the CRL validity, 1 h by default).
    #[arg(long, default_value_t = 300)]
    crl_refresh_s: u64,
    /// Chord stabilize interval, ms.
    #[arg(long, default_value_t = 2000)]
    stabilize_ms: u64,
    /// Chord fix-fingers interval, ms.
    #[arg(long, default_value_t = 4000)]
    fix_fingers_ms: u64,
    /// Chord check-predecessor interval, ms.
    #[arg(long, default_value_t = 5000)]
    check_pred_ms: u64,
    /// Chord ring-check (partition healing) interval, ms.
    #[arg(long, default_value_t = 30_000)]
    ring_check_ms: u64,
    /// Chord RPC / hop-acknowledgement timeout, ms.
    #[arg(long, default_value_t = 500)]
    rpc_timeout_ms: u64,
    /// Chord lookup timeout per attempt, ms.
    #[arg(long, default_value_t = 5000)]
    lookup_timeout_ms: u64,
    /// Close connections idle for this long, seconds.
    #[arg(long, default_value_t = 60)]
    idle_timeout_s: u64,
    /// Cap on concurrent inbound connections.
    #[arg(long, default_value_t = 1024)]
    max_inbound: usize,
    /// STUN server to learn the server-reflexive address from at start, IP:PORT (repeatable)
    /// [default: stun_urls from node.json].
    #[arg(long)]
    stun: Vec<SocketAddr>,
}

/// Parse `NODE-ID@ADDR`.
pub(crate) fn parse_contact(s: &str) -> Result<Contact, String> {
    let (id, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("expected NODE-ID@ADDR, got {s:?}"))?;
    let id: NodeId = id.parse().map_err(|e| format!("bad node ID {id:?}: {e}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok(Contact::new(id, addr))
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(a))
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

async fn serve(a: Args) -> anyhow::Result<()> {
    if !a.control.ip().is_loopback() {
        bail!("--control must be a loopback address: the control endpoint is unauthenticated");
    }
    let policy = match a.crl_policy {
        CrlPolicy::Require => RevocationPolicy::RequireCrl,
        CrlPolicy::AllowMissing => RevocationPolicy::AllowMissing,
    };
    let nd = NodeDir::load(&a.dir, policy)
        .with_context(|| format!("loading the node directory {}", a.dir.display()))?;
    let me_id = nd.identity.node_id;

    // Revocation: load the CRL before accepting anyone.
    let crl_source = a
        .crl
        .clone()
        .or_else(|| Some(nd.config.crl_url.clone()).filter(|s| !s.is_empty()));
    match (&crl_source, a.crl_policy) {
        (Some(src), _) => match net::load_crl(&nd.trust, &nd.identity, src).await {
            Ok(()) => info!("CRL loaded from {src}"),
            Err(e) => match a.crl_policy {
                CrlPolicy::Require => {
                    bail!(
                        "{e} (pass --crl-policy allow-missing to start without revocation checks)"
                    )
                }
                CrlPolicy::AllowMissing => {
                    warn!("{e}; accepting peers WITHOUT revocation checks until a CRL loads")
                }
            },
        },
        (None, CrlPolicy::Require) => bail!("no CRL source (no --crl, no crl_url in node.json)"),
        (None, CrlPolicy::AllowMissing) => {
            warn!("no CRL source: accepting peers WITHOUT revocation checks")
        }
    }

    let space = IdSpace::new(nd.config.overlay.id_bits).context("overlay id_bits")?;
    let mut cc = ChordConfig::new(space);
    cc.stabilize_every = ms(a.stabilize_ms);
    cc.fix_fingers_every = ms(a.fix_fingers_ms);
    cc.check_predecessor_every = ms(a.check_pred_ms);
    cc.ring_check_every = ms(a.ring_check_ms);
    cc.rpc_timeout = ms(a.rpc_timeout_ms);
    cc.lookup_timeout = ms(a.lookup_timeout_ms);
    let cc = Arc::new(cc);

    let bootstrap: Vec<Contact> = if a.bootstrap.is_empty() {
        nd.config
            .bootstrap
            .iter()
            .filter(|b| b.node_id != me_id)
            .map(|b| Contact::new(b.node_id, b.addr))
            .collect()
    } else {
        a.bootstrap
            .iter()
            .copied()
            .filter(|c| c.id != me_id)
            .collect()
    };
    if !a.create && bootstrap.is_empty() {
        bail!(
            "no bootstrap peer (none given with --bootstrap, none in node.json): pass --create to start a new ring"
        );
    }

    let reflexive = learn_reflexive(&a.stun, &nd.config.stun_urls).await;

    let listen = a
        .listen
        .or(nd.config.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let limits = Limits {
        idle_timeout: Duration::from_secs(a.idle_timeout_s),
        max_inbound: a.max_inbound,
        ..Limits::default()
    };
    let cfg = NetConfig {
        listen,
        advertise: a.advertise,
        identity: nd.identity.clone(),
        trust: nd.trust.clone(),
        crl_refresh: crl_source.map(|s| (s, Duration::from_secs(a.crl_refresh_s.max(1)))),
        limits,
    };
    let seed = random_seed()?;
    let mut peer = PeerRuntime::start(cfg, move |me| ChordNode::new(cc, me, seed))
        .await
        .context("starting the peer")?;
    let h = peer.handle.clone();
    let (create, boots) = (a.create, bootstrap.clone());
    h.call(move |n, now| {
        if create {
            n.create(now);
        }
        for b in boots.iter().skip(1) {
            n.add_bootstrap(*b);
        }
        if let Some(first) = boots.first().copied() {
            if create {
                n.add_bootstrap(first);
            } else {
                n.join(now, first);
            }
        }
    })
    .await?;

    let control = tokio::net::TcpListener::bind(a.control)
        .await
        .with_context(|| format!("binding the control endpoint {}", a.control))?;
    let control_addr = control.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/lookup/{key}", get(lookup))
        .with_state(Ctl {
            h: h.clone(),
            space,
            layer: nd.identity.binding.layer.get(),
            role: nd.identity.binding.role.as_str(),
            reflexive,
        });
    let mut stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(control, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let control_file = a.dir.join(CONTROL_FILE);
    std::fs::write(&control_file, format!("{control_addr}\n"))
        .with_context(|| format!("writing {}", control_file.display()))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {me_id} {}", h.local_addr())?;
        writeln!(out, "control http://{control_addr}")?;
        out.flush()?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut rejoin_at: Option<tokio::time::Instant> = None;
    let mut next_boot = 0usize;
    loop {
        let rejoin = async {
            match rejoin_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = peer.events.recv() => match ev {
                Some(Event::Joined { successor }) => info!(%successor, "joined the ring"),
                Some(Event::JoinFailed { reason }) => {
                    warn!("join failed: {reason}; retrying in 1 s");
                    rejoin_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
                Some(Event::PeerFailed { peer }) => info!(%peer, "peer failed"),
                Some(other) => info!(?other, "event"),
                None => break,
            },
            () = rejoin => {
                rejoin_at = None;
                if bootstrap.is_empty() {
                    h.call(|n, now| n.create(now)).await?;
                } else {
                    next_boot = (next_boot + 1) % bootstrap.len();
                    let b = bootstrap[next_boot];
                    info!(via = %b.id, "rejoining");
                    h.call(move |n, now| n.join(now, b)).await?;
                }
            }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT"); break; }
            _ = term.recv() => { info!("SIGTERM"); break; }
        }
    }
    let _ = std::fs::remove_file(&control_file);
    let _ = stop_tx.send(true);
    if let Err(e) = h.shutdown().await {
        error!("shutdown: {e}");
    }
    let _ = peer.task.await;
    let _ = http.await;
    Ok(())
}

/// Learn the server-reflexive address from `--stun` (else node.json's `stun_urls`); logged.
/// A failure is logged and leaves the peer without one (it still runs).
async fn learn_reflexive(flags: &[SocketAddr], urls: &[String]) -> Option<nat::Reflexive> {
    let servers: Vec<SocketAddr> = if flags.is_empty() {
        urls.iter()
            .filter_map(|u| {
                let a = nat::stun_server_addr(u);
                if a.is_none() {
                    warn!("ignoring STUN URL {u:?} (want stun:IP:PORT)");
                }
                a
            })
            .collect()
    } else {
        flags.to_vec()
    };
    if servers.is_empty() {
        return None;
    }
    let opts = nat::BindingOptions::quick(Duration::from_secs(3));
    match nat::discover_reflexive(&servers, &opts).await {
        Ok(r) => Some(r),
        Err(e) => {
            warn!("no server-reflexive address: {e}");
            None
        }
    }
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(seed)
}

#[derive(Clone)]
struct Ctl {
    h: Handle<ChordNode>,
    space: IdSpace,
    layer: u8,
    role: &'static str,
    reflexive: Option<nat::Reflexive>,
}

fn contact_json(c: &Contact) -> Value {
    json!({ "id": c.id.to_string(), "addr": c.addr })
}

fn err(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, Json(json!({ "error": msg.to_string() }))).into_response()
}

async fn status(State(c): State<Ctl>) -> Response {
    match c.h.ring_status().await {
        Ok(s) => Json(json!({
            "node": s.me.id.to_string(),
            "addr": s.me.addr,
            "layer": c.layer,
            "role": c.role,
            "active": s.active,
            "predecessor": s.predecessor.as_ref().map(contact_json),
            "successors": s.successors.iter().map(contact_json).collect::<Vec<_>>(),
            "fingers": s.fingers.iter().map(contact_json).collect::<Vec<_>>(),
            "records": s.records,
            "reflexive": c.reflexive.map(|r| json!({
                "server": r.server, "local": r.local, "reflexive": r.reflexive,
                "behind_nat": r.behind_nat(),
            })),
            "stats": c.h.stats(),
        }))
        .into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn lookup(State(c): State<Ctl>, UrlPath(key): UrlPath<String>) -> Response {
    let Ok(v) = key.parse::<u128>() else {
        return err(StatusCode::BAD_REQUEST, "key must be a decimal integer");
    };
    let Ok(key) = c.space.id(v) else {
        return err(StatusCode::BAD_REQUEST, "key outside the ID space");
    };
    match c.h.lookup(key).await {
        Ok(f) => Json(json!({
            "key": f.key.to_string(),
            "owner": contact_json(&f.owner),
            "path": f.path.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "hops": f.path.len().saturating_sub(1),
            "latency_us": f.latency.as_micros() as u64,
            "attempts": f.attempts,
        }))
        .into_response(),
        Err(e) => err(StatusCode::GATEWAY_TIMEOUT, e),
    }
}
