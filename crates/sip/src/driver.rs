//! The tokio side of SIP (`--sip-listen ADDR`): [`SipSockets`] is the transport alone, a UDP
//! socket and a TCP listener on the same address that hand every datagram and framed
//! message to their owner and send what the owner gives them; [`start`] runs a
//! [`FrontEnd`] over an in-process [`Overlay`] on top of it (what `p2psip sip-frontends`
//! uses). A real peer owns its front-end inside its sans-IO core and uses [`SipSockets`]
//! directly, so the front-end and the overlay node share one loop.
//!
//! TCP connections (accepted, or dialled to a registered UA's contact) each run in their
//! own task with a bounded send queue; the transport never waits on a connection (a full
//! queue drops the message and counts it — SIP over UDP retransmits, TCP peers get 503/408
//! from their own timers). Idle connections close; the number of connections is capped.

// This module is the I/O shell the sans-IO bans (clippy.toml) leave room for: it reads the
// clock to give the front-end its `now` and spawns the socket and connection tasks.
#![allow(clippy::disallowed_methods)]

use crate::frontend::{FrontEnd, FrontEndStats, FrontEndTables};
use crate::msg::{MAX_MESSAGE, SipMessage, StreamFramer};
use crate::overlay_api::{Overlay, OverlayEvent};
use crate::txn::{Peer, SipTransmit, Transport};
use overlay::Time;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc, oneshot};

/// The overlay as the in-process front-end loop needs it: the [`Overlay`] calls plus a way
/// to take its events and to be woken when one is queued.
pub trait OverlayPort: Overlay + Send + 'static {
    /// Next event for this front-end.
    fn next_event(&mut self) -> Option<OverlayEvent>;
    /// Call `waker` whenever an event is queued.
    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>);
}

impl OverlayPort for crate::loopback::LoopbackOverlay {
    fn next_event(&mut self) -> Option<OverlayEvent> {
        self.poll_event()
    }
    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>) {
        crate::loopback::LoopbackOverlay::set_waker(self, waker)
    }
}

/// Socket-level bounds.
#[derive(Clone, Debug)]
pub struct DriverLimits {
    /// Most TCP connections at once (accepted and dialled).
    pub max_connections: usize,
    /// Messages queued per connection before dropping.
    pub conn_queue: usize,
    /// A connection with no traffic this long is closed.
    pub idle: Duration,
    /// Dialling a UA gives up after this long.
    pub connect_timeout: Duration,
    /// Datagrams and framed messages waiting for the owner (readers wait when it is
    /// full, which is TCP backpressure; UDP datagrams beyond it are dropped and counted).
    pub inbound_queue: usize,
    /// Messages waiting to be sent (beyond it, [`SipSockets::send`] drops and counts).
    pub outbound_queue: usize,
}

impl Default for DriverLimits {
    fn default() -> Self {
        DriverLimits {
            max_connections: 1024,
            conn_queue: 4096,
            idle: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(3),
            inbound_queue: 4096,
            outbound_queue: 16_384,
        }
    }
}

/// Driver counters (besides the front-end's).
#[derive(Clone, Debug, Default)]
pub struct DriverStats {
    /// The front-end's counters (zero where the front-end lives elsewhere).
    pub frontend: FrontEndStats,
    /// The front-end's table sizes (zero where the front-end lives elsewhere): what a soak
    /// run watches to see state end with the calls.
    pub tables: FrontEndTables,
    /// Messages dropped because a queue was full or a connection could not be opened.
    pub dropped_out: u64,
    /// Datagrams dropped because the owner was not keeping up.
    pub dropped_in: u64,
    /// Connections refused at the cap.
    pub refused_connections: u64,
    /// TCP connections closed for broken framing.
    pub framing_errors: u64,
}

