//! The running peer: [`Node::start`] loads the node directory, checks revocation, learns
//! the membership, starts the TLS runtime with the secure node, warms it from `peer.db`,
//! joins its layer's ring and serves the control endpoint (and the SIP front-end);
//! [`Node::run_until`] handles the node's events until the shutdown future resolves, then
//! leaves the ring gracefully and writes the last state.

use crate::NodeCore;
use crate::calls;
use crate::config::{Config, CrlPolicy, JoinMode, NodeSource, SosChoice};
use crate::control;
use crate::db;
use crate::directory;
use crate::error::NodeError;
use crate::media;
use net::{
    Handle, Instrumented, KeyBook, Membership, NetConfig, NodeDir, RevocationPolicy, SosCounters,
    SosLink,
};
use overlay::secure::{SecureConfig, SecureEvent};
use overlay::{ChordConfig, Contact, Event, IdSpace, NodeId};
use sip::{PeerCore, PeerEvent};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// File in the node directory holding the running peer's control address.
pub const CONTROL_FILE: &str = "control.addr";

/// The control address the peer running from the node directory `dir` wrote there
/// ([`CONTROL_FILE`]), for the tools that talk to it (`p2psip call`, `lookup`, `status`).
pub fn control_addr_of(dir: &std::path::Path) -> Result<SocketAddr, NodeError> {
    let file = dir.join(CONTROL_FILE);
    let text = std::fs::read_to_string(&file).map_err(NodeError::io(format!(
        "reading {} (is the peer running?)",
        file.display()
    )))?;
    text.trim().parse().map_err(|e| NodeError::Io {
        what: format!("bad address in {}", file.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Who the started peer is and where it can be reached (what `p2psip peer` prints).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Node-ID from the certificate.
    pub id: NodeId,
    /// TLS address it listens on.
    pub addr: SocketAddr,
    /// Local control endpoint, if it serves one.
    pub control: Option<SocketAddr>,
    /// Role from the certificate.
    pub role: enroll::Role,
    /// Layer (1..=3) from the certificate.
    pub layer: u8,
    /// Members in the directory at start.
    pub members: usize,
    /// The SOS in use.
    pub sos_url: Option<String>,
    /// The SIP front-end's address (UDP and TCP) and domain.
    pub sip: Option<(SocketAddr, String)>,
}

impl NodeInfo {
    /// The banner `p2psip peer` prints once the peer runs; scripts read its lines.
    pub fn banner(&self) -> String {
        let control = match self.control {
            Some(c) => format!("http://{c}"),
            None => "none".into(),
        };
        let mut banner = format!(
            "listening {} {}\ncontrol {control}\nsecure {} layer {} members {} sos {}",
            self.id,
            self.addr,
            self.role.as_str(),
            self.layer,
            self.members,
            self.sos_url.as_deref().unwrap_or("none")
        );
        if let Some((addr, domain)) = &self.sip {
            banner += &format!("\nsip udp+tcp {addr} domain {domain}");
        }
        banner
    }
}

/// Start a peer from `config` and run it until `shutdown` resolves (or the runtime stops),
/// then leave the ring gracefully. The whole life of `p2psip peer`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let node = Node::start(config).await?;
    service::output::say(format_args!("{}", node.info().banner()));
    let info = node.info();
    service::notify::ready(&format!(
        "peer {} ({} in layer {}) on {}",
        info.id,
        info.role.as_str(),
        info.layer,
        info.addr
    ));
    let stopping = async {
        shutdown.await;
        service::notify::stopping();
    };
    node.run_until(stopping).await
}

/// A running peer. Ask it with [`Node::status`], [`Node::lookup`] and [`Node::call`] (the
/// control endpoint serves the same), stop it with [`Node::run_until`] or [`Node::stop`].
pub struct Node {
    info: NodeInfo,
    ctl: control::Ctl,
    stop_tx: watch::Sender<bool>,
    events: JoinHandle<Result<(), NodeError>>,
    runtime: JoinHandle<()>,
    db: db::Db,
    sip: Option<sip::driver::SipSockets>,
    http: Option<JoinHandle<()>>,
    control_file: Option<PathBuf>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("info", &self.info).finish()
    }
}

impl Node {
    /// Who the peer is and where it listens.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The peer's runtime: run work on its core (ring state, calls, the joins of a
    /// [`JoinMode::Manual`] peer), its counters, a hard stop for fault tests.
    pub fn handle(&self) -> &Handle<NodeCore> {
        &self.ctl.h
    }

    /// The peer's ring state, counters, calls and database, as `GET /status` shows them.
    pub async fn status(&self) -> Result<serde_json::Value, crate::ApiError> {
        self.ctl.status().await
    }

    /// Who owns `key` (decimal, inside the ID space), as `GET /lookup/{key}` answers.
    pub async fn lookup(&self, key: &str) -> Result<serde_json::Value, crate::ApiError> {
        self.ctl.lookup(key).await
    }

    /// Place a call and run it to its end, as `POST /call` does.
    pub async fn call(
        &self,
        req: calls::CallRequest,
    ) -> Result<calls::CallReport, crate::ApiError> {
        self.ctl.call(req).await
    }

    /// Serve until `shutdown` resolves or the peer's runtime stops, then stop gracefully.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let ended = tokio::select! {
            () = shutdown => None,
            r = &mut self.events => Some(r),
        };
        let result = match ended {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(NodeError::Io {
                what: "the event loop".into(),
                source: std::io::Error::other(e),
            }),
        };
        self.finish().await;
        result
    }

    /// Stop now: leave the ring gracefully and write the last state.
    pub async fn stop(self) -> Result<(), NodeError> {
        self.run_until(std::future::ready(())).await
    }

    async fn finish(self) {
        if let Some(file) = &self.control_file {
            let _ = std::fs::remove_file(file);
        }
        let _ = self.stop_tx.send(true);
        self.events.abort();
        if let Some(sip) = self.sip {
            sip.shutdown().await;
        }
        let h = self.ctl.h.clone();
        let handed_over = {
            let db = self.db.clone();
            h.call(move |n, now| {
                let n = n.node_at(now);
                db::sync(&db, n, now);
                let c = n.chord();
                c.is_active() && c.successor().is_some_and(|s| s.id != c.id())
            })
            .await
            .unwrap_or(false)
        };
        // A runtime stopped already (a hard stop) has nothing left to say.
        let stopped = self.runtime.is_finished();
        if let Err(e) = h.shutdown().await
            && !stopped
        {
            error!("shutdown: {e}");
        }
        let _ = self.runtime.await;
        db::close(self.db, handed_over).await;
        if let Some(http) = self.http {
            let _ = http.await;
        }
    }

    /// Load the node directory and start the peer (see the module doc).
    pub async fn start(a: Config) -> Result<Node, NodeError> {
        let (nd, home) = enrollment(&a)?;
        let me_id = nd.identity.node_id;
        // Revocation: load the CRL before accepting anyone.
        let crl_source = load_revocation(&a, &nd).await?;
        let (space, arcs) = overlay_of(&nd)?;
        let (layer, role) = (nd.identity.binding.layer, nd.identity.binding.role);
        let mut cc = chord_config(&a.chord, space, role);
        // A layer ring's fingers spread over the layer's arc (see `overlay::RingSpan`); the
        // flat ring of plain Chord spans the whole circle.
        if a.routing == overlay::secure::Routing::Secure {
            cc.arc = Some(arcs.arc(layer));
        }
        let lookup_wait = cc.lookup_timeout * 4 + Duration::from_secs(2);
        let cc = Arc::new(cc);
        let secure = Arc::new(SecureConfig {
            fanout: a.secure.fanout.clamp(1, 16),
            call_timeout: a.secure.call_timeout.max(Duration::from_millis(100)),
            ..a.secure.clone()
        });

        // Membership: given, else the E&A directory (or --directory), checked chain by
        // chain and refreshed.
        let members = Arc::new(AtomicUsize::new(0));
        let (membership, dir_source) = membership(&a, &nd, arcs).await;
        let keys = membership.keys.clone();
        log_membership(&membership, &members);
        let ctx = membership.context(secure.clone());

        // Rings are per layer: join through members of our own layer only.
        let bootstrap = match a.join {
            JoinMode::AtStart => bootstrap_of(&a, &nd, arcs)?,
            JoinMode::Manual => Vec::new(),
        };

        let (reflexive, relay, nat_status) = reachability(&a, &nd, &bootstrap).await?;

        let listen = a
            .listen
            .or(nd.config.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let cfg = NetConfig {
            listen,
            advertise: a.advertise,
            identity: nd.identity.clone(),
            trust: nd.trust.clone(),
            crl_refresh: crl_source.map(|s| (s, a.crl_refresh.max(Duration::from_secs(1)))),
            limits: a.limits.clone(),
        };
        let kinds = a.kind_log.clone().unwrap_or_default();
        let make = core_maker(&a, &nd, cc, ctx, kinds.clone())?;
        // SOS: rankings and reports off the loop.
        let (sos_url, sos_counters, sos) = sos_link(&a.sos, &nd)?;
        let parts = crate::Launch {
            net: cfg,
            relay: relay.map(|r| (r, a.keepalive.max(Duration::from_secs(1)))),
            sos,
        };
        let crate::Running {
            handle: h,
            events: app_rx,
            task,
        } = crate::launch(parts, make)
            .await
            .map_err(NodeError::net("starting the peer"))?;
        // The database first: a warm cache and the records before joining.
        let (db, warm) = match &home {
            Some(dir) => db::open_and_warm(&h, dir, arcs, &nd.identity).await?,
            None => (db::none(), db::WarmReport::default()),
        };
        // Store SIP registrations for others (signature by the owner's certificate key,
        // owner rule, freshness); without a validator a peer stores nothing for others.
        crate::phones::install_registration_validator(&h)
            .await
            .map_err(NodeError::net("installing the registration validator"))?;
        if a.join == JoinMode::AtStart {
            join(&h, a.create, bootstrap.clone()).await?;
        }

        // Directory refresh.
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(src) = dir_source {
            let every = a.directory_refresh.max(Duration::from_secs(1));
            let refresh = DirectoryRefresh {
                h: h.clone(),
                trust: nd.trust.clone(),
                arcs,
                secure: secure.clone(),
                members: members.clone(),
                keys: keys.clone(),
                source: src,
            };
            spawn_periodic(every, stop_rx.clone(), move || refresh.clone().run());
        }

        let shared = Arc::new(calls_shared(&h, a.ice, db.clone(), reflexive).await?);
        // Periodic sync of the node's state into the database.
        if home.is_some() {
            let (h, db) = (h.clone(), db.clone());
            let every = a.db_sync.max(Duration::from_millis(100));
            spawn_periodic(every, stop_rx.clone(), move || {
                let (h, db) = (h.clone(), db.clone());
                async move {
                    h.call(move |n, now| db::sync(&db, n.node_at(now), now))
                        .await
                        .is_ok()
                }
            });
        }
        let ctl = control::Ctl {
            h: h.clone(),
            space,
            layer: layer.get(),
            role: role.as_str(),
            shared: shared.clone(),
            sos: sos_url.as_ref().map(|_| sos_counters.clone()),
            sos_url: sos_url.clone(),
            members: members.clone(),
            creator: a.create,
            lookup_wait,
            dialog_wait: a.dialog_timeout.max(Duration::from_millis(100)),
            nat: nat_status,
            kinds,
            extra: {
                let db = db.clone();
                Arc::new(move || db::status(&db, &warm))
            },
        };
        let (control_addr, http) = match a.control {
            Some(bind) => {
                let (addr, http) = serve_control(bind, ctl.clone(), stop_rx.clone()).await?;
                (Some(addr), Some(http))
            }
            None => (None, None),
        };
        // The SIP front-end for local phones, inside the core; its sockets move the bytes.
        let sip_sockets = match &a.sip {
            Some(sc) => {
                let (adv, overlay, stop) = (a.advertise, h.local_addr(), stop_rx.clone());
                let anchor: Option<Box<dyn sip::media::MediaAnchor>> =
                    match sc.media.as_ref().and_then(|m| m.rtpengine) {
                        Some(ng) => Some(Box::new(
                            crate::rtpengine::RtpengineAnchor::new(ng, &me_id.to_string())
                                .map_err(|e| {
                                    NodeError::Config(format!("--media-rtpengine {ng}: {e}"))
                                })?,
                        )),
                        None => {
                            let media = media::for_phones(sc, adv, reflexive, overlay, stop);
                            if let Some(m) = &media {
                                let _ = shared.media.set(m.clone());
                            }
                            media.map(|m| Box::new(m) as Box<dyn sip::media::MediaAnchor>)
                        }
                    };
                Some(serve_phones(&h, sc, &nd, &keys, me_id, anchor).await?)
            }
            None => None,
        };
        let sip_out = sip_sockets.as_ref().map(|s| s.sender());
        let control_file = match (&home, control_addr) {
            (Some(dir), Some(addr)) => {
                let file = dir.join(CONTROL_FILE);
                std::fs::write(&file, format!("{addr}\n"))
                    .map_err(NodeError::io(format!("writing {}", file.display())))?;
                Some(file)
            }
            _ => None,
        };
        let info = NodeInfo {
            id: me_id,
            addr: h.local_addr(),
            control: control_addr,
            role,
            layer: layer.get(),
            members: members.load(Ordering::Relaxed),
            sos_url,
            sip: sip_sockets
                .as_ref()
                .zip(a.sip.as_ref())
                .map(|(s, sc)| (s.local, sc.domain.clone())),
        };
        let rejoin = (a.join == JoinMode::AtStart).then_some(bootstrap);
        let events = tokio::spawn(event_loop(h.clone(), shared, sip_out, app_rx, rejoin));
        Ok(Node {
            info,
            ctl,
            stop_tx,
            events,
            runtime: task,
            db,
            sip: sip_sockets,
            http,
            control_file,
        })
    }
}

