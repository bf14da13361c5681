//! Client side for peers: STUN Binding (server-reflexive address) and a TURN allocation.

use service::sync::lock;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::udp::TurnClientUdp;
use turn_server_proto::stun::Instant;
use turn_server_proto::stun::agent::{StunAgent, StunAgentPollRet, Transmit};
use turn_server_proto::stun::auth::Feature;
use turn_server_proto::stun::types::TransportType;
use turn_server_proto::stun::types::attribute::{ErrorCode, XorMappedAddress};
use turn_server_proto::stun::types::message::{
    BINDING, Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_server_proto::types::TurnCredentials;
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};

use crate::credentials::Credentials;

/// Retransmission schedule for a STUN Binding over UDP (RFC 5389 §7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingOptions {
    /// First retransmission timeout (RFC: ≥ 500 ms); doubles after each send.
    pub initial_rto: Duration,
    /// Total transmissions (RFC `Rc`, default 7).
    pub transmissions: u32,
    /// Wait after the last transmission, as a multiple of `initial_rto` (RFC `Rm`, default 16).
    pub final_wait_factor: u32,
    /// Hard cap on the whole exchange, whatever the schedule says.
    pub timeout: Duration,
}

impl Default for BindingOptions {
    /// RFC 5389 defaults: 500 ms, 7 transmissions, Rm = 16 (gives up after 39.5 s).
    fn default() -> Self {
        Self {
            initial_rto: Duration::from_millis(500),
            transmissions: 7,
            final_wait_factor: 16,
            timeout: Duration::from_millis(39_500),
        }
    }
}

impl BindingOptions {
    /// A short schedule for interactive use and tests: 100 ms, 5 sends, give up after `timeout`.
    pub fn quick(timeout: Duration) -> Self {
        Self {
            initial_rto: Duration::from_millis(100),
            transmissions: 5,
            final_wait_factor: 16,
            timeout,
        }
    }
}

/// Errors of the client operations. `Timeout` and `Rejected` are the server's (or the
/// network's) doing; `Io` is local.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer within the retransmission schedule / timeout.
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    /// The server answered with a STUN error response.
    #[error("server refused with {code} {reason}")]
    Rejected {
        /// STUN error code (401, 486, 508, …).
        code: u16,
        /// Reason phrase from the server.
        reason: String,
    },
    /// The server's answer could not be used (e.g. no mapped address).
    #[error("malformed answer from server: {0}")]
    Malformed(&'static str),
    /// The operation failed inside the TURN client (no allocation, no permission, …).
    #[error("TURN: {0}")]
    Turn(String),
    /// The allocation is gone (deleted, failed or its task stopped).
    #[error("allocation closed")]
    Closed,
    /// Local socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Send a STUN Binding request from `socket` to `server` and return the server-reflexive
/// address it reports (XOR-MAPPED-ADDRESS).
///
/// Retransmits per `opts`. Reads from `socket` until the answer arrives; datagrams that are
/// not the answer are discarded, so do not share the socket with another reader meanwhile.
pub async fn binding_request(
    socket: &UdpSocket,
    server: SocketAddr,
    opts: &BindingOptions,
) -> Result<SocketAddr, ClientError> {
    let local = socket.local_addr()?;
    let base = std::time::Instant::now();
    let now = || Instant::from_std(base);
    let rto = opts.initial_rto.max(Duration::from_millis(10));
    let mut agent = StunAgent::builder(TransportType::Udp, local)
        .request_retransmits(
            rto,
            Duration::from_secs(3600),
            opts.transmissions.max(1),
            rto * opts.final_wait_factor.max(1),
        )
        .build();
    let mut req = Message::builder_request(BINDING, MessageWriteVec::new());
    req.add_fingerprint()
        .map_err(|_| ClientError::Malformed("cannot build request"))?;
    let req = req.finish();
    let tid = Message::from_bytes(&req)
        .map_err(|_| ClientError::Malformed("cannot build request"))?
        .transaction_id();
    let first = agent
        .send_request(&req, server, now())
        .map_err(|_| ClientError::Malformed("cannot send request"))?;
    socket.send_to(first.data.as_ref(), first.to).await?;
    let give_up = tokio::time::Instant::now() + opts.timeout;
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(t) = agent.poll_transmit(now()) {
            debug!(%server, "retransmitting STUN Binding");
            let (data, to) = (t.data.to_vec(), t.to);
            socket.send_to(&data, to).await?;
        }
        let wait = match agent.poll(now()) {
            StunAgentPollRet::TransactionTimedOut(_)
            | StunAgentPollRet::TransactionCancelled(_) => {
                return Err(ClientError::Timeout(server));
            }
            StunAgentPollRet::WaitUntil(at) => {
                let n = now();
                tokio::time::Instant::now() + at.saturating_duration_since(n)
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                };
                let Ok(msg) = Message::from_bytes(&buf[..n]) else { continue };
                if from != server || msg.transaction_id() != tid || !msg.is_response() {
                    continue;
                }
                agent.handle_stun_message_with_time(&msg, from, now());
                if msg.class() == MessageClass::Error {
                    return Err(rejected(&msg));
                }
                if let Ok(x) = msg.attribute::<XorMappedAddress>() {
                    return Ok(x.addr(tid));
                }
                return Err(ClientError::Malformed("Binding success without a mapped address"));
            }
            () = tokio::time::sleep_until(wait.min(give_up)) => {
                if tokio::time::Instant::now() >= give_up {
                    return Err(ClientError::Timeout(server));
                }
            }
        }
    }
}

