//! The runtime shell: one loop that owns the core and every routing decision.

use crate::budget::{RateLog, SourceSlots};
use crate::config::NetConfig;
use crate::conn::{self, ConnEvent, Ctx, Stop};
use crate::crl;
use crate::hello::{Hello, RELAYED};
use crate::relay;
use crate::send_queue::{QueueTx, Refused, send_queue};
use crate::stats::{Shared, Stats};
use crate::tls::{self, ConfigError};
pub use overlay::driver::{Core, Peer};
use overlay::wire::encode_frame;
use overlay::{Contact, Message, NodeId, Time, Transmit};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

/// Messages to ourselves handled per drain before yielding (a loop guard).
const SELF_BUDGET: usize = 1024;
/// Connection events handled in one go before the core's outputs are drained again.
const EVENT_BUDGET: usize = 64;
/// At most one warning about refused inbound connections per this interval.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);
/// How often the links' keep marks are brought up to date with what the core needs (they
/// only guard against idle closes, which take far longer).
const KEEP_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// A standing link ([`Core::standing_links`]) gets a ping when it is new (so the far side,
/// which may have dialled it, counts it as this peer's and keeps it: see `conn::run`) and
/// after this many looks (one per half idle timeout) without a frame either way, well
/// within the far side's idle timeout for a link that is this peer's.
const STANDING_QUIET_LOOKS: u8 = 6;
/// How soon to look again while a standing link is missing (being dialled, or backing off
/// after a failed dial) or the core names none yet.
const STANDING_RETRY: Duration = Duration::from_secs(2);
/// The token of the runtime's own pings (the relay keepalive, standing links): token 0 is
/// never one of the core's, so the core ignores their pongs.
const OWN_PING: u64 = 0;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listener could not be bound (local problem).
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Identity or trust material unusable (local problem).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime has stopped.
    #[error("the peer runtime has stopped")]
    Closed,
    /// Too many requests are waiting for an answer.
    #[error("too many requests in flight")]
    Overloaded,
    /// Outbound-only mode needs a relay with an address.
    #[error("the relay {0} has no address")]
    RelayWithoutAddress(NodeId),
}

type CallFn<C> = Box<dyn FnOnce(&mut C, Time) + Send>;
type RequestFn<C> = Box<dyn FnOnce(&mut C, Time) -> u64 + Send>;

enum Command<C: Core> {
    Call(CallFn<C>),
    Request(RequestFn<C>, oneshot::Sender<C::Event>),
    Shutdown(oneshot::Sender<()>),
    Kill(oneshot::Sender<()>),
}

/// A cheap, cloneable handle to a running peer: run code against the core inside the
/// loop, wait for request answers, read counters, shut down.
pub struct Handle<C: Core> {
    tx: mpsc::Sender<Command<C>>,
    stats: Arc<Shared>,
    local_addr: SocketAddr,
    contact: Contact,
    /// The loop's time zero ([`Handle::now`]).
    epoch: Instant,
}

/// The loop's clock: microseconds since its `epoch`.
fn time_since(epoch: Instant) -> Time {
    Time(u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
}

impl<C: Core> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            local_addr: self.local_addr,
            contact: self.contact,
            epoch: self.epoch,
        }
    }
}

impl<C: Core> fmt::Debug for Handle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("contact", &self.contact)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<C: Core> Handle<C> {
    /// The time on the loop's clock now: what the core's `now` reads at this instant,
    /// without a trip into the loop.
    pub fn now(&self) -> Time {
        time_since(self.epoch)
    }

    /// Run `f` on the core inside the loop (with the current time) and return its result.
    /// The core's outputs are drained right after.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut C, Time) -> R + Send + 'static,
    ) -> Result<R, NetError> {
        let (tx, rx) = oneshot::channel();
        let job: CallFn<C> = Box::new(move |core, now| {
            let _ = tx.send(f(core, now));
        });
        self.tx
            .send(Command::Call(job))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// Start a request with `f` (which returns the request's token) and wait for the core
    /// event that answers it (see [`Core::request_token`]).
    pub async fn request(
        &self,
        f: impl FnOnce(&mut C, Time) -> u64 + Send + 'static,
    ) -> Result<C::Event, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Request(Box::new(f), tx))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Overloaded)
    }

    /// Leave gracefully, flush and close every connection, stop the loop. Returns when done
    /// (at most the shutdown timeout later).
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.stop_with(Command::Shutdown).await
    }

    /// Stop at once, the way a crash or `kill -9` would: no leave, nothing flushed; the
    /// listener and every connection close (their sockets are dropped), so peers see the
    /// links die and must detect the loss with their own timeouts. For fault tests in one
    /// process, where the peer cannot be a separate process to kill.
    pub async fn kill(&self) -> Result<(), NetError> {
        self.stop_with(Command::Kill).await
    }

    /// Send the loop the stop command `stop` makes around a reply channel and wait until
    /// the loop has stopped (its reply, or the channel dropped as it ends).
    async fn stop_with(&self, stop: fn(oneshot::Sender<()>) -> Command<C>) -> Result<(), NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(stop(tx)).await.map_err(|_| NetError::Closed)?;
        let _ = rx.await;
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// The bound listen address (outbound-only: unspecified, port 0: nothing is bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This peer's contact (Node-ID and advertised address).
    pub fn contact(&self) -> Contact {
        self.contact
    }
}