/// The enrollment `a` names, and the directory the peer keeps its files in (none for one
/// held in memory). Refuses a control endpoint off loopback.
fn enrollment(a: &Config) -> Result<(NodeDir, Option<PathBuf>), NodeError> {
    if a.control.is_some_and(|c| !c.ip().is_loopback()) {
        return Err(NodeError::Config(
            "--control must be a loopback address: the control endpoint is unauthenticated".into(),
        ));
    }
    let policy = match a.crl_policy {
        CrlPolicy::Require => RevocationPolicy::RequireCrl,
        CrlPolicy::AllowMissing => RevocationPolicy::AllowMissing,
    };
    // The node directory is also the home of peer.db and control.addr.
    match &a.node {
        NodeSource::Dir(dir) => {
            let nd = NodeDir::load(dir, policy).map_err(|source| NodeError::NodeDir {
                dir: dir.clone(),
                source,
            })?;
            Ok((nd, Some(dir.clone())))
        }
        NodeSource::Loaded(nd) => Ok(((**nd).clone(), None)),
    }
}

/// The overlay's ID space and layer arcs from node.json, checked against the layer the
/// certificate binds.
fn overlay_of(nd: &NodeDir) -> Result<(IdSpace, overlay::secure::LayerArcs), NodeError> {
    let space = IdSpace::new(nd.config.overlay.id_bits)
        .map_err(|e| NodeError::Config(format!("node.json: overlay id_bits: {e}")))?;
    let arcs = directory::arcs_of(space, &nd.config.overlay)?;
    let (me, layer) = (nd.identity.node_id, nd.identity.binding.layer);
    if arcs.layer_of(me) != layer {
        return Err(NodeError::Config(format!(
            "the certificate puts node {me} in layer {} but its ID lies in layer {}",
            layer.get(),
            arcs.layer_of(me).get()
        )));
    }
    Ok((space, arcs))
}

