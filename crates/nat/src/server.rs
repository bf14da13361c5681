//! The STUN/TURN server: [`Gate`] + `turn-server-proto` driven by tokio over UDP.
//!
//! One task runs one loop (STYLE 7): it owns the protocol machine, the gate, the listening
//! socket and the relay sockets' write halves. Relay sockets are read by one small task each
//! that forwards datagrams through a bounded channel (drop on overflow, counted), so the loop
//! is the only place where protocol state changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use turn_server_proto::api::SocketAllocateError;
use turn_server_proto::stun::Instant;
use turn_server_proto::types::AddressFamily;

use crate::credentials::CredentialStore;
use crate::gate::{GateStats, Limits};
use crate::path::{MessagePath, Wants};

/// Largest datagram we read (UDP maximum).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams from peers to relay sockets waiting for the main loop; beyond this they drop.
const RELAY_QUEUE: usize = 4096;
/// How often the server logs a one-line summary when something changed.
const STATS_EVERY: Duration = Duration::from_secs(60);

/// Configuration of a [`StunServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Long-term credential realm.
    pub realm: String,
    /// Users and REST secret.
    pub credentials: CredentialStore,
    /// IP that relay sockets bind to and that is advertised in XOR-RELAYED-ADDRESS
    /// (default: the listen IP; required when listening on an unspecified address).
    pub relay_ip: Option<IpAddr>,
    /// Inclusive port range for relay sockets (default: ephemeral ports).
    pub relay_ports: Option<(u16, u16)>,
    /// Quotas and bounds.
    pub limits: Limits,
}

impl ServerConfig {
    /// A loopback test configuration: `127.0.0.1:0`, realm `p2psip.test`, default limits.
    pub fn loopback(credentials: CredentialStore) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            realm: "p2psip.test".into(),
            credentials,
            relay_ip: None,
            relay_ports: None,
            limits: Limits::default(),
        }
    }
}

/// Errors starting or running the server (all local: bad configuration or the OS).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The listen address is unspecified (0.0.0.0 / ::) and no relay IP was given.
    #[error("listening on {0} needs an explicit relay IP")]
    NeedRelayIp(SocketAddr),
    /// Reading from the listening socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Live counters of a running server.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Datagrams received on the listening socket.
    pub client_datagrams: AtomicU64,
    /// Datagrams received on relay sockets from peers.
    pub peer_datagrams: AtomicU64,
    /// Peer datagrams dropped because the relay queue was full.
    pub peer_drops: AtomicU64,
    /// Datagrams sent (to clients and to peers).
    pub sent: AtomicU64,
    /// Datagrams relayed from clients to peers (out of relay sockets), and their bytes.
    pub relayed_to_peers: AtomicU64,
    /// See `relayed_to_peers`.
    pub relayed_to_peers_bytes: AtomicU64,
    /// Datagrams relayed from peers to clients (as ChannelData or Data indications), and
    /// their bytes as sent.
    pub relayed_to_clients: AtomicU64,
    /// See `relayed_to_clients`.
    pub relayed_to_clients_bytes: AtomicU64,
    /// Peer datagrams dropped because the peer has no permission on the allocation.
    pub peer_unpermitted: AtomicU64,
    /// Allocations refused because no relay socket could be bound (port range exhausted).
    pub relay_bind_failures: AtomicU64,
}

/// The server's state at one moment, from its loop (see [`Monitor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The gate's counters.
    pub gate: GateStats,
    /// Allocations that hold a relay socket now.
    pub active_allocations: usize,
    /// Users with at least one allocation now.
    pub active_users: usize,
    /// The most allocations the server holds.
    pub max_allocations: usize,
}

/// Asks a running server's loop for a [`Snapshot`]: what its metrics and readiness probe
/// read. Cloned freely; answers `None` once the server has stopped.
#[derive(Clone, Debug)]
pub struct Monitor {
    ask: mpsc::Sender<oneshot::Sender<Snapshot>>,
    /// The server's live counters.
    pub counters: Arc<ServerCounters>,
}

/// Requests for snapshots waiting for the loop; beyond this a probe is told the loop is busy.
const PROBE_QUEUE: usize = 16;

impl Monitor {
    /// The loop's snapshot, or `None` when it did not answer within `wait` (stopped or
    /// stuck).
    pub async fn snapshot(&self, wait: Duration) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.ask.try_send(tx).ok()?;
        tokio::time::timeout(wait, rx).await.ok()?.ok()
    }
}

/// A bound STUN/TURN server, ready to [`run`](StunServer::run).
#[derive(Debug)]
pub struct StunServer {
    config: ServerConfig,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    counters: Arc<ServerCounters>,
    probe: (
        mpsc::Sender<oneshot::Sender<Snapshot>>,
        mpsc::Receiver<oneshot::Sender<Snapshot>>,
    ),
}