impl DriverStats {
    /// The counters as one line for the end of a run (`p2psip sip-frontends` prints one per
    /// front-end when it stops): what was served, refused by status code, and dropped.
    pub fn summary(&self) -> String {
        let f = &self.frontend;
        format!(
            "registered {}, calls out {}, calls in {}, 404 {}, 400 {}, 503 {}, 401 {}, 403 {}, \
             dropped {}, unparseable {}",
            f.registered,
            f.calls_out,
            f.calls_in,
            f.not_found,
            f.bad_requests,
            f.overloaded,
            f.auth_challenged,
            f.auth_forbidden,
            self.dropped_out,
            f.unparseable
        )
    }
}

pub use crate::peer::SipInbound;

enum ConnEvent {
    Message(Peer, Box<SipMessage>),
    Closed(SocketAddr),
    Framing(SocketAddr),
}

/// The SIP transport of one front-end: UDP and TCP on one address.
pub struct SipSockets {
    /// Where it listens (UDP and TCP, same port).
    pub local: SocketAddr,
    out: mpsc::Sender<SipTransmit>,
    task: Running,
}

/// A spawned loop (the sockets' or a front-end's): its counters, the signal that stops it
/// and the handle to wait for it by.
struct Running {
    stats: Arc<Mutex<DriverStats>>,
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<()>,
}

impl Running {
    fn stats(&self) -> DriverStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.join.await;
    }
}

impl std::fmt::Debug for SipSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipSockets")
            .field("local", &self.local)
            .finish()
    }
}

/// Where to hand messages for UAs (a cheap clone of the transport's send queue).
#[derive(Clone, Debug)]
pub struct SipSender {
    out: mpsc::Sender<SipTransmit>,
    stats: Arc<Mutex<DriverStats>>,
}

impl SipSender {
    /// Queue `t` for sending; a full queue drops it and counts it (SIP retransmits).
    pub fn send(&self, t: SipTransmit) {
        if self.out.try_send(t).is_err()
            && let Ok(mut s) = self.stats.lock()
        {
            s.dropped_out += 1;
        }
    }
}