/// The membership at start, given or loaded from the directory, and the directory's source
/// for the refresh (none when given).
async fn membership(
    a: &Config,
    nd: &NodeDir,
    arcs: overlay::secure::LayerArcs,
) -> (Membership, Option<String>) {
    match &a.membership {
        Some(m) => (m.clone(), None),
        None => {
            let source = a
                .directory
                .clone()
                .or_else(|| directory::default_source(&nd.config.enroll_server));
            let m = load_membership(nd, arcs, source.as_deref(), &KeyBook::new()).await;
            (m, source)
        }
    }
}

/// What builds the peer's core once its contact is known: the secure node (signing with the
/// certificate key), its instrumentation and the own user agent.
fn core_maker(
    a: &Config,
    nd: &NodeDir,
    cc: Arc<ChordConfig>,
    ctx: overlay::secure::OverlayContext,
    log: Arc<net::KindLog>,
) -> Result<impl FnOnce(Contact) -> NodeCore + Send + 'static, NodeError> {
    let seed = match a.seed {
        Some(seed) => seed,
        None => random_seed()?,
    };
    let signer = net::CertSigner::from_identity(&nd.identity)
        .map_err(|e| NodeError::Config(format!("the certificate key: {e}")))?;
    let role = nd.identity.binding.role;
    let (routing, drop_forwarded, answer_calls) = (a.routing, a.drop_forwarded, a.answer_calls);
    Ok(move |me| {
        // The user agent's seed: fresh at every start, apart from the node's.
        let call_seed = seed
            .get(24..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes);
        let node = net::secure_node(signer, role, me, cc, ctx, routing, seed);
        PeerCore::new(Instrumented {
            node,
            drop_forwarded,
            log,
        })
        .with_call_seed(call_seed)
        .with_answering(answer_calls)
    })
}

