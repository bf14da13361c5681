//! `p2psip peer`: a peer of the secure overlay on mutual TLS, run from the node directory
//! `p2psip enroll` wrote. Its role (peer, CSP, CSPG) and layer are the ones its E&A
//! certificate binds; it joins its layer's Chord ring, learns the CSP/CSPG directory and
//! the members' certificate keys from E&A (`GET /v1/directory`, or `--directory`), asks the
//! SOS to rank routes and reports evidence to it, places calls on request and answers calls
//! for it. A local control HTTP endpoint serves `p2psip status`, `lookup` and `call`.

mod calls;
mod control;
mod db;
pub(crate) mod directory;

use super::say;
use anyhow::{Context, bail};
use net::{
    Handle, KeyBook, Limits, Membership, NetConfig, NodeDir, PeerRuntime, RevocationPolicy,
    SosCounters, SosLink,
};
use overlay::secure::{Routing, SecureConfig, SecureEvent, SecureNode};
use overlay::{ChordConfig, Contact, Event, IdSpace, NodeId};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::{debug, error, info, warn};

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
///
/// Membership: the peer builds its CSP/CSPG directory and the key book it checks
/// PingRequest signatures with from the E&A directory (`GET /v1/directory` of the server in
/// node.json; every chain is checked against the CA and the CRL), refreshed every
/// `--directory-refresh-s`. `--directory FILE|URL` reads it elsewhere (same JSON:
/// `{"members":[{"addr":"IP:PORT"|null,"chain":"PEM"}]}`). CSPs and CSPGs are reached at the
/// address they gave at enrollment (`p2psip enroll --listen`), so start them listening there.
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
    /// While the ring around this peer is quiet, stabilize and fix-fingers slow down,
    /// doubling per quiet round up to this interval (ms); any change near the peer brings
    /// them back to --stabilize-ms / --fix-fingers-ms at once. 0: never slow down.
    #[arg(long, default_value_t = 16000)]
    quiet_maintenance_max_ms: u64,
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
    /// [default: stun_urls from node.json]. Behind a NAT (reflexive ≠ local) and without
    /// --advertise, the peer runs outbound-only through the first bootstrap peer.
    #[arg(long)]
    stun: Vec<SocketAddr>,
    /// Run outbound-only (behind NAT: accept no connections) with this public peer as the
    /// relay others reach us through, NODE-ID@ADDR.
    #[arg(long, value_parser = parse_contact)]
    relay: Option<Contact>,
    /// Run outbound-only with the first bootstrap peer as the relay.
    #[arg(long)]
    outbound_only: bool,
    /// Outbound-only: keepalive interval on the link to the relay, seconds (holds the NAT
    /// binding and the link's idle timer).
    #[arg(long, default_value_t = 15)]
    keepalive_s: u64,
    /// Run ICE for every call placed or answered here (candidates in the SDP of the INVITE
    /// and the 200 OK; host and, with a STUN server, server-reflexive); the chosen pair is
    /// logged and reported.
    #[arg(long)]
    ice: bool,
    /// Membership directory, URL or file [default: GET /v1/directory of the E&A server in
    /// node.json].
    #[arg(long)]
    directory: Option<String>,
    /// Directory refresh interval, seconds (new members, new CSP addresses).
    #[arg(long, default_value_t = 30)]
    directory_refresh_s: u64,
    /// SOS base URL for route ranking and reports [default: sos_url in node.json]. Without
    /// one the callee takes the shortest route and evidence is dropped.
    #[arg(long)]
    sos: Option<String>,
    /// Run without an SOS even if node.json names one.
    #[arg(long, conflicts_with = "sos")]
    no_sos: bool,
    /// Caller's wait for Ringing before one retry, then failure, ms.
    #[arg(long, default_value_t = 3000)]
    call_timeout_ms: u64,
    /// Callee's wait for the SOS ranking before taking the shortest route, ms.
    #[arg(long, default_value_t = 500)]
    sos_timeout_ms: u64,
    /// PingRequest copies the CSP sends per call.
    #[arg(long, default_value_t = 4)]
    fanout: usize,
    /// Run the SIP front-end (registrar + proxy, UDP and TCP on the same port) for local SIP
    /// phones on this address: REGISTER stores a signed AoR registration in the overlay,
    /// INVITE to `sip:user@DOMAIN` finds it and takes the secure call flow.
    #[arg(long)]
    sip_listen: Option<SocketAddr>,
    /// SIP domain of the AoRs the front-end serves.
    #[arg(long, default_value = "p2psip.test", requires = "sip_listen")]
    sip_domain: String,
    /// Require SIP digest authentication (RFC 3261 §22, MD5 and SHA-256) of REGISTER and
    /// new INVITEs at the front-end. FILE has one `user:password` or `user:HA1` per line
    /// (HA1 = H(user:DOMAIN:password) in hex: 32 digits for MD5, 64 for SHA-256; `#`
    /// comments). Without it anyone who reaches `--sip-listen` may register and call.
    #[arg(long, value_name = "FILE", requires = "sip_listen")]
    sip_credentials: Option<PathBuf>,
    /// Digest algorithms offered with `--sip-credentials`, most preferred first (one
    /// WWW-Authenticate each). Old UAs that read only the first challenge and know only MD5
    /// (SIPp 3.6) need `MD5,SHA-256`.
    #[arg(
        long,
        value_name = "ALGS",
        default_value = "SHA-256,MD5",
        requires = "sip_credentials"
    )]
    sip_digest: String,
    /// How often the node's state (contact cache, records, a CSP's held requests) is written
    /// to the peer database (`peer.db` in the node directory), ms.
    #[arg(long, default_value_t = 2000)]
    db_sync_ms: u64,
    /// How long `p2psip call` waits for each answer of the callee in the dialog, ms.
    #[arg(long, default_value_t = 5000)]
    dialog_timeout_ms: u64,
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
    let arcs = directory::arcs_of(space, &nd.config.overlay)?;
    let layer = nd.identity.binding.layer;
    if arcs.layer_of(me_id) != layer {
        bail!(
            "the certificate puts node {me_id} in layer {} but its ID lies in layer {}",
            layer.get(),
            arcs.layer_of(me_id).get()
        );
    }
    let role = nd.identity.binding.role;
    let mut cc = ChordConfig::new(space);
    cc.stabilize_every = ms(a.stabilize_ms);
    cc.fix_fingers_every = ms(a.fix_fingers_ms);
    let quiet_max = (a.quiet_maintenance_max_ms > 0).then(|| ms(a.quiet_maintenance_max_ms));
    cc.stabilize_max = quiet_max;
    cc.fix_fingers_max = quiet_max;
    cc.check_predecessor_every = ms(a.check_pred_ms);
    cc.ring_check_every = ms(a.ring_check_ms);
    cc.rpc_timeout = ms(a.rpc_timeout_ms);
    cc.lookup_timeout = ms(a.lookup_timeout_ms);
    let lookup_wait = cc.lookup_timeout * 4 + Duration::from_secs(2);
    let cc = Arc::new(cc);
    let secure = Arc::new(SecureConfig {
        fanout: a.fanout.clamp(1, 16),
        call_timeout: ms(a.call_timeout_ms.max(100)),
        sos_timeout: ms(a.sos_timeout_ms),
        ..SecureConfig::default()
    });

    // Membership: the E&A directory (or --directory), checked chain by chain.
    let dir_source = a
        .directory
        .clone()
        .or_else(|| directory::default_source(&nd.config.enroll_server));
    let members = Arc::new(AtomicUsize::new(0));
    let keys = KeyBook::new();
    let membership = match &dir_source {
        Some(src) => match directory::load(&nd.trust, arcs, src, &keys).await {
            Ok(m) => m,
            Err(e) => {
                warn!("{e:#}; starting without a directory (calls fail until it loads)");
                empty_membership(arcs, &keys)
            }
        },
        None => {
            warn!("no directory source (no --directory, no enroll_server in node.json)");
            empty_membership(arcs, &keys)
        }
    };
    log_membership(&membership, &members);
    let ctx = membership.context(secure.clone());

    // Rings are per layer: join through members of our own layer only.
    let given: Vec<Contact> = if a.bootstrap.is_empty() {
        nd.config
            .bootstrap
            .iter()
            .map(|b| Contact::new(b.node_id, b.addr))
            .collect()
    } else {
        a.bootstrap.clone()
    };
    let bootstrap: Vec<Contact> = given
        .iter()
        .copied()
        .filter(|c| c.id != me_id && arcs.layer_of(c.id) == layer)
        .collect();
    if !a.create && bootstrap.is_empty() {
        bail!(
            "no bootstrap peer of layer {} (none given with --bootstrap, none in node.json): pass --create to start the layer's ring",
            layer.get()
        );
    }

    let reflexive = learn_reflexive(&a.stun, &nd.config.stun_urls).await;
    let behind_nat = reflexive.is_some_and(|r| r.behind_nat()) && a.advertise.is_none();
    let relay = match a.relay {
        Some(r) => Some(r),
        None if a.outbound_only || behind_nat => match bootstrap.first() {
            Some(b) => Some(*b),
            None => bail!("outbound-only (behind NAT) needs a relay: pass --relay or --bootstrap"),
        },
        None => None,
    };
    if let Some(r) = relay {
        info!(relay = %r.id, addr = ?r.addr, behind_nat, "outbound-only: reachable through the relay");
    }
    let nat_status = serde_json::json!({
        "reflexive": reflexive.map(|r| serde_json::json!({
            "server": r.server, "local": r.local, "reflexive": r.reflexive,
            "behind_nat": r.behind_nat(),
        })),
        "relay": relay.map(|r| serde_json::json!({ "id": r.id.to_string(), "addr": r.addr })),
    });

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
    let signer = net::CertSigner::from_identity(&nd.identity).context("the certificate key")?;
    let PeerRuntime {
        handle: h,
        events,
        task,
    } = {
        let make = move |me| net::secure_node(signer, role, me, cc, ctx, Routing::Secure, seed);
        match relay {
            Some(r) => {
                let every = Duration::from_secs(a.keepalive_s.max(1));
                PeerRuntime::start_outbound_only(cfg, r, every, make).await
            }
            None => PeerRuntime::start(cfg, make).await,
        }
    }
    .context("starting the peer")?;
    // The database first: a warm cache and the records before joining.
    let (db, warm) = db::open_and_warm(&h, &a.dir, arcs, &nd.identity).await?;
    // Store SIP registrations for others (signature by the owner's certificate key, owner
    // rule, freshness); without a validator a peer stores nothing for others.
    net::install_registration_validator(&h).await?;
    let (create, boots) = (a.create, bootstrap.clone());
    h.call(move |n, now| {
        let c = n.chord_mut();
        if create {
            c.create(now);
        }
        for b in boots.iter().skip(1) {
            c.add_bootstrap(*b);
        }
        if let Some(first) = boots.first().copied() {
            if create {
                c.add_bootstrap(first);
            } else {
                c.join(now, first);
            }
        }
    })
    .await?;

    // SOS: rankings and reports off the loop.
    let sos_url = if a.no_sos {
        None
    } else {
        a.sos.clone().or_else(|| nd.config.sos_url.clone())
    };
    let sos_counters = Arc::new(SosCounters::default());
    let link = match &sos_url {
        Some(url) => {
            let client = sos::SosClient::new(url).with_context(|| format!("SOS URL {url}"))?;
            Some(
                SosLink::new(client, &nd.identity, sos_counters.clone())
                    .context("the certificate key for SOS reports")?,
            )
        }
        None => {
            warn!("no SOS: callees take the shortest route, evidence is dropped");
            None
        }
    };
    let (app_tx, mut app_rx) = tokio::sync::mpsc::channel::<SecureEvent>(1024);
    tokio::spawn(net::run_events(h.clone(), events, link, Some(app_tx)));

    // Directory refresh.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(src) = dir_source.clone() {
        let (h, trust, secure, members, keys, mut stop) = (
            h.clone(),
            nd.trust.clone(),
            secure.clone(),
            members.clone(),
            keys.clone(),
            stop_rx.clone(),
        );
        let every = Duration::from_secs(a.directory_refresh_s.max(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match directory::load(&trust, arcs, &src, &keys).await {
                    Ok(m) => {
                        log_membership(&m, &members);
                        let ctx = m.context(secure.clone());
                        if h.call(move |n, _| n.set_context(ctx)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => warn!("directory refresh: {e:#}"),
                }
            }
        });
    }

    let mut shared = calls::Shared::new(db.clone());
    if a.ice {
        let stun = reflexive.map(|r| r.server);
        shared.ice = Some(nat::IceOptions {
            stun,
            gather_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            ..nat::IceOptions::default()
        });
    }
    let shared = Arc::new(shared);
    // Periodic sync of the node's state into the database.
    {
        let (h, db, mut stop) = (h.clone(), db.clone(), stop_rx.clone());
        let every = ms(a.db_sync_ms.max(100));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let db = db.clone();
                if h.call(move |n, now| db::sync(&db, n, now)).await.is_err() {
                    return;
                }
            }
        });
    }
    let control = tokio::net::TcpListener::bind(a.control)
        .await
        .with_context(|| format!("binding the control endpoint {}", a.control))?;
    let control_addr = control.local_addr()?;
    let app = control::router(control::Ctl {
        h: h.clone(),
        space,
        layer: layer.get(),
        role: role.as_str(),
        shared: shared.clone(),
        sos: sos_url.as_ref().map(|_| sos_counters.clone()),
        sos_url: sos_url.clone(),
        members: members.clone(),
        lookup_wait,
        dialog_wait: ms(a.dialog_timeout_ms.max(100)),
        nat: nat_status,
        extra: {
            let db = db.clone();
            Arc::new(move || db::status(&db, &warm))
        },
    });
    let mut stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(control, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    // The SIP front-end (registrar + proxy for local phones) over this peer.
    let (fe_tx, fe) = match a.sip_listen {
        Some(listen) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<SecureEvent>(4096);
            let signer = net::CertSigner::from_identity(&nd.identity)?;
            let verifier: Arc<dyn overlay::secure::SigVerifier> = keys.clone();
            let domain = a.sip_domain.clone();
            let auth = super::sip_frontends::load_auth(
                a.sip_credentials.as_deref(),
                &domain,
                &a.sip_digest,
            )?;
            let unix_offset_ms = db::unix_ms();
            let fe = sip::driver::start(
                listen,
                sip::driver::DriverLimits::default(),
                move |local| {
                    let mut cfg = sip::FrontEndConfig::new(&domain, local);
                    cfg.unix_offset_ms = unix_offset_ms;
                    cfg.auth = auth;
                    sip::FrontEnd::new(cfg, me_id, Box::new(signer), verifier)
                },
                net::RuntimeOverlay::new(h.clone(), space, rx),
            )
            .await
            .with_context(|| format!("starting the SIP front-end on {listen}"))?;
            (Some(tx), Some(fe))
        }
        None => (None, None),
    };
    let control_file = a.dir.join(CONTROL_FILE);
    std::fs::write(&control_file, format!("{control_addr}\n"))
        .with_context(|| format!("writing {}", control_file.display()))?;
    {
        let mut banner = format!(
            "listening {me_id} {}\ncontrol http://{control_addr}\nsecure {} layer {} members {} sos {}",
            h.local_addr(),
            role.as_str(),
            layer.get(),
            members.load(Ordering::Relaxed),
            sos_url.as_deref().unwrap_or("none")
        );
        if let Some(fe) = &fe {
            banner += &format!("\nsip udp+tcp {} domain {}", fe.local, a.sip_domain);
        }
        say(format_args!("{banner}"));
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
            ev = app_rx.recv() => match ev {
                Some(ev) => {
                    if let Some(again) = on_event(&h, &shared, me_id, fe_tx.as_ref(), ev).await {
                        rejoin_at.get_or_insert(tokio::time::Instant::now() + again);
                    }
                }
                None => break,
            },
            () = rejoin => {
                rejoin_at = None;
                if bootstrap.is_empty() {
                    h.call(|n, now| n.chord_mut().create(now)).await?;
                } else {
                    next_boot = (next_boot + 1) % bootstrap.len();
                    let b = bootstrap[next_boot];
                    info!(via = %b.id, "rejoining");
                    h.call(move |n, now| n.chord_mut().join(now, b)).await?;
                }
            }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT"); break; }
            _ = term.recv() => { info!("SIGTERM"); break; }
        }
    }
    let _ = std::fs::remove_file(&control_file);
    let _ = stop_tx.send(true);
    if let Some(fe) = fe {
        fe.shutdown().await;
    }
    let handed_over = {
        let db = db.clone();
        h.call(move |n, now| {
            db::sync(&db, n, now);
            let c = n.chord();
            c.is_active() && c.successor().is_some_and(|s| s.id != c.id())
        })
        .await
        .unwrap_or(false)
    };
    if let Err(e) = h.shutdown().await {
        error!("shutdown: {e}");
    }
    let _ = task.await;
    db::close(db, handed_over).await;
    let _ = http.await;
    Ok(())
}