impl SipSockets {
    /// Bind UDP and TCP on `listen` (port 0: one free port for both) and start moving
    /// bytes; inbound datagrams and messages arrive on the returned receiver.
    pub async fn bind(
        listen: SocketAddr,
        limits: DriverLimits,
    ) -> io::Result<(SipSockets, mpsc::Receiver<SipInbound>)> {
        let (udp, tcp) = bind_pair(listen).await?;
        let local = udp.local_addr()?;
        let stats = Arc::new(Mutex::new(DriverStats::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (out_tx, out_rx) = mpsc::channel(limits.outbound_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(limits.inbound_queue.max(1));
        let t = SocketTask {
            udp: Arc::new(udp),
            conns: BTreeMap::new(),
            limits,
            stats: stats.clone(),
        };
        let join = tokio::spawn(t.run(tcp, out_rx, in_tx, stop_rx));
        Ok((
            SipSockets {
                local,
                out: out_tx,
                task: Running {
                    stats,
                    stop: Some(stop_tx),
                    join,
                },
            },
            in_rx,
        ))
    }

    /// A handle to send with.
    pub fn sender(&self) -> SipSender {
        SipSender {
            out: self.out.clone(),
            stats: self.task.stats.clone(),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> DriverStats {
        self.task.stats()
    }

    /// Stop and wait for the transport to end.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(listen).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

struct SocketTask {
    udp: Arc<UdpSocket>,
    conns: BTreeMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    limits: DriverLimits,
    stats: Arc<Mutex<DriverStats>>,
}

impl SocketTask {
    fn count(&self, f: impl FnOnce(&mut DriverStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    async fn run(
        mut self,
        tcp: TcpListener,
        mut out: mpsc::Receiver<SipTransmit>,
        to_owner: mpsc::Sender<SipInbound>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let (conn_tx, mut conn_rx) = mpsc::channel::<ConnEvent>(self.limits.inbound_queue.max(1));
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r
                        && n <= MAX_MESSAGE
                    {
                        let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
                        if to_owner.try_send(SipInbound::Datagram { from, bytes }).is_err() {
                            self.count(|s| s.dropped_in += 1);
                        }
                    }
                }
                Some(ev) = conn_rx.recv() => match ev {
                    ConnEvent::Message(from, msg) => {
                        // A stream waits for its owner (TCP backpressure).
                        if to_owner.send(SipInbound::Message { from, msg }).await.is_err() {
                            break;
                        }
                    }
                    ConnEvent::Closed(a) => { self.conns.remove(&a); }
                    ConnEvent::Framing(a) => {
                        self.conns.remove(&a);
                        self.count(|s| s.framing_errors += 1);
                    }
                },
                r = tcp.accept() => {
                    if let Ok((stream, from)) = r {
                        if self.conns.len() >= self.limits.max_connections {
                            self.count(|s| s.refused_connections += 1);
                        } else {
                            let (tx, rx) = mpsc::channel(self.limits.conn_queue);
                            self.conns.insert(from, tx);
                            tokio::spawn(conn_task(Some(stream), from, rx, conn_tx.clone(), self.limits.clone()));
                        }
                    }
                }
                t = out.recv() => match t {
                    Some(t) => self.send(t, &conn_tx).await,
                    None => break,
                },
            }
        }
    }

    async fn send(&mut self, t: SipTransmit, conn_tx: &mpsc::Sender<ConnEvent>) {
        match t.to.transport {
            Transport::Udp => {
                let _ = self.udp.send_to(&t.bytes, t.to.addr).await;
            }
            Transport::Tcp => {
                if !self.conns.contains_key(&t.to.addr) {
                    if self.conns.len() >= self.limits.max_connections {
                        self.count(|s| s.dropped_out += 1);
                        return;
                    }
                    let (tx, rx) = mpsc::channel(self.limits.conn_queue);
                    self.conns.insert(t.to.addr, tx);
                    tokio::spawn(conn_task(
                        None,
                        t.to.addr,
                        rx,
                        conn_tx.clone(),
                        self.limits.clone(),
                    ));
                }
                if let Some(c) = self.conns.get(&t.to.addr)
                    && c.try_send(t.bytes).is_err()
                {
                    self.count(|s| s.dropped_out += 1);
                }
            }
        }
    }
}

/// A running in-process front-end ([`start`]).
pub struct FrontEndTask {
    /// Where it listens (UDP and TCP, same port).
    pub local: SocketAddr,
    task: Running,
}

impl FrontEndTask {
    /// Current counters.
    pub fn stats(&self) -> DriverStats {
        self.task.stats()
    }

    /// Stop and wait for the loop to end.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

/// Bind UDP and TCP on `listen` (port 0: one free port for both), build the front-end
/// with `make(local_addr)` and run it over the in-process overlay `ov` on the current
/// runtime: one loop task owns the front-end and the overlay port.
pub async fn start<O: OverlayPort>(
    listen: SocketAddr,
    limits: DriverLimits,
    make: impl FnOnce(SocketAddr) -> FrontEnd,
    mut ov: O,
) -> io::Result<FrontEndTask> {
    let (sockets, inbound) = SipSockets::bind(listen, limits).await?;
    let local = sockets.local;
    let fe = make(local);
    let notify = Arc::new(Notify::new());
    let n2 = notify.clone();
    ov.set_waker(Arc::new(move || n2.notify_one()));
    let stats = sockets.task.stats.clone();
    let (stop_tx, stop_rx) = oneshot::channel();
    let lp = Loop {
        fe,
        ov,
        out: sockets.sender(),
        stats: stats.clone(),
        epoch: Instant::now(),
    };
    let join = tokio::spawn(async move {
        lp.run(inbound, notify, stop_rx).await;
        sockets.shutdown().await;
    });
    Ok(FrontEndTask {
        local,
        task: Running {
            stats,
            stop: Some(stop_tx),
            join,
        },
    })
}

struct Loop<O> {
    fe: FrontEnd,
    ov: O,
    out: SipSender,
    stats: Arc<Mutex<DriverStats>>,
    epoch: Instant,
}

impl<O: OverlayPort> Loop<O> {
    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<SipInbound>,
        notify: Arc<Notify>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            self.flush();
            let deadline = self.fe.poll_timeout().map(|t| {
                let now = self.now();
                tokio::time::Instant::now() + t.saturating_since(now)
            });
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                m = inbound.recv() => {
                    let now = self.now();
                    match m {
                        Some(SipInbound::Datagram { from, bytes }) => {
                            self.fe.handle_datagram(now, from, &bytes, &mut self.ov);
                        }
                        Some(SipInbound::Message { from, msg }) => {
                            self.fe.handle_message(now, from, *msg, &mut self.ov);
                        }
                        None => break,
                    }
                }
                _ = notify.notified() => {}
                _ = sleep => {
                    let now = self.now();
                    self.fe.handle_timeout(now, &mut self.ov);
                }
            }
            let now = self.now();
            while let Some(ev) = self.ov.next_event() {
                self.fe.handle_overlay_event(now, ev, &mut self.ov);
            }
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.fe.poll_transmit() {
            self.out.send(t);
        }
        if let Ok(mut s) = self.stats.lock() {
            s.frontend = self.fe.stats().clone();
            s.tables = self.fe.tables();
        }
    }
}

/// Most bytes a connection gathers from its queue into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// One TCP connection: read and frame SIP, write queued messages, close when idle.
async fn conn_task(
    stream: Option<TcpStream>,
    addr: SocketAddr,
    mut out: mpsc::Receiver<Vec<u8>>,
    to_loop: mpsc::Sender<ConnEvent>,
    limits: DriverLimits,
) {
    let stream = match stream {
        Some(s) => s,
        None => {
            match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                _ => {
                    let _ = to_loop.send(ConnEvent::Closed(addr)).await;
                    return;
                }
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let peer = Peer {
        transport: Transport::Tcp,
        addr,
    };
    let reader = {
        let to_loop = to_loop.clone();
        async move {
            let mut framer = StreamFramer::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match tokio::time::timeout(limits.idle, rd.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return ConnEvent::Closed(addr),
                    Ok(Ok(n)) => n,
                };
                match framer.push(buf.get(..n).unwrap_or(&[])) {
                    Ok(msgs) => {
                        for m in msgs {
                            if to_loop
                                .send(ConnEvent::Message(peer, Box::new(m)))
                                .await
                                .is_err()
                            {
                                return ConnEvent::Closed(addr);
                            }
                        }
                    }
                    Err(_) => return ConnEvent::Framing(addr),
                }
            }
        }
    };
    let writer = async move {
        // Messages queued together leave in one write: one system call and fewer segments
        // per burst instead of one per message.
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while let Some(b) = out.recv().await {
            batch.clear();
            batch.extend_from_slice(&b);
            while batch.len() < WRITE_BATCH {
                let Ok(b) = out.try_recv() else {
                    break;
                };
                batch.extend_from_slice(&b);
            }
            if wr.write_all(&batch).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    // The connection ends when the reader ends (peer closed, idle, bad framing); the writer
    // ends when the loop drops our queue.
    tokio::select! {
        ev = reader => { let _ = to_loop.send(ev).await; }
        _ = writer => { let _ = to_loop.send(ConnEvent::Closed(addr)).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each counter lands under its own name in the summary.
    #[test]
    fn the_summary_names_each_counter() {
        let s = DriverStats {
            frontend: FrontEndStats {
                registered: 1,
                calls_out: 2,
                calls_in: 3,
                not_found: 4,
                bad_requests: 5,
                overloaded: 6,
                auth_challenged: 7,
                auth_forbidden: 8,
                unparseable: 10,
            },
            dropped_out: 9,
            ..DriverStats::default()
        };
        assert_eq!(
            s.summary(),
            "registered 1, calls out 2, calls in 3, 404 4, 400 5, 503 6, 401 7, 403 8, \
             dropped 9, unparseable 10"
        );
    }
}