/// Create the ring (`create`) or join it through the first of `bootstrap`; the others are
/// kept as further ways in.
async fn join(
    h: &Handle<NodeCore>,
    create: bool,
    bootstrap: Vec<Contact>,
) -> Result<(), NodeError> {
    h.call(move |n, now| {
        let c = n.node_at(now).chord_mut();
        if create {
            c.create(now);
        }
        for b in bootstrap.iter().skip(1) {
            c.add_bootstrap(*b);
        }
        if let Some(first) = bootstrap.first().copied() {
            if create {
                c.add_bootstrap(first);
            } else {
                c.join(now, first);
            }
        }
    })
    .await
    .map_err(NodeError::net("joining the ring"))
}

/// The periodic reload of the membership directory into a running peer.
#[derive(Clone)]
struct DirectoryRefresh {
    h: Handle<NodeCore>,
    trust: net::Trust,
    arcs: overlay::secure::LayerArcs,
    secure: Arc<SecureConfig>,
    members: Arc<AtomicUsize>,
    keys: Arc<KeyBook>,
    source: String,
}

impl DirectoryRefresh {
    /// One reload; `false` once the peer is gone. A directory that cannot be read leaves
    /// the membership as it was (logged).
    async fn run(self) -> bool {
        match directory::load(&self.trust, self.arcs, &self.source, &self.keys).await {
            Ok(m) => {
                log_membership(&m, &self.members);
                let ctx = m.context(self.secure);
                self.h
                    .call(move |n, now| n.node_at(now).set_context(ctx))
                    .await
                    .is_ok()
            }
            Err(e) => {
                warn!("directory refresh: {}", crate::error::chain(&e));
                true
            }
        }
    }
}

