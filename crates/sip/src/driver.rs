//! The tokio driver of the front-end (`--sip-listen ADDR`): a UDP socket and a TCP listener
//! on the same address feeding one [`FrontEnd`], plus the overlay's events.
//!
//! One loop task owns the front-end. TCP connections (accepted, or dialled to a registered
//! UA's contact) each run in their own task with a bounded send queue; the loop never waits
//! on a connection (a full queue drops the message and counts it — SIP over UDP retransmits,
//! TCP peers get 503/408 from their own timers). Idle connections close; the number of
//! connections is capped.

use crate::frontend::{FrontEnd, FrontEndStats};
use crate::msg::{MAX_MESSAGE, SipMessage, StreamFramer};
use crate::overlay_api::{Overlay, OverlayEvent};
use crate::txn::{Peer, Transport};
use overlay::Time;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc, oneshot};

/// The overlay as the driver needs it: the [`Overlay`] calls plus a way to take its events
/// and to be woken when one is queued.
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
    /// Frames from all connections waiting for the loop (readers wait when it is full).
    pub inbound_queue: usize,
}

impl Default for DriverLimits {
    fn default() -> Self {
        DriverLimits {
            max_connections: 1024,
            conn_queue: 4096,
            idle: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(3),
            inbound_queue: 4096,
        }
    }
}

/// Driver counters (besides the front-end's).
#[derive(Clone, Debug, Default)]
pub struct DriverStats {
    /// The front-end's counters.
    pub frontend: FrontEndStats,
    /// Messages dropped because a connection's queue was full or it could not be opened.
    pub dropped_out: u64,
    /// Connections refused at the cap.
    pub refused_connections: u64,
    /// TCP connections closed for broken framing.
    pub framing_errors: u64,
}

/// A running front-end.
pub struct FrontEndTask {
    /// Where it listens (UDP and TCP, same port).
    pub local: SocketAddr,
    stats: Arc<Mutex<DriverStats>>,
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<()>,
}

impl FrontEndTask {
    /// Current counters.
    pub fn stats(&self) -> DriverStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stop and wait for the loop to end.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.join.await;
    }
}

enum ConnEvent {
    Message(Peer, Box<SipMessage>),
    Closed(SocketAddr),
    Framing(SocketAddr),
}

/// Bind UDP and TCP on `listen` (port 0: one free port for both), build the front-end
/// with `make(local_addr)` and run it on the current runtime.
// This is the I/O shell the sans-IO bans (clippy.toml) leave room for: it reads the clock to
// feed the front-end its `now` and spawns the loop task.
#[allow(clippy::disallowed_methods)]
pub async fn start<O: OverlayPort>(
    listen: SocketAddr,
    limits: DriverLimits,
    make: impl FnOnce(SocketAddr) -> FrontEnd,
    mut ov: O,
) -> io::Result<FrontEndTask> {
    let (udp, tcp) = bind_pair(listen).await?;
    let local = udp.local_addr()?;
    let fe = make(local);
    let notify = Arc::new(Notify::new());
    let n2 = notify.clone();
    ov.set_waker(Arc::new(move || n2.notify_one()));
    let stats = Arc::new(Mutex::new(DriverStats::default()));
    let (stop_tx, stop_rx) = oneshot::channel();
    let lp = Loop {
        fe,
        ov,
        udp: Arc::new(udp),
        conns: BTreeMap::new(),
        limits: limits.clone(),
        stats: stats.clone(),
        extra: DriverStats::default(),
        epoch: Instant::now(),
    };
    let join = tokio::spawn(lp.run(tcp, notify, stop_rx));
    Ok(FrontEndTask {
        local,
        stats,
        stop: Some(stop_tx),
        join,
    })
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

struct Loop<O> {
    fe: FrontEnd,
    ov: O,
    udp: Arc<UdpSocket>,
    conns: BTreeMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    limits: DriverLimits,
    stats: Arc<Mutex<DriverStats>>,
    extra: DriverStats,
    epoch: Instant,
}

impl<O: OverlayPort> Loop<O> {
    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    // The I/O shell: spawns a task per accepted TCP connection.
    #[allow(clippy::disallowed_methods)]
    async fn run(mut self, tcp: TcpListener, notify: Arc<Notify>, mut stop: oneshot::Receiver<()>) {
        let (in_tx, mut in_rx) = mpsc::channel::<ConnEvent>(self.limits.inbound_queue);
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        loop {
            self.flush(&in_tx).await;
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
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let now = self.now();
                        if n <= MAX_MESSAGE {
                            self.fe.handle_datagram(now, from, buf.get(..n).unwrap_or(&[]), &mut self.ov);
                        }
                    }
                }
                Some(ev) = in_rx.recv() => {
                    match ev {
                        ConnEvent::Message(peer, m) => {
                            let now = self.now();
                            self.fe.handle_message(now, peer, *m, &mut self.ov);
                        }
                        ConnEvent::Closed(a) => { self.conns.remove(&a); }
                        ConnEvent::Framing(a) => {
                            self.conns.remove(&a);
                            self.extra.framing_errors += 1;
                        }
                    }
                }
                r = tcp.accept() => {
                    if let Ok((stream, from)) = r {
                        if self.conns.len() >= self.limits.max_connections {
                            self.extra.refused_connections += 1;
                        } else {
                            let (tx, rx) = mpsc::channel(self.limits.conn_queue);
                            self.conns.insert(from, tx);
                            tokio::spawn(conn_task(Some(stream), from, rx, in_tx.clone(), self.limits.clone()));
                        }
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

    // The I/O shell: spawns a task per TCP connection it dials.
    #[allow(clippy::disallowed_methods)]
    async fn flush(&mut self, in_tx: &mpsc::Sender<ConnEvent>) {
        while let Some(t) = self.fe.poll_transmit() {
            match t.to.transport {
                Transport::Udp => {
                    let _ = self.udp.send_to(&t.bytes, t.to.addr).await;
                }
                Transport::Tcp => {
                    if !self.conns.contains_key(&t.to.addr) {
                        if self.conns.len() >= self.limits.max_connections {
                            self.extra.dropped_out += 1;
                            continue;
                        }
                        let (tx, rx) = mpsc::channel(self.limits.conn_queue);
                        self.conns.insert(t.to.addr, tx);
                        tokio::spawn(conn_task(
                            None,
                            t.to.addr,
                            rx,
                            in_tx.clone(),
                            self.limits.clone(),
                        ));
                    }
                    if let Some(c) = self.conns.get(&t.to.addr)
                        && c.try_send(t.bytes).is_err()
                    {
                        self.extra.dropped_out += 1;
                    }
                }
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            *s = DriverStats {
                frontend: self.fe.stats().clone(),
                ..self.extra.clone()
            };
        }
    }
}

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
        while let Some(b) = out.recv().await {
            if wr.write_all(&b).await.is_err() {
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
