//! Connection tasks: dial or accept, TLS + hello, then read and write frames until closed.
//!
//! A connection task never touches the core. It reports to the loop through one bounded
//! channel ([`ConnEvent`]) and waits when that channel is full (TCP backpressure towards the
//! sender). The loop feeds it through a bounded per-connection queue of encoded frames and
//! never waits on it (a full queue drops the frame and counts it).

use crate::budget::{FrameBudget, RateLog, SourceSlot};
use crate::config::Limits;
use crate::hello::{self, Hello, HelloError, RELAYED, RELAYING};
use crate::link_tls::TlsLink;
use crate::relay::{self, EnvelopeError};
use crate::send_queue::{QueueRx, QueueTx, send_queue};
use crate::stats::Shared;
use crate::tls::{Refusal, server_name_or_relay};
use overlay::driver::Peer;
use overlay::wire::{CodecError, decode_frame};
use overlay::{Contact, Message, NodeId};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

/// Bytes one read takes at most, into a scratch buffer on the stack: a link keeps a read
/// buffer only for the part of a frame that has not all arrived.
const READ_CHUNK: usize = 16 * 1024;
/// Largest write batch assembled from queued frames.
const WRITE_BATCH: usize = 64 * 1024;
/// A link over its frame budget pauses once its debt reaches this (fewer, longer pauses
/// than one timer per frame; the average rate is the same).
const MIN_PAUSE: Duration = Duration::from_millis(5);
/// At most one "over its frame budget" warning per link per this interval.
const THROTTLE_LOG_EVERY: Duration = Duration::from_secs(10);
/// A link the other side dialled closes for idleness only after this many idle timeouts:
/// the dialler decides when a link it opened is no longer needed (its core may keep it for
/// maintenance that is rarer than the idle timeout), and this side only reclaims links a
/// dialler forgot.
const INBOUND_IDLE_FACTOR: u32 = 8;

/// What the loop and a link's task both know of the link.
#[derive(Debug, Default)]
pub(crate) struct LinkMarks {
    /// The loop's core keeps the link ([`overlay::driver::Core::keeps_link`], set by the
    /// loop): it is never closed for idleness.
    pub(crate) keep: AtomicBool,
    /// The peer needs the link too: it dialled it, or keeps its ring over it (it sent an
    /// upkeep request on it, [`Message::is_upkeep_request`]; set by the link's reader).
    /// Such a link closes for idleness only after [`INBOUND_IDLE_FACTOR`] idle timeouts,
    /// and the loop closes it last when it makes room: closing it only makes the peer dial
    /// again, and a peer that many have as a finger went through its links one redial at a
    /// time.
    pub(crate) theirs: AtomicBool,
}

/// A link's marks, shared by the loop and the link's task.
pub(crate) type Marks = Arc<LinkMarks>;

impl LinkMarks {
    /// Marks of a new link: kept by the core or not, dialled by the peer or not.
    pub(crate) fn new(keep: bool, theirs: bool) -> Marks {
        Arc::new(LinkMarks {
            keep: keep.into(),
            theirs: theirs.into(),
        })
    }
}

/// What connection tasks tell the loop. Messages travel boxed: the loop's channel holds its
/// slots in blocks sized for the largest event, and a message inline tripled that size.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// Set-up finished. Inbound connections bring their send queue. `outbound_only`: the
    /// peer accepts no connections (its address is its relay's).
    Up {
        conn: u64,
        peer: Peer,
        tx: Option<QueueTx>,
        keep: Marks,
        outbound_only: bool,
    },
    /// A frame from `from` to be relayed to our outbound-only client `to` (`_share` as for
    /// [`ConnEvent::Frame`]: relayed traffic counts against the sender's link).
    Relay {
        to: NodeId,
        from: Peer,
        msg: Box<Message>,
        _share: OwnedSemaphorePermit,
    },
    /// A frame from an authenticated peer. `_share` is one of its link's in-flight slots,
    /// given back when the loop has handled the frame.
    Frame {
        peer: Peer,
        msg: Box<Message>,
        _share: OwnedSemaphorePermit,
    },
    /// The connection is gone (or never came up).
    Down {
        conn: u64,
        peer: NodeId,
        dial_failed: bool,
    },
}