/// The calls' shared state; with `ice`, calls placed and answered here run ICE (with the
/// STUN server the reflexive address came from) and the application answers, not the core.
async fn calls_shared(
    h: &Handle<NodeCore>,
    ice: bool,
    db: db::Db,
    reflexive: Option<nat::Reflexive>,
) -> Result<calls::Shared, NodeError> {
    let mut shared = calls::Shared::new(db);
    if ice {
        shared.ice = Some(nat::IceOptions {
            stun: reflexive.map(|r| r.server),
            gather_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            ..nat::IceOptions::default()
        });
        // Answers carry per-call ICE candidates.
        h.call(|core, _| core.set_manual_answer(true))
            .await
            .map_err(NodeError::net("setting up ICE answers"))?;
    }
    Ok(shared)
}

/// The node's application events until the runtime stops: calls, lookups answered, and a
/// rejoin after a failed join.
/// `rejoin`: the peers to rejoin through (none: create the ring again); `None`: the
/// embedding program joins ([`JoinMode::Manual`]).
async fn event_loop(
    h: Handle<NodeCore>,
    shared: Arc<calls::Shared>,
    sip_out: Option<sip::driver::SipSender>,
    mut app_rx: mpsc::Receiver<Box<PeerEvent>>,
    rejoin: Option<Vec<Contact>>,
) -> Result<(), NodeError> {
    let mut rejoin_at: Option<tokio::time::Instant> = None;
    let mut next_boot = 0usize;
    loop {
        let rejoin_wait = async {
            match rejoin_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = app_rx.recv() => match ev {
                Some(ev) => {
                    if let Some(reason) = on_event(&h, &shared, sip_out.as_ref(), *ev).await {
                        if rejoin.is_some() {
                            warn!("join failed: {reason}; retrying in 1 s");
                            rejoin_at.get_or_insert(tokio::time::Instant::now() + REJOIN_AFTER);
                        } else {
                            debug!("join failed: {reason}");
                        }
                    }
                }
                None => return Ok(()),
            },
            () = rejoin_wait => {
                rejoin_at = None;
                let bootstrap = rejoin.as_deref().unwrap_or_default();
                let result = if bootstrap.is_empty() {
                    h.call(|n, now| n.node_at(now).chord_mut().create(now)).await
                } else {
                    next_boot = (next_boot + 1) % bootstrap.len();
                    let b = bootstrap[next_boot];
                    info!(via = %b.id, "rejoining");
                    h.call(move |n, now| n.node_at(now).chord_mut().join(now, b)).await
                };
                result.map_err(NodeError::net("rejoining"))?;
            }
        }
    }
}