/// Bind a fresh UDP socket towards `server` and learn this host's server-reflexive address.
/// Returns `(local address, reflexive address)`.
pub async fn reflexive_address(
    server: SocketAddr,
    opts: &BindingOptions,
) -> Result<(SocketAddr, SocketAddr), ClientError> {
    let socket = connected_socket(server).await?;
    let mapped = binding_request(&socket, server, opts).await?;
    Ok((socket.local_addr()?, mapped))
}

pub(crate) async fn connected_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    // Connecting picks the outgoing interface (so local_addr is a real IP) and filters
    // datagrams from anyone but the server, which is all a TURN client talks to.
    socket.connect(server).await?;
    Ok(socket)
}

fn rejected(msg: &Message<'_>) -> ClientError {
    match msg.attribute::<ErrorCode>() {
        Ok(e) => ClientError::Rejected {
            code: e.code(),
            reason: e.reason().to_owned(),
        },
        Err(_) => ClientError::Malformed("error response without ERROR-CODE"),
    }
}

/// Options for [`TurnClient::allocate`].
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// Give up on a request (allocate, permission, channel) after this long.
    pub timeout: Duration,
    /// Received peer datagrams buffered for [`TurnClient::recv_from`]; beyond this they drop.
    pub recv_queue: usize,
}

impl Default for TurnOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            recv_queue: 1024,
        }
    }
}

/// The request a TURN event settles: a permission for an IP, or a channel to a peer.
enum Settled {
    Permission(IpAddr),
    Channel(SocketAddr),
}