fn empty_membership(arcs: overlay::secure::LayerArcs, keys: &Arc<KeyBook>) -> Membership {
    let mut m = Membership::new(arcs);
    m.keys = keys.clone();
    m
}

fn log_membership(m: &Membership, members: &AtomicUsize) {
    let n = m.keys.len();
    members.store(n, Ordering::Relaxed);
    for (i, why) in &m.refused {
        warn!("directory member {i} refused: {why}");
    }
    info!(
        members = n,
        csps = ?m.directory.csps.iter().map(Vec::len).collect::<Vec<_>>(),
        cspgs = ?m.directory.cspgs.iter().map(Vec::len).collect::<Vec<_>>(),
        "directory loaded"
    );
}

/// Handle one application event of the secure node; returns a delay after which to rejoin
/// when the join failed.
async fn on_event(
    h: &Handle<SecureNode>,
    shared: &Arc<calls::Shared>,
    me: NodeId,
    fe: Option<&tokio::sync::mpsc::Sender<SecureEvent>>,
    ev: SecureEvent,
) -> Option<Duration> {
    match ev {
        SecureEvent::Chord(Event::Joined { successor }) => info!(%successor, "joined the ring"),
        SecureEvent::Chord(Event::JoinFailed { reason }) => {
            warn!("join failed: {reason}; retrying in 1 s");
            return Some(Duration::from_secs(1));
        }
        SecureEvent::Chord(Event::PeerFailed { peer }) => info!(%peer, "peer failed"),
        SecureEvent::Chord(
            ev @ (Event::LookupDone { lookup, .. } | Event::LookupFailed { lookup, .. }),
        ) => {
            let waiter = calls::lock(&shared.lookups).remove(&lookup);
            if let Some(w) = waiter {
                let _ = w.send(ev);
            }
        }
        SecureEvent::IncomingCall {
            caller,
            call,
            invite,
        } => {
            let (db, ev) = (
                shared.db.clone(),
                SecureEvent::IncomingCall {
                    caller,
                    call,
                    invite: invite.clone(),
                },
            );
            let _ = h.call(move |_, now| db::on_event(&db, now, &ev)).await;
            match fe {
                // The front-end forwards it to the registered phone.
                Some(fe) => to_frontend(
                    fe,
                    SecureEvent::IncomingCall {
                        caller,
                        call,
                        invite,
                    },
                ),
                None => {
                    // Answering may gather ICE candidates for seconds: off the event loop,
                    // so lookups and other calls' messages keep flowing (up to a bound).
                    if shared.answering.fetch_add(1, Ordering::Relaxed) < calls::MAX_ANSWERING {
                        let (h, shared) = (h.clone(), shared.clone());
                        tokio::spawn(async move {
                            calls::answer(&h, &shared, caller, call, invite).await;
                            shared.answering.fetch_sub(1, Ordering::Relaxed);
                        });
                    } else {
                        shared.answering.fetch_sub(1, Ordering::Relaxed);
                        calls::answer(h, shared, caller, call, invite).await;
                    }
                }
            }
        }
        SecureEvent::Dialog { caller, call, body } if caller == me => {
            if let (Some(body), Some(fe)) = (calls::on_outgoing_dialog(shared, call, body), fe) {
                to_frontend(fe, SecureEvent::Dialog { caller, call, body });
            }
        }
        SecureEvent::Dialog { caller, call, body } => match fe {
            Some(fe) if !calls::is_answered(shared, caller, call) => {
                to_frontend(fe, SecureEvent::Dialog { caller, call, body })
            }
            _ => calls::on_incoming_dialog(h, shared, caller, call, body).await,
        },
        ev @ (SecureEvent::CallRinging { .. } | SecureEvent::CallFailed { .. }) => {
            // Calls the front-end placed (the control endpoint's calls wait for theirs).
            let (db, ev2) = (shared.db.clone(), ev.clone());
            let _ = h.call(move |_, now| db::on_event(&db, now, &ev2)).await;
            if let Some(fe) = fe {
                to_frontend(fe, ev);
            }
        }
        other => debug!(?other, "event"),
    }
    None
}

fn to_frontend(fe: &tokio::sync::mpsc::Sender<SecureEvent>, ev: SecureEvent) {
    if fe.try_send(ev).is_err() {
        warn!("SIP front-end busy: overlay event dropped");
    }
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