/// Load the CRL (from `--crl`, else node.json) before accepting anyone; what the policy
/// says when there is none. Returns the CRL's source, for the periodic refresh.
async fn load_revocation(a: &Config, nd: &NodeDir) -> Result<Option<String>, NodeError> {
    let crl_source = a
        .crl
        .clone()
        .or_else(|| Some(nd.config.crl_url.clone()).filter(|s| !s.is_empty()));
    match (&crl_source, a.crl_policy) {
        (None, _) if nd.trust.crls.get().is_some() => {
            debug!("no CRL source: checking peers against the CRL already loaded")
        }
        (Some(src), _) => match net::load_crl(&nd.trust, &nd.identity, src).await {
            Ok(()) => info!("CRL loaded from {src}"),
            Err(e) => match a.crl_policy {
                CrlPolicy::Require => return Err(NodeError::Crl(e)),
                CrlPolicy::AllowMissing => {
                    warn!("{e}; accepting peers WITHOUT revocation checks until a CRL loads")
                }
            },
        },
        (None, CrlPolicy::Require) => {
            return Err(NodeError::Config(
                "no CRL source (no --crl, no crl_url in node.json)".into(),
            ));
        }
        (None, CrlPolicy::AllowMissing) => {
            warn!("no CRL source: accepting peers WITHOUT revocation checks")
        }
    }
    Ok(crl_source)
}

/// Chord's configuration from the operator's timing, for a peer of `role` (a CSP keeps
/// the longer successor list [`crate::ChordTiming::csp_successors`] asks for).
fn chord_config(t: &crate::ChordTiming, space: IdSpace, role: enroll::Role) -> ChordConfig {
    let mut cc = ChordConfig::new(space);
    cc.stabilize_every = t.stabilize;
    cc.fix_fingers_every = t.fix_fingers;
    cc.stabilize_max = t.quiet_maintenance_max;
    cc.fix_fingers_max = t.quiet_maintenance_max;
    cc.check_predecessor_every = t.check_predecessor;
    cc.ring_check_every = t.ring_check;
    cc.ring_check_max = t.quiet_ring_check_max;
    cc.rpc_timeout = t.rpc_timeout;
    cc.lookup_timeout = t.lookup_timeout;
    let base = t.successors.max(1);
    let wanted = if role == enroll::Role::Csp {
        t.csp_successors
    } else {
        0
    };
    cc.successors = base.max(wanted);
    // Only a list longer than the others' can be short of what its successor hands over.
    cc.extend_successors = cc.successors > base;
    cc.successor_shortcut = t.successor_shortcut;
    cc
}

/// The membership at start: the directory from `source`, checked chain by chain; empty
/// (calls fail until a refresh loads it) when it cannot be read.
async fn load_membership(
    nd: &NodeDir,
    arcs: overlay::secure::LayerArcs,
    source: Option<&str>,
    keys: &Arc<KeyBook>,
) -> Membership {
    match source {
        Some(src) => match directory::load(&nd.trust, arcs, src, keys).await {
            Ok(m) => m,
            Err(e) => {
                warn!(
                    "{}; starting without a directory (calls fail until it loads)",
                    crate::error::chain(&e)
                );
                empty_membership(arcs, keys)
            }
        },
        None => {
            warn!("no directory source (no --directory, no enroll_server in node.json)");
            empty_membership(arcs, keys)
        }
    }
}

/// The peers to join through: `--bootstrap`, else node.json's list, keeping members of
/// this peer's own layer only (rings are per layer).
fn bootstrap_of(
    a: &Config,
    nd: &NodeDir,
    arcs: overlay::secure::LayerArcs,
) -> Result<Vec<Contact>, NodeError> {
    let me = nd.identity.node_id;
    let layer = arcs.layer_of(me);
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
        .filter(|c| c.id != me && arcs.layer_of(c.id) == layer)
        .collect();
    if !a.create && bootstrap.is_empty() {
        return Err(NodeError::Config(format!(
            "no bootstrap peer of layer {} (none given with --bootstrap, none in node.json): pass --create to start the layer's ring",
            layer.get()
        )));
    }
    Ok(bootstrap)
}