/// A server running on its own task; dropping the handle does not stop it, [`shutdown`]
/// does.
///
/// [`shutdown`]: ServerHandle::shutdown
#[derive(Debug)]
pub struct ServerHandle {
    /// Where the server listens (UDP).
    pub local_addr: SocketAddr,
    /// Live counters.
    pub counters: Arc<ServerCounters>,
    /// Asks the loop for its state.
    pub monitor: Monitor,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<GateStats, ServerError>>,
}

impl ServerHandle {
    /// Stop the server and wait for it; returns its final counters.
    pub async fn shutdown(mut self) -> Result<GateStats, ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e))),
        }
    }
}

struct RelayIn {
    relay: SocketAddr,
    from: SocketAddr,
    data: Vec<u8>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl StunServer {
    /// Bind the listening socket.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        if config.listen.ip().is_unspecified() && config.relay_ip.is_none() {
            return Err(ServerError::NeedRelayIp(config.listen));
        }
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local = socket.local_addr()?;
        Ok(Self {
            config,
            socket: Arc::new(socket),
            local,
            counters: Arc::default(),
            probe: mpsc::channel(PROBE_QUEUE),
        })
    }

    /// A [`Monitor`] of this server, for its metrics and readiness.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            ask: self.probe.0.clone(),
            counters: self.counters.clone(),
        }
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Run on a new task until [`ServerHandle::shutdown`].
    pub fn spawn(self) -> ServerHandle {
        let (tx, rx) = oneshot::channel();
        let local_addr = self.local;
        let counters = self.counters.clone();
        let monitor = self.monitor();
        let join = tokio::spawn(self.run(async move {
            let _ = rx.await;
        }));
        ServerHandle {
            local_addr,
            counters,
            monitor,
            stop: Some(tx),
            join,
        }
    }

    /// Serve until `shutdown` completes; relay sockets are closed on the way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<GateStats, ServerError> {
        let (mut driver, mut probes) = Driver::new(self);
        info!(listen = %driver.local, realm = %driver.config.realm,
            relay_ip = %driver.relay_ip, limits = ?driver.config.limits, "STUN/TURN server running");
        let (relay_tx, mut relay_rx) = mpsc::channel::<RelayIn>(RELAY_QUEUE);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut deadline = driver.drive(&relay_tx).await;
        let mut stats_tick = tokio::time::interval(STATS_EVERY);
        stats_tick.tick().await;
        let mut last_logged = GateStats::default();
        tokio::pin!(shutdown);
        loop {
            let sleep = tokio::time::sleep_until(deadline);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = driver.socket.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => {
                            driver.counters.client_datagrams.fetch_add(1, Ordering::Relaxed);
                            driver.handle_client(from, &buf[..n]).await;
                        }
                        // ICMP port unreachable from an earlier send surfaces here on Linux.
                        Err(e) if is_transient(&e) => debug!("listening socket: {e}"),
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(pkt) = relay_rx.recv() => {
                    driver.counters.peer_datagrams.fetch_add(1, Ordering::Relaxed);
                    driver.handle_peer(pkt).await;
                }
                Some(reply) = probes.recv() => {
                    let gate = &driver.path.gate;
                    let _ = reply.send(Snapshot {
                        gate: gate.stats(),
                        active_allocations: gate.active_allocations(),
                        active_users: gate.active_users(),
                        max_allocations: driver.config.limits.max_allocations,
                    });
                }
                () = sleep => {}
                _ = stats_tick.tick() => {
                    let s = driver.path.gate.stats();
                    if s != last_logged {
                        info!(active = driver.path.gate.active_allocations(), users = driver.path.gate.active_users(),
                            created = s.allocations_created, closed = s.allocations_closed,
                            quota_rejects = s.quota_rejects, capacity_rejects = s.capacity_rejects,
                            expired_creds = s.expired_credentials,
                            peer_drops = driver.counters.peer_drops.load(Ordering::Relaxed),
                            "TURN summary");
                        last_logged = s;
                    }
                }
            }
            deadline = driver.drive(&relay_tx).await;
        }
        let stats = driver.path.gate.stats();
        info!(
            active = driver.relays.len(),
            created = stats.allocations_created,
            "STUN/TURN server shutting down; closing relay sockets"
        );
        for (_, r) in std::mem::take(&mut driver.relays) {
            r.reader.abort();
        }
        Ok(stats)
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::Interrupted
    )
}

struct Driver {
    config: ServerConfig,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    relay_ip: IpAddr,
    counters: Arc<ServerCounters>,
    path: MessagePath,
    relays: BTreeMap<SocketAddr, Relay>,
    next_port: u16,
    base: std::time::Instant,
}

impl Driver {
    fn new(s: StunServer) -> (Self, mpsc::Receiver<oneshot::Sender<Snapshot>>) {
        let relay_ip = s.config.relay_ip.unwrap_or(s.local.ip());
        let path = MessagePath::new(
            s.local,
            s.config.realm.clone(),
            s.config.credentials.clone(),
            s.config.limits,
            Some(Duration::from_secs(3600)),
        );
        let next_port = s.config.relay_ports.map(|(lo, _)| lo).unwrap_or(0);
        let driver = Self {
            socket: s.socket,
            local: s.local,
            relay_ip,
            counters: s.counters,
            path,
            relays: BTreeMap::new(),
            next_port,
            base: std::time::Instant::now(),
            config: s.config,
        };
        (driver, s.probe.1)
    }

    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    async fn handle_client(&mut self, from: SocketAddr, data: &[u8]) {
        let now = self.now();
        let unix = service::time::unix_secs();
        if let Some(d) = self.path.client(from, data, now, unix) {
            self.send(d.from, d.to, &d.data).await;
        }
    }