/// A running peer: the handle, the application's event stream, and the loop's task.
pub struct PeerRuntime<C: Core> {
    /// Handle to the loop.
    pub handle: Handle<C>,
    /// Events the core reported that no request was waiting for (bounded; when full, further
    /// events are dropped and counted in [`Stats::dropped_events`]). Boxed: a channel keeps
    /// its slots in blocks of 32 sized for the largest event (128 bytes and more), for the
    /// peer's whole life, where a box is a pointer.
    pub events: mpsc::Receiver<Box<C::Event>>,
    /// The loop; ends after a shutdown.
    pub task: JoinHandle<()>,
}

impl<C: Core> fmt::Debug for PeerRuntime<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerRuntime")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<C: Core> PeerRuntime<C> {
    /// Bind the TLS listener and start the loop. `make_core` receives this peer's contact
    /// (Node-ID from the certificate, advertised address) and builds the core; call
    /// `create`/`join` on it there or later through [`Handle::call`].
    pub async fn start(
        cfg: NetConfig,
        make_core: impl FnOnce(Contact) -> C,
    ) -> Result<Self, NetError> {
        Self::start_inner(cfg, None, make_core).await
    }

    /// Start a peer that accepts no connections (behind a NAT): nothing is bound, every link
    /// is one this peer dials and is reused in both directions. It keeps a link to `relay`
    /// (a public peer), sending a keepalive on it every `keepalive` (redialling when it is
    /// gone), and advertises the relay's address as its own: peers without a link to this
    /// one reach it through the relay (see the `relay` module). `cfg.listen` and
    /// `cfg.advertise` are ignored.
    pub async fn start_outbound_only(
        cfg: NetConfig,
        relay: Contact,
        keepalive: Duration,
        make_core: impl FnOnce(Contact) -> C,
    ) -> Result<Self, NetError> {
        Self::start_inner(cfg, Some((relay, keepalive)), make_core).await
    }

    async fn start_inner(
        cfg: NetConfig,
        home: Option<(Contact, Duration)>,
        make_core: impl FnOnce(Contact) -> C,
    ) -> Result<Self, NetError> {
        service::crypto::install_provider();
        let (server, client) = tls::configs(&cfg.identity, &cfg.trust)?;
        let (listener, local_addr, advertise) = match home {
            None => {
                let listener =
                    TcpListener::bind(cfg.listen)
                        .await
                        .map_err(|source| NetError::Bind {
                            addr: cfg.listen,
                            source,
                        })?;
                let local_addr = listener.local_addr().map_err(|source| NetError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
                (
                    Some(listener),
                    local_addr,
                    cfg.advertise.unwrap_or(local_addr),
                )
            }
            Some((relay, _)) => {
                let at = relay.addr.ok_or(NetError::RelayWithoutAddress(relay.id))?;
                (None, SocketAddr::from(([0, 0, 0, 0], 0)), at)
            }
        };
        let me = Contact::new(cfg.identity.node_id, advertise);
        let me_peer = Peer {
            contact: me,
            layer: cfg.identity.binding.layer,
            role: cfg.identity.binding.role,
        };
        let stats = Arc::new(Shared::default());
        let limits = cfg.limits.clone();
        let (to_loop, conn_rx) = mpsc::channel(limits.inbound_queue.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(Stop::Running);
        let (done_tx, done_rx) = mpsc::channel(1);
        let mut hello = Hello::new(me.id, advertise);
        if home.is_some() {
            hello.flags |= RELAYED;
        }
        let ctx = Arc::new(Ctx {
            hello,
            clients: Mutex::new(BTreeSet::new()),
            home: home.map(|(r, _)| r.id),
            limits: limits.clone(),
            stats: stats.clone(),
            to_loop,
            stop: stop_rx,
            server_tls: server,
            client_tls: client,
        });
        if let Some((source, every)) = cfg.crl_refresh.clone() {
            tokio::spawn(crl::refresh(
                source,
                every,
                cfg.trust.clone(),
                cfg.identity.clone(),
                stats.clone(),
                shutdown_rx,
                done_tx.clone(),
            ));
        }
        let (cmd_tx, cmds) = mpsc::channel(limits.command_queue.max(1));
        let (ev_tx, events) = mpsc::channel(limits.event_queue.max(1));
        let core = make_core(me);
        let epoch = Instant::now();
        let handle = Handle {
            tx: cmd_tx,
            stats: stats.clone(),
            local_addr,
            contact: me,
            epoch,
        };
        match home {
            None => info!(node = %me.id, addr = %advertise, "listening"),
            Some((relay, every)) => info!(
                node = %me.id, relay = %relay.id, addr = %advertise, ?every,
                "outbound-only: reachable through the relay"
            ),
        }
        let lp = Loop {
            core,
            epoch,
            me: me_peer,
            cmds,
            conn_rx,
            listener,
            home,
            keepalive_at: home.map(|_| Instant::now()),
            clients: BTreeMap::new(),
            inbound: Arc::new(Semaphore::new(limits.max_inbound)),
            sources: SourceSlots::default(),
            refusal_log: RateLog::new(REFUSAL_LOG_EVERY),
            ctx,
            conns: BTreeMap::new(),
            spares: BTreeMap::new(),
            sends: 0,
            links_reported: 0,
            keep_at: Instant::now(),
            standing_at: Instant::now(),
            standing: BTreeMap::new(),
            backoff: BTreeMap::new(),
            next_conn: 1,
            waiters: BTreeMap::new(),
            events: ev_tx,
            shutdown: shutdown_tx,
            stop: stop_tx,
            done_tx: Some(done_tx),
            done_rx,
            to_self: VecDeque::new(),
            limits,
            stats,
        };
        // Every line a peer's loop and links log names the peer (hundreds share a process in
        // the demo and the tests).
        let span = tracing::info_span!("peer", node = %lp.me.contact.id);
        // The loop boxed: an async fn's future keeps its arguments apart from the locals they
        // move into, and the loop (4 KiB with its core) was there twice for the peer's life.
        let task = tokio::spawn(Box::new(lp).run().instrument(span));
        Ok(PeerRuntime {
            handle,
            events,
            task,
        })
    }
}

/// A connection the loop can send on.
struct Entry {
    conn: u64,
    tx: QueueTx,
    /// When it last carried a frame either way (in sends), for least-recently-used
    /// eviction.
    used: u64,
    /// Whether the core keeps it (set here) and whether the peer needs it too (set by the
    /// link's reader), shared with the connection task.
    marks: conn::Marks,
}

impl Entry {
    /// The peer needs the link too ([`conn::LinkMarks::theirs`]): one ours alone (dialled
    /// for a lookup or a call) is ours to give up.
    fn theirs(&self) -> bool {
        self.marks.theirs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Loop<C: Core> {
    core: C,
    epoch: Instant,
    me: Peer,
    cmds: mpsc::Receiver<Command<C>>,
    conn_rx: mpsc::Receiver<ConnEvent>,
    /// `None` in outbound-only mode.
    listener: Option<TcpListener>,
    /// Outbound-only mode: the relay and the keepalive interval.
    home: Option<(Contact, Duration)>,
    /// When the next keepalive to the relay is due.
    keepalive_at: Option<Instant>,
    /// Outbound-only peers we relay for, and their link (mirrored in `Ctx::clients`).
    clients: BTreeMap<NodeId, u64>,
    inbound: Arc<Semaphore>,
    /// Unfinished set-ups per source IP.
    sources: SourceSlots,
    /// Keeps a connection flood from flooding the log.
    refusal_log: RateLog,
    ctx: Arc<Ctx>,
    /// One sending connection per peer (the first that came up or is being dialled).
    conns: BTreeMap<NodeId, Entry>,
    /// A second link to a peer that is already in `conns` (both sides dialled at once). It
    /// stays open so the frames the peer sends on it are read, and takes over if the
    /// sending link goes; it closes when idle. Counted against `max_links`.
    spares: BTreeMap<NodeId, Entry>,
    /// Frames handed to links so far (the clock of least-recently-used eviction).
    sends: u64,
    /// Links last reported to the `links_open` gauge and the shared budget.
    links_reported: usize,
    /// When the links' keep marks are next refreshed from the core.
    keep_at: Instant,
    /// When the standing links are next looked at, and for each: its link, its `used` mark
    /// when last looked at, and how many looks in a row found it quiet.
    standing_at: Instant,
    standing: BTreeMap<NodeId, (u64, u64, u8)>,
    /// Peers whose last dial failed, and when.
    backoff: BTreeMap<NodeId, Instant>,
    next_conn: u64,
    waiters: BTreeMap<u64, oneshot::Sender<C::Event>>,
    events: mpsc::Sender<Box<C::Event>>,
    /// Tells the CRL refresh to stop (at a leave).
    shutdown: watch::Sender<bool>,
    /// Tells every connection to flush and close (a leave) or to drop its socket at once (a
    /// hard stop).
    stop: watch::Sender<Stop>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
    to_self: VecDeque<Message>,
    limits: crate::config::Limits,
    stats: Arc<Shared>,
}

/// Room for one more link (see `Loop::make_room`).
enum Room {
    /// Under `max_links`, and under this peer's share of a shared budget (if any).
    Some,
    /// Over its share of a shared budget that still has room.
    OverShare,
    /// At `max_links`, or over its share of a spent budget.
    None,
}

/// A stopped peer's links no longer count against its process's shared budget.
impl<C: Core> Drop for Loop<C> {
    fn drop(&mut self) {
        if let Some(b) = &self.limits.shared_links {
            b.moved(self.links_reported, 0);
        }
    }
}

impl<C: Core> Loop<C> {
    fn now(&self) -> Time {
        time_since(self.epoch)
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.0)
    }

    async fn run(mut self: Box<Self>) {
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        loop {
            self.drain();
            self.report_links();
            let wake = match self.core.poll_timeout() {
                Some(t) => self.instant(t),
                None => Instant::now() + Duration::from_secs(3600),
            };
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Call(f)) => {
                        let now = self.now();
                        f(&mut self.core, now);
                    }
                    Some(Command::Request(f, reply)) => self.request(f, reply),
                    Some(Command::Shutdown(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(Command::Kill(reply)) => {
                        warn!(node = %self.me.contact.id, "killed: stopping without leaving");
                        self.stop.send_replace(Stop::Killed);
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                ev = self.conn_rx.recv() => {
                    if let Some(ev) = ev {
                        self.conn_event(ev);
                        for _ in 0..EVENT_BUDGET {
                            match self.conn_rx.try_recv() {
                                Ok(ev) => self.conn_event(ev),
                                Err(_) => break,
                            }
                        }
                    }
                }
                acc = accept_on(self.listener.as_ref()) => self.accept(acc).await,
                () = sleep_until_opt(self.keepalive_at) => self.keepalive(),
                // `drain` (at the top of the loop) holds the standing links.
                () = tokio::time::sleep_until(self.standing_at) => {}
                () = &mut timer => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
        }
    }

    /// Outbound-only mode: keep the link to the relay busy (and the NAT's mapping alive),
    /// or dial it again if it is gone. The relay's Chord answers the ping ([`OWN_PING`]).
    fn keepalive(&mut self) {
        let Some((relay, every)) = self.home else {
            self.keepalive_at = None;
            return;
        };
        self.keepalive_at = Some(Instant::now() + every);
        if !self.conns.contains_key(&relay.id) {
            debug!(relay = %relay.id, "dialling the relay");
            self.backoff.remove(&relay.id);
        }
        self.send(Transmit {
            to: relay,
            msg: Message::Ping { token: OWN_PING },
        });
    }

    /// A frame from `from` for our outbound-only client `to`: wrap it and pass it on.
    fn relay(&mut self, to: NodeId, from: Peer, msg: Message) {
        let mut frame = Vec::new();
        let sent = self.clients.contains_key(&to)
            && relay::encode(&from, &mut frame)
            && encode_frame(&msg, self.limits.max_frame, &mut frame).is_ok()
            && self
                .conns
                .get(&to)
                .is_some_and(|e| e.tx.offer(frame, 0).is_ok());
        if sent {
            Shared::inc(&self.stats.c.frames_relayed);
        } else {
            Shared::inc(&self.stats.c.relay_dropped);
            debug!(%to, from = %from.contact.id, kind = msg.name(), "relayed frame dropped");
        }
    }

    fn set_client(&mut self, peer: NodeId, conn: Option<u64>) {
        match conn {
            Some(c) => {
                self.clients.insert(peer, c);
            }
            None => {
                self.clients.remove(&peer);
            }
        }
        if let Ok(mut set) = self.ctx.clients.lock() {
            match conn {
                Some(_) => set.insert(peer),
                None => set.remove(&peer),
            };
        }
    }

    /// Mark the sending links the core keeps (and unmark the others), at most once per
    /// [`KEEP_REFRESH_EVERY`]. Spares are never kept: they close when idle.
    fn refresh_keeps(&mut self) {
        let now = Instant::now();
        if now < self.keep_at {
            return;
        }
        self.keep_at = now + KEEP_REFRESH_EVERY;
        for (id, e) in &self.conns {
            let keep = self.core.keeps_link(*id);
            e.marks
                .keep
                .store(keep, std::sync::atomic::Ordering::Relaxed);
        }
        for e in self.spares.values() {
            e.marks
                .keep
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Hold the links to the core's standing peers open, looking at them once per half idle
    /// timeout (every [`STANDING_RETRY`] while one is missing): dial a missing one, ping a
    /// new one and one quiet for [`STANDING_QUIET_LOOKS`] looks. The pings carry no request;
    /// the far side's pong is ignored.
    fn hold_standing(&mut self) {
        let now = Instant::now();
        if now < self.standing_at {
            return;
        }
        let standing = self.core.standing_links();
        // None yet (a peer that has not joined its ring): look again soon.
        let mut missing = standing.is_empty();
        let mut looked = BTreeMap::new();
        // A peer whose address is unknown (not in the directory) cannot be dialled.
        for to in standing.into_iter().filter(|c| c.addr.is_some()) {
            let link = self.conns.get(&to.id).map(|e| (e.conn, e.used));
            let quiet = match (link, self.standing.get(&to.id)) {
                (Some((conn, used)), Some(&(c, u, q))) if c == conn && u == used => q + 1,
                (Some((conn, _)), Some(&(c, _, _))) if c == conn => 0,
                // New, or missing: ping at once.
                _ => STANDING_QUIET_LOOKS,
            };
            missing |= link.is_none();
            let quiet = if quiet >= STANDING_QUIET_LOOKS {
                self.send(Transmit {
                    to,
                    msg: Message::Ping { token: OWN_PING },
                });
                0
            } else {
                quiet
            };
            if let Some(e) = self.conns.get(&to.id) {
                looked.insert(to.id, (e.conn, e.used, quiet));
            }
        }
        self.standing = looked;
        self.standing_at = now
            + if missing {
                STANDING_RETRY
            } else {
                self.limits.idle_timeout / 2
            };
    }

    /// Drain the core: transmits into connections, events to waiters or the application.
    fn drain(&mut self) {
        self.refresh_keeps();
        self.hold_standing();
        for _ in 0..SELF_BUDGET {
            while let Some(t) = self.core.poll_transmit() {
                self.send(t);
            }
            while let Some(ev) = self.core.poll_event() {
                self.dispatch(ev);
            }
            let Some(msg) = self.to_self.pop_front() else {
                return;
            };
            let now = self.now();
            let me = self.me;
            self.core.handle_message(now, &me, msg);
        }
    }

    fn dispatch(&mut self, ev: C::Event) {
        if let Some(peer) = C::failed_peer(&ev) {
            self.close_links(peer);
        }
        if let Some(tok) = C::request_token(&ev)
            && let Some(w) = self.waiters.remove(&tok)
        {
            let _ = w.send(ev);
            return;
        }
        match self.events.try_send(Box::new(ev)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ev)) => {
                Shared::inc(&self.stats.c.dropped_events);
                debug!(?ev, "event channel full: event dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The core gave up on `peer` (see [`Core::failed_peer`]): close the links to it, so
    /// the next message to it dials afresh instead of queueing behind a connection the
    /// network may have cut without a word.
    fn close_links(&mut self, peer: NodeId) {
        // Not a link an outbound-only peer holds open to its relay (either end): it is that
        // peer's only way in, its relay cannot dial it back, and the keepalive already
        // redials it when it goes.
        if self.clients.contains_key(&peer) || self.home.is_some_and(|(relay, _)| relay.id == peer)
        {
            return;
        }
        let sending = self.conns.remove(&peer).is_some();
        let spare = self.spares.remove(&peer).is_some();
        if sending || spare {
            Shared::inc(&self.stats.c.failed_closed);
            debug!(%peer, "peer stopped answering: its link closed, the next message dials afresh");
        }
    }

    fn request(&mut self, f: RequestFn<C>, reply: oneshot::Sender<C::Event>) {
        if self.waiters.len() >= self.limits.max_waiters {
            self.waiters.retain(|_, w| !w.is_closed());
            if self.waiters.len() >= self.limits.max_waiters {
                return; // the requester sees Overloaded
            }
        }
        let now = self.now();
        let tok = f(&mut self.core, now);
        self.waiters.insert(tok, reply);
    }

    fn send(&mut self, t: Transmit) {
        if t.to.id == self.me.contact.id {
            self.to_self.push_back(t.msg);
            return;
        }
        let mut frame = Vec::new();
        if let Err(e) = encode_frame(&t.msg, self.limits.max_frame, &mut frame) {
            Shared::inc(&self.stats.c.dropped_oversized_out);
            warn!(peer = %t.to.id, kind = t.msg.name(), "message not sent: {e}");
            return;
        }
        self.sends += 1;
        let tick = self.sends;
        match self.offer_to_links(tick, &t, frame) {
            Ok(true) => {}
            Ok(false) => {
                let now = self.now();
                self.core.handle_not_sent(now, t.to.id, &t.msg);
            }
            Err(frame) => self.dial(t.to, frame, t.msg.name()),
        }
    }

    /// The sending link to `t.to` first, then a spare (which becomes the sending link); a
    /// closed one is dropped and the frame tries the next. `Err` gives the frame back when
    /// no open link is left (the caller dials); otherwise as [`offer`].
    fn offer_to_links(
        &mut self,
        tick: u64,
        t: &Transmit,
        mut frame: Vec<u8>,
    ) -> Result<bool, Vec<u8>> {
        if let Some(e) = self.conns.get_mut(&t.to.id) {
            match offer(&self.stats, e, tick, t, frame) {
                Ok(queued) => return Ok(queued),
                Err(f) => {
                    self.conns.remove(&t.to.id);
                    frame = f;
                }
            }
        }
        let Some(mut spare) = self.spares.remove(&t.to.id) else {
            return Err(frame);
        };
        let queued = offer(&self.stats, &mut spare, tick, t, frame)?;
        self.conns.insert(t.to.id, spare);
        Ok(queued)
    }

    /// Publish how many links this peer holds: the `links_open` gauge, and the process's
    /// shared budget when it has one.
    fn report_links(&mut self) {
        let own = self.conns.len() + self.spares.len();
        self.stats
            .c
            .links_open
            .store(own as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.limits.shared_links {
            b.moved(self.links_reported, own);
        }
        self.links_reported = own;
    }

    /// How much room this peer has for one more link.
    fn room(&mut self) -> Room {
        self.report_links();
        let own = self.links_reported;
        if own >= self.limits.max_links.max(1) {
            return Room::None;
        }
        match &self.limits.shared_links {
            Some(b) if b.full_for(own) => Room::None,
            Some(b) if own >= b.share() => Room::OverShare,
            _ => Room::Some,
        }
    }

    /// Close links to make room for one more. At `max_links`, or at this peer's share of a
    /// process whose shared budget is spent, the least recently used goes (dropping its
    /// sender ends the connection task, which closes the socket): spares first (their peer
    /// has another link), then links we opened and no longer need, then links peers need
    /// (they opened them or keep their ring over them), then the ones we keep (closing one
    /// only makes it dial the peer again at its next maintenance). Over its share of a
    /// budget that still has room, a peer closes only spares and links it opened and nobody
    /// needs: links others need stay (it may be a finger of many), links opened for joins
    /// and lookups do not pile up.
    fn make_room(&mut self) {
        loop {
            let strict = match self.room() {
                Room::Some => return,
                Room::OverShare => false,
                Room::None => true,
            };
            if let Some((&spare, _)) = self.spares.iter().min_by_key(|(_, e)| e.used) {
                self.spares.remove(&spare);
                Shared::inc(&self.stats.c.links_evicted);
                continue;
            }
            let core = &self.core;
            let Some(lru) = self
                .conns
                .iter()
                .filter(|(id, e)| strict || !(e.theirs() || core.keeps_link(**id)))
                .min_by_key(|(id, e)| (core.keeps_link(**id), e.theirs(), e.used))
                .map(|(id, _)| *id)
            else {
                return;
            };
            self.conns.remove(&lru);
            Shared::inc(&self.stats.c.links_evicted);
            debug!(peer = %lru, "closing the least recently used link (at max_links or its share)");
        }
    }

    /// Open a link to `to` carrying `frame` (a `kind` message) first.
    fn dial(&mut self, to: Contact, frame: Vec<u8>, kind: &'static str) {
        let Some(addr) = to.addr else {
            Shared::inc(&self.stats.c.dropped_no_addr);
            debug!(peer = %to.id, "no address: message dropped");
            return;
        };
        if let Some(at) = self.backoff.get(&to.id) {
            if at.elapsed() < self.limits.redial_backoff {
                Shared::inc(&self.stats.c.dropped_backoff);
                return;
            }
            self.backoff.remove(&to.id);
        }
        let Some(done) = self.done_tx.clone() else {
            return; // shutting down
        };
        let (tx, rx) = send_queue(self.limits.send_queue, self.limits.send_queue_bytes);
        if tx.offer(frame, 0).is_ok() {
            Shared::inc(&self.stats.c.frames_out);
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.make_room();
        let marks = conn::LinkMarks::new(self.core.keeps_link(to.id), false);
        self.conns.insert(
            to.id,
            Entry {
                conn,
                tx,
                used: self.sends,
                marks: marks.clone(),
            },
        );
        debug!(peer = %to.id, %addr, kind, "dialling");
        tokio::spawn(
            conn::dial(self.ctx.clone(), conn, to, addr, rx, marks, done).in_current_span(),
        );
    }

    async fn accept(&mut self, acc: std::io::Result<(tokio::net::TcpStream, SocketAddr)>) {
        match acc {
            Ok((tcp, source)) => {
                let Some(slot) = self
                    .sources
                    .try_take(source.ip(), self.limits.max_setups_per_source)
                else {
                    Shared::inc(&self.stats.c.refused_source);
                    if let Some(held) = self.refusal_log.allow(Instant::now()) {
                        warn!(%source, "inbound connection refused: {} set-ups from {} already ({held} more refusals since the last warning)",
                            self.limits.max_setups_per_source, source.ip());
                    }
                    self.stats.refusal(format!(
                        "inbound from {source}: too many set-ups from this source"
                    ));
                    return;
                };
                let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
                    Shared::inc(&self.stats.c.refused_capacity);
                    if let Some(held) = self.refusal_log.allow(Instant::now()) {
                        warn!(%source, "inbound connection refused: {} connections already ({held} more refusals since the last warning)", self.limits.max_inbound);
                    }
                    self.stats
                        .refusal(format!("inbound from {source}: at capacity"));
                    return;
                };
                let Some(done) = self.done_tx.clone() else {
                    return;
                };
                let conn = self.next_conn;
                self.next_conn += 1;
                tokio::spawn(
                    conn::accept(self.ctx.clone(), conn, tcp, source, permit, slot, done)
                        .in_current_span(),
                );
            }
            Err(e) => {
                // E.g. out of file descriptors: back off a little instead of spinning.
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Up {
                conn,
                peer,
                tx,
                keep,
                outbound_only,
            } => {
                if outbound_only && tx.is_some() {
                    // A link an outbound-only peer opened is the best way to it: it replaces
                    // any link through its relay (or an older one of its own).
                    self.conns.remove(&peer.contact.id);
                    if self.home.is_none() && peer.contact.addr == self.me.contact.addr {
                        debug!(peer = %peer.contact.id, "relaying for an outbound-only peer");
                        self.set_client(peer.contact.id, Some(conn));
                    }
                }
                if let Some(tx) = tx {
                    let used = self.sends;
                    keep.keep.store(
                        self.core.keeps_link(peer.contact.id),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    let entry = Entry {
                        conn,
                        tx,
                        used,
                        marks: keep,
                    };
                    if let Some(ours) = self.conns.remove(&peer.contact.id) {
                        // Both sides dialled. Closing either link would lose what was already
                        // written on it; both sides send on the link the lower Node-ID
                        // dialled, so the other one carries nothing more and idles out.
                        let (send_on, spare) = if peer.contact.id < self.me.contact.id {
                            (entry, ours)
                        } else {
                            (ours, entry)
                        };
                        debug!(peer = %peer.contact.id, "second link to the peer kept as a spare until idle");
                        spare
                            .marks
                            .keep
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        self.make_room();
                        self.conns.insert(peer.contact.id, send_on);
                        self.spares.insert(peer.contact.id, spare);
                    } else {
                        self.make_room();
                        self.conns.insert(peer.contact.id, entry);
                    }
                }
                self.backoff.remove(&peer.contact.id);
            }
            ConnEvent::Frame { peer, msg, _share } => {
                // A link the peer talks on is in use, even if we rarely answer on it: it
                // goes after the truly idle ones when room must be made.
                if let Some(e) = self.conns.get_mut(&peer.contact.id) {
                    e.used = self.sends;
                }
                let now = self.now();
                self.core.handle_message(now, &peer, *msg);
            }
            ConnEvent::Relay { to, from, msg, .. } => self.relay(to, from, *msg),
            ConnEvent::Down {
                conn,
                peer,
                dial_failed,
            } => {
                if self.spares.get(&peer).is_some_and(|e| e.conn == conn) {
                    self.spares.remove(&peer);
                }
                if self.conns.get(&peer).is_some_and(|e| e.conn == conn) {
                    self.conns.remove(&peer);
                    if let Some(spare) = self.spares.remove(&peer) {
                        self.conns.insert(peer, spare);
                    }
                }
                if self.clients.get(&peer) == Some(&conn) {
                    self.set_client(peer, None);
                }
                // The last link to the peer is gone (or never came up): the core may want
                // to know whether the peer is still there.
                if dial_failed || !self.conns.contains_key(&peer) {
                    let now = self.now();
                    self.core.handle_link_down(now, peer, dial_failed);
                }
                if dial_failed {
                    if self.backoff.len() >= 4096 {
                        let keep = self.limits.redial_backoff;
                        self.backoff.retain(|_, at| at.elapsed() < keep);
                    }
                    self.backoff.insert(peer, Instant::now());
                }
            }
        }
    }

    async fn shutdown(&mut self) {
        info!(node = %self.me.contact.id, "leaving the overlay");
        let now = self.now();
        self.core.leave(now);
        self.drain();
        self.shutdown.send_replace(true);
        self.stop.send_replace(Stop::Leaving);
        self.conns.clear();
        self.spares.clear();
        self.done_tx = None;
        let deadline = Instant::now() + self.limits.shutdown_timeout;
        loop {
            tokio::select! {
                r = self.done_rx.recv() => if r.is_none() { break },
                _ = self.conn_rx.recv() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("shutdown: connections did not finish within {:?}", self.limits.shutdown_timeout);
                    break;
                }
            }
        }
        info!(node = %self.me.contact.id, "stopped");
    }
}

/// The share of a send queue (its frames and its bytes, 1/8 each) kept for upkeep frames
/// ([`Message::is_upkeep`]): bulk frames (routed lookups, calls) are refused while less
/// than that is free, so a link that a flood of forwarded requests has filled still carries
/// acknowledgements and liveness answers, and neighbours do not declare this peer failed.
const UPKEEP_RESERVE_DIV: usize = 8;

/// Hand `frame` to link `e`: `Ok(true)` queued (counted as sent), `Ok(false)` dropped because
/// the queue is full (counted; bulk frames also when only the upkeep reserve is left);
/// `Err` gives the frame back when the link is closed.
fn offer(
    stats: &Shared,
    e: &mut Entry,
    tick: u64,
    t: &Transmit,
    frame: Vec<u8>,
) -> Result<bool, Vec<u8>> {
    e.used = tick;
    let reserve = if t.msg.is_upkeep() {
        0
    } else {
        UPKEEP_RESERVE_DIV
    };
    match e.tx.offer(frame, reserve) {
        Ok(()) => Shared::inc(&stats.c.frames_out),
        Err(Refused::Full) => {
            let what = if reserve == 0 {
                "send queue full: dropped"
            } else {
                "send queue full (upkeep reserve left): dropped"
            };
            queue_full(stats, t, what);
            return Ok(false);
        }
        Err(Refused::Closed(f)) => return Err(f),
    }
    Ok(true)
}

/// A frame dropped at a full send queue: counted, and logged as a warning at the 1st, 2nd,
/// 4th, 8th ... drop (a message lost here is lost for good: a call may hang on it), at debug
/// otherwise.
fn queue_full(stats: &Shared, t: &Transmit, what: &str) {
    let n = stats
        .c
        .dropped_queue_full
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if n.is_power_of_two() {
        warn!(peer = %t.to.id, kind = t.msg.name(), dropped = n, "{what} (the link to this peer is not keeping up; {n} frames dropped so far)");
    } else {
        debug!(peer = %t.to.id, kind = t.msg.name(), "{what}");
    }
}

/// Accept on the listener, or never (outbound-only mode has none).
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Sleep until `at`, or forever.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