/// How others reach this peer: the server-reflexive address from STUN, and the relay it
/// is reached through when it runs outbound-only (asked for, or behind a NAT without
/// `--advertise`); also as JSON for `/status`.
async fn reachability(
    a: &Config,
    nd: &NodeDir,
    bootstrap: &[Contact],
) -> Result<(Option<nat::Reflexive>, Option<Contact>, serde_json::Value), NodeError> {
    let reflexive = learn_reflexive(&a.stun, &nd.config.services.stun_urls).await;
    let behind_nat = reflexive.is_some_and(|r| r.behind_nat()) && a.advertise.is_none();
    let relay = match a.relay {
        Some(r) => Some(r),
        None if a.outbound_only || behind_nat => match bootstrap.first() {
            Some(b) => Some(*b),
            None => {
                return Err(NodeError::Config(
                    "outbound-only (behind NAT) needs a relay: pass --relay or --bootstrap".into(),
                ));
            }
        },
        None => None,
    };
    if let Some(r) = relay {
        info!(relay = %r.id, addr = ?r.addr, behind_nat, "outbound-only: reachable through the relay");
    }
    let status = serde_json::json!({
        "reflexive": reflexive.map(|r| serde_json::json!({
            "server": r.server, "local": r.local, "reflexive": r.reflexive,
            "behind_nat": r.behind_nat(),
        })),
        "relay": relay.map(|r| serde_json::json!({ "id": r.id.to_string(), "addr": r.addr })),
    });
    Ok((reflexive, relay, status))
}

/// Serve local phones from the running peer `h`: the front-end (with digest credentials,
/// the certificate key it signs registrations with, the key book it checks them with) in
/// the peer's core, on sockets bound at `sc.listen`.
async fn serve_phones(
    h: &Handle<NodeCore>,
    sc: &crate::SipConfig,
    nd: &NodeDir,
    keys: &Arc<KeyBook>,
    me: NodeId,
    media: Option<Box<dyn sip::media::MediaAnchor>>,
) -> Result<sip::driver::SipSockets, NodeError> {
    let auth = crate::load_sip_auth(sc.credentials.as_deref(), &sc.domain, &sc.digest)?;
    let signer = net::CertSigner::from_identity(&nd.identity)
        .map_err(|e| NodeError::Config(format!("the certificate key: {e}")))?;
    let verifier: Arc<dyn overlay::secure::SigVerifier> = keys.clone();
    let limits = sip::driver::DriverLimits::default();
    crate::phones::serve_frontend(h, sc.listen, &sc.domain, limits, move |mut cfg| {
        cfg.auth = auth;
        let fe = sip::FrontEnd::new(cfg, me, Box::new(signer), verifier);
        match media {
            Some(m) => fe.with_media(m),
            None => fe,
        }
    })
    .await
    .map_err(NodeError::io(format!(
        "starting the SIP front-end on {}",
        sc.listen
    )))
}

/// Serve the control endpoint on `bind` until `stop`; its address and task.
async fn serve_control(
    bind: SocketAddr,
    ctl: control::Ctl,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), NodeError> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(NodeError::io(format!(
            "binding the control endpoint {bind}"
        )))?;
    let addr = listener
        .local_addr()
        .map_err(NodeError::io("the control endpoint's address"))?;
    let app = control::router(ctl);
    let http = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = service::http::serve(listener, app, stopped).await {
            error!("control endpoint: {e}");
        }
    });
    Ok((addr, http))
}

/// Run `job` every `every` until `stop` turns true or the job says it is done (`false`).
fn spawn_periodic<F, Fut>(every: Duration, mut stop: watch::Receiver<bool>, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !job().await {
                return;
            }
        }
    });
}

/// The SOS's URL (for `/status`), the counters of rankings and reports, and the link.
type SosParts = (Option<String>, Arc<SosCounters>, Option<SosLink>);