/// What every connection task shares.
pub(crate) struct Ctx {
    pub(crate) hello: Hello,
    pub(crate) limits: Limits,
    pub(crate) stats: Arc<Shared>,
    pub(crate) to_loop: mpsc::Sender<ConnEvent>,
    /// Whether the runtime is stopping, and how.
    pub(crate) stop: watch::Receiver<Stop>,
    /// TLS configurations for accepted and dialled links.
    pub(crate) server_tls: Arc<rustls::ServerConfig>,
    pub(crate) client_tls: Arc<rustls::ClientConfig>,
    /// Outbound-only peers we relay for (kept by the loop; read at relayed set-ups).
    pub(crate) clients: Mutex<BTreeSet<NodeId>>,
    /// Outbound-only mode: our relay, the one peer whose relay envelopes we accept.
    pub(crate) home: Option<NodeId>,
}

/// How the runtime stops, as its links see it: one channel, so that a link waits on one
/// receiver for both (each wait is part of every link's task for the link's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Not stopping.
    Running,
    /// A graceful leave: links flush what is queued, then close.
    Leaving,
    /// A hard stop ([`crate::Handle::kill`]): links drop their socket at once, flush nothing.
    Killed,
}

/// What a connection does with the frames it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Hand them to the loop as the peer's.
    Normal,
    /// A link we dialled through a relay: only we send; a frame read closes it.
    SendOnly,
    /// An inbound link relayed to our outbound-only client: forward its frames there.
    RelayTo(NodeId),
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("{}", describe_io(.0))]
    Io(#[from] std::io::Error),
    #[error("hello: {0}")]
    Hello(#[from] HelloError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("no peer certificate after the handshake")]
    NoCert,
    #[error("certificate binding: {0}")]
    Binding(#[from] enroll::cert::CertError),
    #[error("claimed listen address {claimed} is not on the source address {from}")]
    AddrMismatch {
        claimed: SocketAddr,
        from: SocketAddr,
    },
    #[error("runtime shutting down")]
    Shutdown,
    #[error("asked to relay to {0}, which is not an outbound-only peer of ours")]
    NotRelaying(NodeId),
}

impl SetupError {
    /// A peer that is simply not there (logged quietly) rather than one that misbehaved.
    fn is_unreachable(&self) -> bool {
        match self {
            SetupError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ),
            SetupError::Timeout("connect") | SetupError::Shutdown => true,
            _ => false,
        }
    }
}

/// An I/O error, with the refusal reason unwrapped when it came from our verifier.
fn describe_io(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Other(o))) => {
            format!("invalid peer certificate: {}", o.0)
        }
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => {
            "invalid peer certificate: revoked".into()
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

async fn read_hello<S: AsyncRead + Unpin>(s: &mut S) -> Result<Hello, SetupError> {
    let mut buf = [0u8; hello::MAX_LEN];
    s.read_exact(&mut buf[..hello::HEAD_LEN]).await?;
    let len = hello::total_len(&buf[..hello::HEAD_LEN])?;
    s.read_exact(&mut buf[hello::HEAD_LEN..len]).await?;
    Ok(hello::decode(&buf[..len])?.0)
}

fn peer_identity(
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<enroll::PeerIdentity, SetupError> {
    let first = certs.and_then(|c| c.first()).ok_or(SetupError::NoCert)?;
    Ok(enroll::identity_from_cert(first)?)
}

/// Dial `target` at `addr`, then run the connection. Frames queued in `rx` before the
/// connection is up are sent once it is.
///
/// An `async move` block rather than an `async fn`, as are [`accept`] and [`run`]: an async
/// fn keeps each argument twice in its future (as the argument and as the local it moves
/// into), and these futures live as long as the link.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn dial(
    ctx: Arc<Ctx>,
    conn: u64,
    target: Contact,
    addr: SocketAddr,
    rx: QueueRx,
    keep: Marks,
    done: mpsc::Sender<()>,
) -> impl Future<Output = ()> {
    async move {
        // Held until the link ends: the runtime's shutdown waits for every link's.
        let _done = done;
        let started = Instant::now();
        // Boxed, and so is the stream it yields: the handshake's state and the TLS stream
        // (1.2 KiB) are held by pointer, so this task's future, which lives as long as the
        // link, is sized for the running link alone (6.8 KiB per dialled link end before, 4.0
        // after; the stream itself moves on into the link's shared halves).
        let setup = Box::pin(async {
            let tcp = timeout(ctx.limits.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| SetupError::Timeout("connect"))??;
            tcp.set_nodelay(true)?;
            timeout(ctx.limits.handshake_timeout, async {
                let mut tls =
                    TlsLink::connect(ctx.client_tls.clone(), server_name_or_relay(target.id), tcp)
                        .await?;
                let mine = Hello {
                    target: Some(target.id),
                    ..ctx.hello
                };
                tls.write_all(&mine.encode()).await?;
                tls.flush().await?;
                let hello = read_hello(&mut tls).await?;
                let ident = peer_identity(tls.peer_certificates())?;
                // Either the target itself, or (address of an outbound-only peer) its relay,
                // which says so.
                let relayed = hello.has(RELAYING) && hello.id != target.id;
                let want = if relayed { hello.id } else { target.id };
                for claimed in [hello.id, ident.node_id] {
                    if claimed != want {
                        return Err(SetupError::Refused(Refusal::IdMismatch {
                            cert: claimed,
                            claimed: target.id,
                        }));
                    }
                }
                // The parts of the identity the link needs, not the identity (its serial is
                // a heap copy the link would keep for its life).
                Ok((Box::new(tls), (ident.layer, ident.role), relayed))
            })
            .await
            .map_err(|_| SetupError::Timeout("TLS handshake"))?
        });
        match setup.await {
            Ok((tls, (layer, role), relayed)) => {
                let setup_us = started.elapsed().as_micros() as u64;
                Shared::inc(&ctx.stats.c.dials_ok);
                Shared::add(&ctx.stats.c.dial_setup_us_sum, setup_us);
                ctx.stats
                    .c
                    .dial_setup_us_max
                    .fetch_max(setup_us, Ordering::Relaxed);
                debug!(peer = %target.id, %addr, setup_us, relayed, "connected");
                let peer = Peer {
                    contact: Contact::new(target.id, addr),
                    layer,
                    role,
                };
                // Boxed, as every wait that happens once per link: its state would otherwise
                // stay part of the link's task.
                if Box::pin(ctx.to_loop.send(ConnEvent::Up {
                    conn,
                    peer,
                    tx: None,
                    keep: keep.clone(),
                    outbound_only: false,
                }))
                .await
                .is_ok()
                {
                    let mode = if relayed {
                        Mode::SendOnly
                    } else {
                        Mode::Normal
                    };
                    run(&ctx, peer, tls, rx, mode, &keep).await;
                }
                report_down(&ctx, conn, target.id, false).await;
            }
            Err(e) => {
                if e.is_unreachable() {
                    debug!(peer = %target.id, %addr, "dial failed: {e}");
                } else {
                    warn!(peer = %target.id, %addr, "outbound connection refused: {e}");
                    ctx.stats
                        .refusal(format!("outbound to {} at {addr}: {e}", target.id));
                }
                Shared::inc(&ctx.stats.c.dials_failed);
                report_down(&ctx, conn, target.id, true).await;
            }
        }
    }
}

/// Set up an accepted TCP connection, then run it. `_permit` holds one of the inbound slots
/// for the connection's whole life; `slot` holds one of its source's set-up slots until
/// set-up ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn accept(
    ctx: Arc<Ctx>,
    conn: u64,
    tcp: TcpStream,
    source: SocketAddr,
    permit: OwnedSemaphorePermit,
    slot: SourceSlot,
    done: mpsc::Sender<()>,
) -> impl Future<Output = ()> {
    async move {
        // Held until the link ends (see `dial`).
        let (_permit, _done) = (permit, done);
        let started = Instant::now();
        let mut stop = ctx.stop.clone();
        // Boxed for the reason given in `dial` (5.7 KiB per accepted link end before, 3.3 after).
        let setup = Box::pin(async {
            tcp.set_nodelay(true)?;
            let mut tls = TlsLink::accept(ctx.server_tls.clone(), tcp).await?;
            let hello = read_hello(&mut tls).await?;
            let ident = peer_identity(tls.peer_certificates())?;
            if ident.node_id != hello.id {
                return Err(SetupError::Refused(Refusal::IdMismatch {
                    cert: ident.node_id,
                    claimed: hello.id,
                }));
            }
            let mut addr = hello.addr;
            if hello.has(RELAYED) {
                // An outbound-only peer names its relay's address, not its own.
            } else if addr.ip().is_unspecified() {
                addr.set_ip(source.ip());
            } else if ctx.limits.require_same_ip && addr.ip() != source.ip() {
                return Err(SetupError::AddrMismatch {
                    claimed: addr,
                    from: source,
                });
            }
            let mut mine = ctx.hello;
            let mode = match hello.target {
                Some(t) if t != ctx.hello.id => {
                    let ours = ctx.clients.lock().map(|c| c.contains(&t)).unwrap_or(false);
                    if !ours {
                        // Our plain hello tells the dialler whom it reached (it refuses us).
                        tls.write_all(&mine.encode()).await?;
                        tls.flush().await?;
                        return Err(SetupError::NotRelaying(t));
                    }
                    mine.flags |= RELAYING;
                    Mode::RelayTo(t)
                }
                _ => Mode::Normal,
            };
            tls.write_all(&mine.encode()).await?;
            tls.flush().await?;
            // As in `dial`: the parts of the identity the link needs.
            let ident = (ident.node_id, ident.layer, ident.role);
            Ok((Box::new(tls), ident, addr, mode, hello.has(RELAYED)))
        });
        // The outcome is bound inside the scrutinee so that it does not stay in this task (which
        // lives as long as the link) once taken apart.
        #[allow(clippy::blocks_in_conditions)]
        let (tls, (id, layer, role), addr, mode, outbound_only) = match {
            let outcome = tokio::select! {
                r = timeout(ctx.limits.handshake_timeout, setup) => r,
                _ = stop.wait_for(|s| *s != Stop::Running) => Ok(Err(SetupError::Shutdown)),
            };
            drop(slot);
            outcome
        } {
            Err(_) => {
                warn!(%source, "inbound connection closed: set-up not finished within {:?}", ctx.limits.handshake_timeout);
                ctx.stats
                    .refusal(format!("inbound from {source}: handshake timeout"));
                Shared::inc(&ctx.stats.c.handshake_timeouts);
                return;
            }
            Ok(Err(e)) => {
                if matches!(e, SetupError::Shutdown) {
                    return;
                }
                warn!(%source, "inbound connection refused: {e}");
                ctx.stats.refusal(format!("inbound from {source}: {e}"));
                Shared::inc(&ctx.stats.c.accepts_refused);
                return;
            }
            Ok(Ok(x)) => x,
        };
        Shared::inc(&ctx.stats.c.accepts_ok);
        debug!(peer = %id, %source, setup_us = started.elapsed().as_micros() as u64, "accepted");
        let peer = Peer {
            contact: Contact::new(id, addr),
            layer,
            role,
        };
        let (tx, rx) = send_queue(ctx.limits.send_queue, ctx.limits.send_queue_bytes);
        if let Mode::RelayTo(to) = mode {
            // Only relayed frames flow here; the loop never sends to the dialler on it.
            debug!(peer = %id, %to, "relaying");
            drop(tx);
            let (_keep, rx) = send_queue(1, 1);
            run(&ctx, peer, tls, rx, mode, &Marks::default()).await;
            return;
        }
        let keep = LinkMarks::new(false, true);
        if Box::pin(ctx.to_loop.send(ConnEvent::Up {
            conn,
            peer,
            tx: Some(tx),
            keep: keep.clone(),
            outbound_only,
        }))
        .await
        .is_err()
        {
            return;
        }
        run(&ctx, peer, tls, rx, mode, &keep).await;
        report_down(&ctx, conn, id, false).await;
    }
}