    async fn handle_peer(&mut self, pkt: RelayIn) {
        let now = self.now();
        match self.path.peer(pkt.from, pkt.relay, &pkt.data, now) {
            Some(d) => {
                let c = &self.counters;
                c.relayed_to_clients.fetch_add(1, Ordering::Relaxed);
                c.relayed_to_clients_bytes
                    .fetch_add(d.data.len() as u64, Ordering::Relaxed);
                self.send(d.from, d.to, &d.data).await;
            }
            None => {
                self.counters
                    .peer_unpermitted
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Send everything the protocol machine has queued.
    async fn flush(&mut self, now: Instant) {
        while let Some(d) = self.path.poll_transmit(now) {
            self.send(d.from, d.to, &d.data).await;
        }
    }

    async fn send(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let socket = if from == self.local {
            &self.socket
        } else if let Some(r) = self.relays.get(&from) {
            let c = &self.counters;
            c.relayed_to_peers.fetch_add(1, Ordering::Relaxed);
            c.relayed_to_peers_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            &r.socket
        } else {
            debug!(%from, %to, "no socket for source address; dropping");
            return;
        };
        match socket.send_to(data, to).await {
            Ok(_) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => debug!(%from, %to, "send failed: {e}"),
        }
    }

    /// Poll the protocol machine until it only wants to wait; returns when to poll next.
    async fn drive(&mut self, relay_tx: &mpsc::Sender<RelayIn>) -> tokio::time::Instant {
        loop {
            let now = self.now();
            match self.path.poll(now) {
                Wants::Wait(at) => {
                    self.flush(now).await;
                    let at = at.max(now);
                    let wait = Duration::from_nanos(
                        u64::try_from(at.as_nanos() - now.as_nanos()).unwrap_or(0),
                    );
                    return tokio::time::Instant::now() + wait.min(Duration::from_secs(3600));
                }
                Wants::RelaySocket(req) => {
                    let result = self.open_relay(req.family(), relay_tx).await;
                    if let Err(e) = &result {
                        warn!(client = %req.client(), "cannot allocate relay: {e}");
                    }
                    self.path.relay_socket(req, result, now);
                }
                Wants::Closed(relay) => {
                    if let Some(r) = self.relays.remove(&relay) {
                        r.reader.abort();
                    }
                }
            }
            self.flush(now).await;
        }
    }

    async fn open_relay(
        &mut self,
        family: AddressFamily,
        relay_tx: &mpsc::Sender<RelayIn>,
    ) -> Result<SocketAddr, SocketAllocateError> {
        let wants_v4 = family == AddressFamily::IPV4;
        if wants_v4 != self.relay_ip.is_ipv4() {
            return Err(SocketAllocateError::AddressFamilyNotSupported);
        }
        if !self.path.gate.has_capacity() {
            return Err(SocketAllocateError::InsufficientCapacity);
        }
        let socket = match self.config.relay_ports {
            None => UdpSocket::bind(SocketAddr::new(self.relay_ip, 0))
                .await
                .ok(),
            Some((lo, hi)) => {
                let span = u32::from(hi.saturating_sub(lo)) + 1;
                let mut found = None;
                for _ in 0..span {
                    let port = self.next_port;
                    self.next_port = if port >= hi { lo } else { port + 1 };
                    let addr = SocketAddr::new(self.relay_ip, port);
                    if self.relays.contains_key(&addr) {
                        continue;
                    }
                    if let Ok(s) = UdpSocket::bind(addr).await {
                        found = Some(s);
                        break;
                    }
                }
                found
            }
        };
        let Some(socket) = socket else {
            self.counters
                .relay_bind_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!("relay port range exhausted");
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        let addr = socket
            .local_addr()
            .map_err(|_| SocketAllocateError::InsufficientCapacity)?;
        let socket = Arc::new(socket);
        let reader = tokio::spawn(relay_reader(
            socket.clone(),
            addr,
            relay_tx.clone(),
            self.counters.clone(),
        ));
        self.relays.insert(addr, Relay { socket, reader });
        Ok(addr)
    }
}

async fn relay_reader(
    socket: Arc<UdpSocket>,
    relay: SocketAddr,
    tx: mpsc::Sender<RelayIn>,
    counters: Arc<ServerCounters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let pkt = RelayIn {
                    relay,
                    from,
                    data: buf[..n].to_vec(),
                };
                match tx.try_send(pkt) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters.peer_drops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                debug!(%relay, "relay socket closed: {e}");
                return;
            }
        }
    }
}