/// The SOS the peer ranks routes with and reports evidence to, as `choice` says: its URL
/// (for `/status`), the counters of its rankings and reports, and the link (`None`, with a
/// warning unless the operator turned it off, without one).
fn sos_link(choice: &SosChoice, nd: &NodeDir) -> Result<SosParts, NodeError> {
    let (client, counters) = match choice {
        SosChoice::Off => return Ok((None, Arc::default(), None)),
        SosChoice::Client(client, counters) => (client.clone(), counters.clone()),
        SosChoice::Url(url) => (sos_client(url, nd)?, Arc::default()),
        SosChoice::FromNodeDir => match &nd.config.services.sos_url {
            Some(url) => (sos_client(url, nd)?, Arc::default()),
            None => {
                warn!("no SOS in node.json: callees take the shortest route, evidence is dropped");
                return Ok((None, Arc::default(), None));
            }
        },
    };
    let url = client.base_url();
    let link = SosLink::new(client, &nd.identity, counters.clone())
        .map_err(|e| NodeError::Sos(format!("the certificate key for SOS reports: {e}")))?;
    Ok((Some(url), counters, Some(link)))
}

/// A client of the SOS at `url` that believes only servers certified by the node
/// directory's CA, its connection opened at once: the first call's ranking then does not
/// wait for the TCP and TLS handshakes (the client keeps the connection open).
fn sos_client(url: &str, nd: &NodeDir) -> Result<sos::SosClient, NodeError> {
    let trust = service::tls::Trust::Ca(vec![nd.trust.ca.clone()]);
    let client = sos::SosClient::new(url, &trust)
        .map_err(|e| NodeError::Sos(format!("SOS URL {url}: {e}")))?;
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let warm = client.clone();
        rt.spawn(async move {
            if let Err(e) = warm.health().await {
                debug!("SOS not reachable yet (rankings will retry): {e}");
            }
        });
    }
    Ok(client)
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

/// Wait after a failed join before joining again.
const REJOIN_AFTER: Duration = Duration::from_secs(1);

/// Handle one application event of the peer; returns why the join failed, when it did.
async fn on_event(
    h: &Handle<NodeCore>,
    shared: &Arc<calls::Shared>,
    sip_out: Option<&sip::driver::SipSender>,
    ev: PeerEvent,
) -> Option<String> {
    let ev = match sip_out {
        Some(out) => crate::phones::send_to_phones(ev, out)?,
        None => ev,
    };
    let ev = match ev {
        PeerEvent::Overlay(ev) => ev,
        PeerEvent::SipOut(_) => return None,
        PeerEvent::Call(ev) => {
            calls::on_call_event(h, shared, ev).await;
            return None;
        }
        PeerEvent::Handled(ev) => {
            // The front-end took care of it; the call history records it.
            db::on_event(&shared.db, h.now(), &ev);
            return None;
        }
    };
    match ev {
        SecureEvent::Chord(Event::Joined { successor }) => info!(%successor, "joined the ring"),
        SecureEvent::Chord(Event::JoinFailed { reason }) => return Some(reason.to_string()),
        SecureEvent::Chord(Event::PeerFailed { peer }) => info!(%peer, "peer failed"),
        SecureEvent::Chord(
            ev @ (Event::LookupDone { lookup, .. } | Event::LookupFailed { lookup, .. }),
        ) => {
            let waiter = service::sync::lock(&shared.lookups).remove(&lookup);
            if let Some(w) = waiter {
                let _ = w.send(ev);
            }
        }
        ev @ (SecureEvent::CallRinging { .. } | SecureEvent::CallFailed { .. }) => {
            // Calls placed here (their waiting `place`) and by phones; the history either way.
            db::on_event(&shared.db, h.now(), &ev);
            shared.metrics.on_overlay(&ev);
            shared.on_overlay_answer(ev);
        }
        other => debug!(?other, "event"),
    }
    None
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

fn random_seed() -> Result<[u8; 32], NodeError> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| NodeError::Config("no system randomness".into()))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address a peer writes is read back; a missing or garbled file says which.
    #[test]
    fn the_control_address_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let missing = control_addr_of(dir.path()).unwrap_err().to_string();
        assert!(missing.contains("(is the peer running?)"), "{missing}");
        std::fs::write(dir.path().join(CONTROL_FILE), "127.0.0.1:4000\n").unwrap();
        assert_eq!(
            control_addr_of(dir.path()).unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 4000))
        );
        std::fs::write(dir.path().join(CONTROL_FILE), "nonsense").unwrap();
        let bad = control_addr_of(dir.path()).unwrap_err().to_string();
        assert!(bad.starts_with("bad address in"), "{bad}");
    }
}