impl Settled {
    /// What `ev` settles, and whether it succeeded.
    fn by(ev: &TurnEvent) -> Option<(Settled, bool)> {
        match ev {
            TurnEvent::PermissionCreated(_, ip) => Some((Settled::Permission(*ip), true)),
            TurnEvent::PermissionCreateFailed(_, ip) => Some((Settled::Permission(*ip), false)),
            TurnEvent::ChannelCreated(_, peer) => Some((Settled::Channel(*peer), true)),
            TurnEvent::ChannelCreateFailed(_, peer) => Some((Settled::Channel(*peer), false)),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Waiter {
    Allocate(oneshot::Sender<Result<SocketAddr, ClientError>>),
    Permission(IpAddr, oneshot::Sender<Result<(), ClientError>>),
    Channel(SocketAddr, oneshot::Sender<Result<(), ClientError>>),
    Closed(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Inner {
    client: TurnClientUdp,
    base: std::time::Instant,
    waiters: Vec<Waiter>,
    /// Last error code seen per request kind (allocate, permission, channel).
    last_error: [Option<(u16, String)>; 3],
    mapped: Option<SocketAddr>,
    allocate_401s: u32,
    closed: bool,
}

impl Inner {
    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    fn failure(&self, idx: usize, what: &str) -> ClientError {
        match &self.last_error[idx] {
            Some((code, reason)) => ClientError::Rejected {
                code: *code,
                reason: reason.clone(),
            },
            None => ClientError::Turn(format!("{what} failed (no response)")),
        }
    }

    /// Answer a permission or channel waiter: done, or failed with the last error of
    /// request kind `idx`. The waiter is settled, so nothing is kept.
    fn settle(
        &self,
        tx: oneshot::Sender<Result<(), ClientError>>,
        idx: usize,
        what: &str,
        ok: bool,
    ) -> Option<Waiter> {
        let _ = tx.send(if ok {
            Ok(())
        } else {
            Err(self.failure(idx, what))
        });
        None
    }

    fn dispatch_events(&mut self) {
        while let Some(ev) = self.client.poll_event() {
            debug!(?ev, "TURN client event");
            let waiters = std::mem::take(&mut self.waiters);
            for w in waiters {
                let keep = match (&ev, w) {
                    (TurnEvent::AllocationCreated(_, relayed), Waiter::Allocate(tx)) => {
                        let _ = tx.send(Ok(*relayed));
                        None
                    }
                    (TurnEvent::AllocationCreateFailed(_), Waiter::Allocate(tx)) => {
                        let _ = tx.send(Err(self.failure(0, "allocation")));
                        None
                    }
                    (ev, w) => match (Settled::by(ev), w) {
                        (Some((Settled::Permission(ip), ok)), Waiter::Permission(want, tx))
                            if ip == want =>
                        {
                            self.settle(tx, 1, "permission", ok)
                        }
                        (Some((Settled::Channel(peer), ok)), Waiter::Channel(want, tx))
                            if peer == want =>
                        {
                            self.settle(tx, 2, "channel bind", ok)
                        }
                        (_, w) => Some(w),
                    },
                };
                if let Some(w) = keep {
                    self.waiters.push(w);
                }
            }
        }
    }

    fn fail_allocate(&mut self, err: ClientError) {
        if let Some(i) = self
            .waiters
            .iter()
            .position(|w| matches!(w, Waiter::Allocate(_)))
            && let Waiter::Allocate(tx) = self.waiters.swap_remove(i)
        {
            let _ = tx.send(Err(err));
        }
    }

    fn close_all(&mut self) {
        self.closed = true;
        for w in std::mem::take(&mut self.waiters) {
            match w {
                Waiter::Allocate(tx) => {
                    let _ = tx.send(Err(ClientError::Closed));
                }
                Waiter::Permission(_, tx) | Waiter::Channel(_, tx) => {
                    let _ = tx.send(Err(ClientError::Closed));
                }
                Waiter::Closed(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// A TURN allocation over UDP, kept alive (refreshes of allocation, permissions and channels)
/// by a background task until [`close`](TurnClient::close) or drop.
///
/// ```no_run
/// # async fn demo() -> Result<(), nat::ClientError> {
/// use nat::{Credentials, TurnClient, TurnOptions};
/// let server = "127.0.0.1:3478".parse().unwrap();
/// let mut turn = TurnClient::allocate(server, Credentials::new("test", "test"),
///     TurnOptions::default()).await?;
/// let peer = "127.0.0.1:40000".parse().unwrap();
/// turn.create_permission(peer).await?;      // or bind_channel(peer) for 4-byte framing
/// turn.send_to(b"hello", peer).await?;
/// let (data, from) = turn.recv_from().await?;
/// turn.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TurnClient {
    inner: Arc<Mutex<Inner>>,
    socket: Arc<UdpSocket>,
    wake: Arc<Notify>,
    data_rx: Option<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    relayed: SocketAddr,
    local: SocketAddr,
    server: SocketAddr,
    timeout: Duration,
    drops: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for TurnClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TurnClient {
    /// Allocate a UDP relay on `server` (long-term credentials; the 401/nonce round trip is
    /// handled). Returns once the server granted the allocation.
    ///
    /// A 437 (Allocation Mismatch: the server still remembers our 5-tuple, e.g. a reused local
    /// port) is retried once from a fresh socket, as RFC 8656 §7.3 suggests.
    pub async fn allocate(
        server: SocketAddr,
        credentials: Credentials,
        opts: TurnOptions,
    ) -> Result<Self, ClientError> {
        // Hold the first socket while retrying so the retry gets a different local port.
        let first = Arc::new(connected_socket(server).await?);
        match Self::allocate_on(first.clone(), server, credentials.clone(), opts.clone()).await {
            Err(ClientError::Rejected { code: 437, reason }) => {
                warn!(%server, %reason, "437 Allocation Mismatch; retrying from a fresh port");
                let second = Arc::new(connected_socket(server).await?);
                let r = Self::allocate_on(second, server, credentials, opts).await;
                drop(first);
                r
            }
            r => r,
        }
    }

    async fn allocate_on(
        socket: Arc<UdpSocket>,
        server: SocketAddr,
        credentials: Credentials,
        opts: TurnOptions,
    ) -> Result<Self, ClientError> {
        let local = socket.local_addr()?;
        let mut config = TurnConfig::new(TurnCredentials::new(
            &credentials.username,
            &credentials.password,
        ));
        // Send USERNAME, not the RFC 8489 USERHASH: the server must read the REST expiry and
        // node id from it (and coturn does not implement USERHASH).
        config.set_anonymous_username(Feature::Disabled);
        let client = TurnClientUdp::allocate(local, server, config);
        let (tx, rx) = oneshot::channel();
        let inner = Arc::new(Mutex::new(Inner {
            client,
            base: std::time::Instant::now(),
            waiters: vec![Waiter::Allocate(tx)],
            last_error: [None, None, None],
            mapped: None,
            allocate_401s: 0,
            closed: false,
        }));
        let wake = Arc::new(Notify::new());
        let (data_tx, data_rx) = mpsc::channel(opts.recv_queue.max(1));
        let drops = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_client(
            inner.clone(),
            socket.clone(),
            wake.clone(),
            data_tx,
            drops.clone(),
        ));
        let relayed = match tokio::time::timeout(opts.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Closed),
            // A refusal the protocol machine would not accept (e.g. an unsigned 401 for
            // expired credentials) still explains the silence.
            Err(_) => Err(match lock(&inner).last_error[0].clone() {
                Some((code, reason)) => ClientError::Rejected { code, reason },
                None => ClientError::Timeout(server),
            }),
        };
        let relayed = match relayed {
            Ok(r) => r,
            Err(e) => {
                task.abort();
                return Err(e);
            }
        };
        info!(%server, %local, %relayed, user = %credentials.username, "TURN allocation ready");
        Ok(Self {
            inner,
            socket,
            wake,
            data_rx: Some(data_rx),
            relayed,
            local,
            server,
            timeout: opts.timeout,
            drops,
            task,
        })
    }

    /// The relayed transport address peers send to.
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// Our local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server-reflexive address the server saw in the Allocate (XOR-MAPPED-ADDRESS), if
    /// it reported one.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        lock(&self.inner).mapped
    }

    /// The TURN server.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Peer datagrams dropped because [`recv_from`](Self::recv_from) was not called fast enough.
    pub fn dropped(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        self.wake.notify_one();
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(self.server)),
        }
    }

    /// Start a request with `start` on the open client, leave the waiter `waiter` makes
    /// for its answer, and wait for that answer.
    async fn request(
        &self,
        start: impl FnOnce(&mut TurnClientUdp, Instant) -> Result<(), String>,
        waiter: impl FnOnce(oneshot::Sender<Result<(), ClientError>>) -> Waiter,
    ) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut g = lock(&self.inner);
            if g.closed {
                return Err(ClientError::Closed);
            }
            let now = g.now();
            start(&mut g.client, now).map_err(ClientError::Turn)?;
            g.waiters.push(waiter(tx));
        }
        self.wait(rx).await
    }

    /// Install a permission for `peer`'s IP (CreatePermission) and wait for the answer.
    pub async fn create_permission(&self, peer: SocketAddr) -> Result<(), ClientError> {
        self.request(
            |c, now| {
                c.create_permission(TransportType::Udp, peer.ip(), now)
                    .map_err(|e| e.to_string())
            },
            |tx| Waiter::Permission(peer.ip(), tx),
        )
        .await
    }

    /// Bind a channel to `peer` (ChannelBind; also installs the permission) and wait.
    /// Data to and from `peer` then uses 4-byte ChannelData framing instead of Send/Data.
    pub async fn bind_channel(&self, peer: SocketAddr) -> Result<(), ClientError> {
        self.request(
            |c, now| {
                c.bind_channel(TransportType::Udp, peer, now)
                    .map_err(|e| e.to_string())
            },
            |tx| Waiter::Channel(peer, tx),
        )
        .await
    }

    /// Send `data` to `peer` through the relay (needs a permission or channel for `peer`).
    pub async fn send_to(&self, data: &[u8], peer: SocketAddr) -> Result<(), ClientError> {
        let out = {
            let mut g = lock(&self.inner);
            if g.closed {
                return Err(ClientError::Closed);
            }
            let now = g.now();
            match g.client.send_to(TransportType::Udp, peer, data, now) {
                Ok(Some(t)) => t.build(),
                Ok(None) => return Ok(()),
                Err(e) => return Err(ClientError::Turn(e.to_string())),
            }
        };
        self.socket.send(&out.data).await?;
        Ok(())
    }

    /// The next datagram a peer sent to our relayed address: `(data, peer)`.
    /// [`Closed`](ClientError::Closed) once the receiver was taken.
    pub async fn recv_from(&mut self) -> Result<(Vec<u8>, SocketAddr), ClientError> {
        match self.data_rx.as_mut() {
            Some(rx) => rx.recv().await.ok_or(ClientError::Closed),
            None => Err(ClientError::Closed),
        }
    }

    /// The queue of peer datagrams `(data, peer)`, for a reader in another task than the
    /// senders (the client is then shared, and [`recv_from`](Self::recv_from) returns
    /// `Closed`). `None` when taken already.
    pub fn take_receiver(&mut self) -> Option<mpsc::Receiver<(Vec<u8>, SocketAddr)>> {
        self.data_rx.take()
    }

    /// Delete the allocation (Refresh with lifetime 0) and wait briefly for the answer.
    pub async fn close(self) {
        self.shutdown().await;
    }

    /// [`close`](Self::close) for a shared client: delete the allocation and wait briefly;
    /// sends afterwards fail with `Closed`.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        {
            let mut g = lock(&self.inner);
            if g.closed {
                return;
            }
            let now = g.now();
            if g.client.delete(now).is_err() {
                return;
            }
            g.waiters.push(Waiter::Closed(tx));
        }
        self.wake.notify_one();
        let _ = tokio::time::timeout(self.timeout.min(Duration::from_secs(2)), rx).await;
    }
}

/// Remember error codes (and the mapped address) from server responses before the
/// protocol machine consumes them, so failures can say *why*.
fn peek_response(inner: &mut Inner, data: &[u8]) {
    let Ok(msg) = Message::from_bytes(data) else {
        return;
    };
    if !msg.is_response() {
        return;
    }
    let method = msg.method();
    if msg.class() == MessageClass::Error {
        let idx = if method == ALLOCATE {
            0
        } else if method == CREATE_PERMISSION {
            1
        } else if method == CHANNEL_BIND {
            2
        } else {
            return;
        };
        if let Ok(e) = msg.attribute::<ErrorCode>() {
            if e.code() != ErrorCode::UNAUTHORIZED && e.code() != ErrorCode::STALE_NONCE {
                warn!(code = e.code(), reason = e.reason(), "TURN request refused");
            }
            inner.last_error[idx] = Some((e.code(), e.reason().trim_end_matches('\0').to_owned()));
            if idx == 0 && e.code() == ErrorCode::UNAUTHORIZED {
                // The first 401 is the nonce challenge; a second one refuses our credentials.
                inner.allocate_401s += 1;
                if inner.allocate_401s >= 2 {
                    let reason = e.reason().to_owned();
                    inner.fail_allocate(ClientError::Rejected {
                        code: ErrorCode::UNAUTHORIZED,
                        reason,
                    });
                }
            }
        }
    } else if method == ALLOCATE
        && let Ok(x) = msg.attribute::<XorMappedAddress>()
    {
        inner.mapped = Some(x.addr(msg.transaction_id()));
    }
}

async fn run_client(
    inner: Arc<Mutex<Inner>>,
    socket: Arc<UdpSocket>,
    wake: Arc<Notify>,
    data_tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    drops: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let deadline;
        {
            let mut g = lock(&inner);
            let now = g.now();
            let mut closed = false;
            let mut wait = Duration::from_secs(3600);
            loop {
                match g.client.poll(now) {
                    TurnPollRet::WaitUntil(at) => {
                        wait = at.saturating_duration_since(now);
                        break;
                    }
                    TurnPollRet::Closed => {
                        closed = true;
                        break;
                    }
                    // UDP allocations never ask for TCP sockets.
                    TurnPollRet::AllocateTcpSocket { .. } | TurnPollRet::TcpClose { .. } => {}
                }
            }
            while let Some(t) = g.client.poll_transmit(now) {
                out.push(t.data.as_ref().to_vec());
            }
            g.dispatch_events();
            if closed {
                g.close_all();
            }
            deadline = tokio::time::Instant::now() + wait;
        }
        for d in out {
            if let Err(e) = socket.send(&d).await {
                debug!("TURN client send: {e}");
            }
        }
        if lock(&inner).closed {
            return;
        }
        tokio::select! {
            r = socket.recv(&mut buf) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) => { debug!("TURN client recv: {e}"); continue; }
                };
                let mut g = lock(&inner);
                let now = g.now();
                peek_response(&mut g, &buf[..n]);
                let (local, remote) = (g.client.local_addr(), g.client.remote_addr());
                let t = Transmit::new(&buf[..n], TransportType::Udp, remote, local);
                match g.client.recv(t, now) {
                    TurnRecvRet::PeerData(d) => {
                        let item = (d.data().to_vec(), d.peer);
                        if data_tx.try_send(item).is_err() {
                            drops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    TurnRecvRet::Handled | TurnRecvRet::Ignored(_) => {}
                    TurnRecvRet::PeerIcmp { peer, icmp_type, .. } => {
                        debug!(%peer, icmp_type, "ICMP from peer via TURN");
                    }
                }
                while let Some(d) = g.client.poll_recv(now) {
                    let item = (d.data().to_vec(), d.peer);
                    if data_tx.try_send(item).is_err() {
                        drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            () = wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}