/// Tell the loop that connection `conn` to `peer` is gone (`dial_failed`: it never came
/// up). A loop that has stopped needs no telling.
async fn report_down(ctx: &Ctx, conn: u64, peer: NodeId, dial_failed: bool) {
    // Boxed: see `dial`.
    let _ = Box::pin(ctx.to_loop.send(ConnEvent::Down {
        conn,
        peer,
        dial_failed,
    }))
    .await;
}

/// Set once, waited for by both halves of a link: a flag and a wake-up kept in the link's
/// task (a watch channel allocated its own 8-fold wake-up per link, and a larger future for
/// each wait).
#[derive(Default)]
struct Latch {
    set: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

impl Latch {
    fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// Returns once [`Latch::set`] has been called (at once if it has been already).
    async fn wait(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before the check: a `set` after it wakes this wait.
            woken.as_mut().enable();
            if self.set.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }
}

/// The value out of its box, the box freed now (moving out with `*b` in a long-lived
/// function would hold the empty box until the function returns).
#[allow(clippy::boxed_local)] // Taking the box is the point: it is freed on return.
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// Read what has arrived (at most [`READ_CHUNK`] bytes) onto the end of `buf`, through a
/// scratch buffer that lives on the stack only while the read is polled, so that `buf` holds
/// exactly the bytes not yet decoded. Returns the bytes read (0 at the end of the stream).
/// Cancel-safe: nothing is read unless it is appended.
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = tokio::io::ReadBuf::uninit(&mut scratch);
        std::task::ready!(std::pin::Pin::new(&mut *rd).poll_read(cx, &mut rb))?;
        buf.extend_from_slice(rb.filled());
        std::task::Poll::Ready(Ok(rb.filled().len()))
    })
    .await
}

/// How long a link may stay quiet: [`INBOUND_IDLE_FACTOR`] times the idle timeout once the
/// peer has sent a whole frame (`framed`) on a link it needs (`theirs`), the idle timeout
/// otherwise.
fn idle_timeout(framed: &AtomicBool, theirs: &AtomicBool, base: Duration) -> Duration {
    if framed.load(Ordering::Relaxed) && theirs.load(Ordering::Relaxed) {
        base.saturating_mul(INBOUND_IDLE_FACTOR)
    } else {
        base
    }
}

/// Read and write frames until either side ends, the connection idles out (no frame either
/// way for the idle timeout, and the core does not `keep` it; [`INBOUND_IDLE_FACTOR`] times
/// that once the peer has sent a whole frame on a link it needs, [`LinkMarks::theirs`]), or
/// the runtime shuts down (then queued frames are flushed first).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn run<'a>(
    ctx: &'a Ctx,
    peer: Peer,
    tls: Box<TlsLink>,
    rx: QueueRx,
    mode: Mode,
    keep: &'a Marks,
) -> impl Future<Output = ()> + 'a {
    async move {
        let mut rx = rx;
        let base_idle = ctx.limits.idle_timeout;
        // Set once the peer has sent a whole frame: a link that never carried one (a stalled
        // half frame) gets the short idle timeout only.
        let framed = AtomicBool::new(false);
        let (mut rd, mut wr) = tokio::io::split(unbox(tls));
        let close = Latch::default();
        let epoch = Instant::now();
        let last = AtomicU64::new(0);
        let touch = || last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let id = peer.contact.id;
        let max = ctx.limits.max_frame;
        // Relay envelopes are accepted only from our own relay.
        let envelopes = ctx.home == Some(id) && mode == Mode::Normal;

        // The two halves are written into the join itself: futures first bound to local names
        // would each take their room twice in this function's future (once as the local, once
        // inside the join), which lives as long as the link.
        tokio::join!(
            // Reader: frames from the peer to the loop.
            async {
                // Only what has been read and not yet decoded: empty (unallocated) between frames.
                let mut buf: Vec<u8> = Vec::new();
                let mut budget = FrameBudget::new(
                    ctx.limits.frames_per_sec,
                    ctx.limits.frame_burst,
                    Instant::now(),
                );
                let mut throttle_log = RateLog::new(THROTTLE_LOG_EVERY);
                let share = Arc::new(Semaphore::new(ctx.limits.link_share.max(1)));
                'conn: loop {
                    let mut off = 0;
                    loop {
                        let (from, env) = if envelopes && buf.get(off) == Some(&relay::MARKER) {
                            match relay::decode(&buf[off..]) {
                                Ok((mut p, n)) => {
                                    // A relay vouches for a CSP/CSPG role (trusted with requests)
                                    // only if it holds such a certificate itself.
                                    if !matches!(peer.role, enroll::Role::Csp | enroll::Role::Cspg)
                                    {
                                        p.role = enroll::Role::Peer;
                                    }
                                    (p, n)
                                }
                                Err(EnvelopeError::Incomplete) => break,
                                Err(e) => {
                                    warn!(peer = %id, "closing connection: {e}");
                                    ctx.stats.refusal(format!("from {id}: {e}"));
                                    Shared::inc(&ctx.stats.c.malformed_in);
                                    break 'conn;
                                }
                            }
                        } else {
                            (peer, 0)
                        };
                        // Taken out of the decoder's result at once, the message boxed: the
                        // result would otherwise stay in this task across the waits below.
                        let (msg, n) = match decode_frame(&buf[off + env..], max) {
                            Ok((msg, n)) => (Box::new(msg), n),
                            Err(e) if e.is_incomplete() => break,
                            Err(e @ CodecError::TooLarge { .. }) => {
                                warn!(peer = %id, "closing connection: {e}");
                                ctx.stats.refusal(format!("from {id}: {e}"));
                                Shared::inc(&ctx.stats.c.oversized_in);
                                break 'conn;
                            }
                            Err(e) => {
                                warn!(peer = %id, "closing connection: {e}");
                                ctx.stats.refusal(format!("from {id}: {e}"));
                                Shared::inc(&ctx.stats.c.malformed_in);
                                break 'conn;
                            }
                        };
                        off += env + n;
                        Shared::inc(&ctx.stats.c.frames_in);
                        Shared::add(&ctx.stats.c.bytes_in, n as u64);
                        touch();
                        framed.store(true, Ordering::Relaxed);
                        if msg.is_upkeep_request() {
                            keep.theirs.store(true, Ordering::Relaxed);
                        }
                        // The budget binds only while the loop is behind (its inbound
                        // channel more than half full, or half of this link's share
                        // waiting in it): then links over their budget wait, the others
                        // go on. A loop that keeps up serves every link at full speed.
                        let now = Instant::now();
                        let congested = ctx.to_loop.capacity() * 2 < ctx.to_loop.max_capacity()
                            || share.available_permits() * 2 < ctx.limits.link_share;
                        if let Some(wait) = budget.take(now, congested)
                            && wait >= MIN_PAUSE
                        {
                            Shared::inc(&ctx.stats.c.throttled_in);
                            Shared::add(&ctx.stats.c.throttled_us, wait.as_micros() as u64);
                            if let Some(held) = throttle_log.allow(now) {
                                warn!(
                                    peer = %id,
                                    "link over its inbound frame budget ({}/s, burst {}): \
                                     reading slowed ({held} more pauses since the last warning)",
                                    ctx.limits.frames_per_sec,
                                    ctx.limits.frame_burst
                                );
                            }
                            // Boxed, as is the wait for a share below: rare waits whose
                            // state would otherwise enlarge every link's task.
                            let closed = Box::pin(async {
                                tokio::select! {
                                    _ = close.wait() => true,
                                    () = tokio::time::sleep(wait) => false,
                                }
                            })
                            .await;
                            if closed {
                                break 'conn;
                            }
                        }
                        // Fair share of the loop: at most `link_share` frames of this link
                        // wait in the loop's channel at once, so other links always find
                        // room in it and wait behind at most that many of ours.
                        let share = match share.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => {
                                Shared::inc(&ctx.stats.c.share_waits);
                                let got = Box::pin(async {
                                    tokio::select! {
                                        _ = close.wait() => None,
                                        p = share.clone().acquire_owned() => p.ok(),
                                    }
                                })
                                .await;
                                match got {
                                    Some(p) => p,
                                    None => break 'conn,
                                }
                            }
                        };
                        // Room in the loop's channel first, then the event: the wait
                        // holds no copy of it (this future lives as long as the link). The
                        // wait, when there is one, is boxed like the ones above.
                        let slot = match ctx.to_loop.try_reserve() {
                            Ok(slot) => slot,
                            Err(mpsc::error::TrySendError::Closed(())) => break 'conn,
                            Err(mpsc::error::TrySendError::Full(())) => {
                                match Box::pin(ctx.to_loop.reserve()).await {
                                    Ok(slot) => slot,
                                    Err(_) => break 'conn,
                                }
                            }
                        };
                        let ev = match mode {
                            Mode::Normal => ConnEvent::Frame {
                                peer: from,
                                msg,
                                _share: share,
                            },
                            Mode::RelayTo(to) => ConnEvent::Relay {
                                to,
                                from: peer,
                                msg,
                                _share: share,
                            },
                            Mode::SendOnly => {
                                warn!(peer = %id, "closing connection: a relay sent a frame on a relayed link");
                                Shared::inc(&ctx.stats.c.malformed_in);
                                break 'conn;
                            }
                        };
                        slot.send(ev);
                    }
                    if off == buf.len() {
                        buf = Vec::new();
                    } else {
                        buf.drain(..off);
                    }
                    // A hard stop reaches the reader through the writer, which sets `close`.
                    tokio::select! {
                        _ = close.wait() => break,
                        r = read_some(&mut rd, &mut buf) => match r {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                debug!(peer = %id, "read: {e}");
                                break;
                            }
                        },
                    }
                }
                close.set();
            },
            // Writer: queued frames to the peer, and the idle timeout.
            async {
                let mut stop = ctx.stop.clone();
                let mut killed = false;
                let mut stopping = false;
                loop {
                    let mut first = None;
                    if stopping {
                        if rx.is_empty() {
                            break;
                        }
                    } else {
                        let idle_at = epoch
                            + Duration::from_millis(last.load(Ordering::Relaxed))
                            + idle_timeout(&framed, &keep.theirs, base_idle);
                        tokio::select! {
                            m = rx.recv() => match m {
                                Some(f) => first = Some(f),
                                None => break,
                            },
                            _ = tokio::time::sleep_until(idle_at) => {
                                let quiet = epoch.elapsed()
                                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                                // Judged again now: a frame that arrived meanwhile may have
                                // made the link the peer's.
                                if quiet >= idle_timeout(&framed, &keep.theirs, base_idle) {
                                    if keep.keep.load(Ordering::Relaxed) {
                                        // Kept for maintenance: look again one idle period on.
                                        touch();
                                        continue;
                                    }
                                    Shared::inc(&ctx.stats.c.idle_closed);
                                    debug!(peer = %id, "closing idle connection");
                                    break;
                                }
                                continue;
                            }
                            _ = close.wait() => break,
                            s = stop.wait_for(|s| *s != Stop::Running) => {
                                // Leaving: flush what is queued, then close. Killed (or the
                                // runtime gone): drop the socket at once.
                                if s.map(|s| *s == Stop::Leaving).unwrap_or(false) {
                                    stopping = true;
                                } else {
                                    killed = true;
                                    break;
                                }
                            }
                        }
                    }
                    // The batch starts as the first frame itself (no copy for a lone frame) and is
                    // freed once written: an idle link holds no write buffer.
                    let mut batch = match first.take().or_else(|| rx.try_recv()) {
                        Some(f) => f,
                        None => continue,
                    };
                    while batch.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Some(f) => batch.extend_from_slice(&f),
                            None => break,
                        }
                    }
                    let r = async {
                        wr.write_all(&batch).await?;
                        wr.flush().await
                    };
                    // A peer that stops reading must not hold this task (and its buffers and
                    // inbound slot) forever: a write that cannot finish within the idle
                    // timeout closes the link. Boxed: the write's state (with its timer) is
                    // there only while a write is, not for the link's life.
                    match Box::pin(timeout(ctx.limits.idle_timeout, r)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            debug!(peer = %id, "write: {e}");
                            break;
                        }
                        Err(_) => {
                            Shared::inc(&ctx.stats.c.write_timeouts);
                            warn!(peer = %id, "closing connection: the peer did not read for {:?}", ctx.limits.idle_timeout);
                            break;
                        }
                    }
                    Shared::add(&ctx.stats.c.bytes_out, batch.len() as u64);
                    touch();
                }
                if !killed {
                    let _ = Box::pin(timeout(Duration::from_secs(1), wr.shutdown())).await;
                }
                close.set();
            },
        );
        debug!(peer = %id, "connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_latch_wakes_its_waiters_and_stays_set() {
        let latch = Arc::new(Latch::default());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let l = latch.clone();
                tokio::spawn(async move { l.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        latch.set();
        for w in waiters {
            timeout(Duration::from_secs(5), w)
                .await
                .expect("woken")
                .expect("joined");
        }
        // Set before the wait: returns at once.
        timeout(Duration::from_secs(5), latch.wait())
            .await
            .expect("already set");
    }
}
