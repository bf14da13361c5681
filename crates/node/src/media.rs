//! The sockets of the peer's media relay for its local phones ([`sip::media`]): the
//! front-end rewrites the SDP it carries through [`MediaPlane`], which opens and closes the
//! UDP sockets the sans-IO relay asks for and moves each datagram to where the relay says.
//! Towards local phones the SDP names the front-end's address; towards the other peer it
//! names this peer's advertised or server-reflexive address, so two homes behind NAT send
//! their media peer to peer between the two peers' public addresses (each side latches on
//! where the other's datagrams really come from).
//!
//! Behind a NAT that maps each destination to its own port (a "symmetric" NAT, found with
//! [`nat::mapping_behaviour`] against the STUN and TURN servers, or when configured to
//! always), the far legs go through TURN allocations instead ([`MediaTurn`]): the plane
//! keeps a few allocations ready, the relay hands one to each far leg, and the plane carries
//! that leg's datagrams in TURN Send/ChannelData.
//!
//! Between the two peers the far legs run ICE when both relays do (the relay's
//! [`sip::media::ice`]): the plane sends the checks and consent requests the relay asks for
//! out of the leg's socket or TURN allocation, hands every STUN datagram back to it, and
//! wakes it at its deadlines. The pair ICE selects and a lost consent are logged.
//!
//! Every stream that ends is logged ("media report": path, ICE pair, packets, loss, jitter
//! each way).
//!
//! Bounded by the relay (ports, streams per peer and per call, rate, idle timeout, ready
//! allocations); a port another program holds is given back to the relay, which takes the
//! next free one.

use nat::{BindingOptions, Credentials, Mapping, TurnClient, TurnOptions};
use overlay::Time;
use sip::media::{
    MediaAnchor, MediaCommand, MediaError, MediaRelay, Origin, RelayBounds, RelayConfig,
    RelayStats, Rewritten, StreamReport,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// When the far legs go through TURN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnMode {
    /// When the NAT's mapping depends on the destination (tested at start).
    Auto,
    /// Always.
    Always,
}

/// The TURN server the media relay's far legs may go through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaTurn {
    /// The TURN server (UDP).
    pub server: SocketAddr,
    /// Its long-term credentials.
    pub username: String,
    /// The password.
    pub password: String,
    /// When to use it.
    pub mode: TurnMode,
    /// STUN servers for the mapping test besides the TURN server (it needs two distinct
    /// server addresses).
    pub stun: Vec<SocketAddr>,
    /// Allocations kept ready (two per stream).
    pub pool: usize,
}

/// Media relay settings of a peer's SIP front-end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaConfig {
    /// The relay's UDP port range, streams (at once and per call) and idle timeout.
    pub bounds: RelayBounds,
    /// The address phones send media to; `None`: the front-end's listen address.
    pub lan: Option<IpAddr>,
    /// The address the other peer sends media to; `None`: the peer's `--advertise`
    /// address, else its server-reflexive address, else its overlay listen address, else
    /// the LAN address.
    pub public: Option<IpAddr>,
    /// TURN for the far legs; `None`: never.
    pub turn: Option<MediaTurn>,
    /// Hand the media to the rtpengine whose ng control port this is instead of relaying
    /// it here ([`crate::rtpengine::RtpengineAnchor`]); the other settings then do not
    /// apply.
    pub rtpengine: Option<SocketAddr>,
}

/// Times a rewrite is tried again when a port it took cannot be bound.
const BIND_ATTEMPTS: usize = 8;
/// Longest datagram read.
const MAX_DATAGRAM: usize = 4096;
/// Longest wait between two looks at the relay's deadlines (idle streams, TURN retries,
/// ICE checks and consent come sooner when the relay asks).
const SWEEP: Duration = Duration::from_secs(1);
/// Most worker threads of the relay's runtime.
const MAX_MEDIA_THREADS: usize = 4;
/// Peer datagrams queued per TURN allocation before they drop.
const TURN_QUEUE: usize = 256;

/// What carries one relay port.
enum Carrier {
    Udp(Arc<UdpSocket>),
    Turn(Arc<TurnClient>),
}

struct Socket {
    carrier: Carrier,
    task: JoinHandle<()>,
}

struct Inner {
    relay: Mutex<MediaRelay>,
    sockets: Mutex<BTreeMap<u16, Socket>>,
    /// TURN allocations made and not attached to a port yet, by token.
    pool: Mutex<BTreeMap<u64, TurnClient>>,
    turn: Option<MediaTurn>,
    /// The relay's clock starts here (its own: the core's clock is another one).
    epoch: Instant,
    /// Sockets bind on the unspecified address of the LAN address's family.
    bind: IpAddr,
    /// Runs the sweep, TURN allocations and their tasks (the first of `shards`).
    runtime: tokio::runtime::Handle,
    /// One current-thread runtime per core, each on its own thread: a port's socket and
    /// task live on one of them, so a datagram is received and forwarded on one thread,
    /// without waking another.
    shards: Vec<tokio::runtime::Handle>,
    stop: watch::Receiver<bool>,
    /// Wakes the sweep when the relay may have a sooner deadline.
    wake: Notify,
}

/// The relay and its sockets, shared by the front-end (SDP) and the socket tasks
/// (datagrams). Everything ends when the peer's stop signal fires. Public so that a program
/// can anchor media through the same [`MediaAnchor`] calls the front-end makes (the media
/// benchmark does).
#[derive(Clone)]
pub struct MediaPlane(Arc<Inner>);

/// The media plane for the front-end `sc`, unless media anchoring is off or there is no
/// address to give phones. The other peer reaches this one at (most trusted first) its
/// `advertise` address, its server-reflexive address, the address its `overlay` listens on.
pub(crate) fn for_phones(
    sc: &crate::SipConfig,
    advertise: Option<SocketAddr>,
    reflexive: Option<nat::Reflexive>,
    overlay: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Option<MediaPlane> {
    let cfg = sc.media.as_ref()?;
    let listen = sc.listen;
    let lan = cfg.lan.unwrap_or(listen.ip());
    if lan.is_unspecified() {
        warn!("media relay off: the SIP front-end listens on {listen}; set a LAN address");
        return None;
    }
    let learnt = reflexive.map(|r| r.reflexive.ip());
    let public = cfg
        .public
        .or(advertise.map(|a| a.ip()))
        .or(learnt)
        .or(Some(overlay.ip()).filter(|ip| !ip.is_unspecified()))
        .unwrap_or(lan);
    let mut rc = RelayConfig::new(lan, public);
    rc.bounds = cfg.bounds.clone();
    rc.max_datagram = MAX_DATAGRAM;
    rc.public_is_reflexive = cfg.public.is_none() && advertise.is_none() && learnt == Some(public);
    rc.seed = seed();
    let plane = match MediaPlane::start(rc, cfg.turn.clone(), stop) {
        Ok(p) => p,
        Err(e) => {
            warn!("media relay off: its runtime did not start: {e}");
            return None;
        }
    };
    let ports = (cfg.bounds.first_port, cfg.bounds.last_port);
    info!(%lan, %public, ?ports, "media relay for local phones");
    if let Some(t) = &cfg.turn {
        plane
            .0
            .runtime
            .spawn(choose_turn(Arc::downgrade(&plane.0), t.clone()));
    }
    Some(plane)
}

/// A seed for the relay's randomness (ICE credentials must not be guessable), and for the
/// ng cookies of an rtpengine client (no other client's may collide with them).
pub(crate) fn seed() -> u64 {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

/// Turn the relay's TURN pool on when the mode says so: always, or when the NAT's mapping
/// depends on the destination.
async fn choose_turn(inner: Weak<Inner>, t: MediaTurn) {
    let on = match t.mode {
        TurnMode::Always => true,
        TurnMode::Auto => {
            let mut servers = t.stun.clone();
            servers.push(t.server);
            servers.sort();
            servers.dedup();
            let opts = BindingOptions::quick(Duration::from_secs(3));
            let mapping = nat::mapping_behaviour(&servers, &opts).await;
            if mapping == Mapping::Unknown && servers.len() < 2 {
                warn!(
                    server = %t.server,
                    "media relay: one STUN/TURN server only, so the NAT's mapping cannot be \
                     tested (give --stun another one); far legs go direct"
                );
            }
            mapping == Mapping::Dependent
        }
    };
    let Some(inner) = inner.upgrade() else {
        return;
    };
    if on {
        info!(server = %t.server, mode = ?t.mode, pool = t.pool,
            "media relay: far legs go through TURN");
        let mut relay = inner.relay();
        relay.set_turn_pool(inner.now(), t.pool.max(2));
        inner.apply(&mut relay);
    } else {
        info!(server = %t.server, "media relay: the NAT keeps one mapping for every destination; far legs go direct");
    }
}

impl MediaPlane {
    /// A relay with `cfg` (and the TURN server `turn` to make allocations on, when the
    /// relay asks), running until `stop` fires (or its sender goes away).
    ///
    /// Its sockets are served by runtimes of its own (one current-thread runtime per core,
    /// at most four, each on its own thread), not by the peer's: RTP then waits neither for
    /// the overlay's TLS and SIP work on the peer's core, nor for one core when the host has
    /// more.
    pub fn start(
        cfg: RelayConfig,
        turn: Option<MediaTurn>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_MEDIA_THREADS);
        let runtimes = (0..threads)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let shards: Vec<_> = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        let bind = match cfg.lan {
            IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
            IpAddr::V6(_) => IpAddr::from([0u16; 8]),
        };
        let inner = Arc::new(Inner {
            relay: Mutex::new(MediaRelay::new(cfg)),
            sockets: Mutex::new(BTreeMap::new()),
            pool: Mutex::new(BTreeMap::new()),
            turn,
            epoch: Instant::now(),
            bind,
            runtime: shards[0].clone(),
            shards,
            stop,
            wake: Notify::new(),
        });
        // Each runtime lives on its own thread until the stop signal; the first one's until
        // the sweep has closed everything after it (a runtime cannot be dropped inside
        // another one's tasks).
        for (i, rt) in runtimes.into_iter().enumerate() {
            let builder = std::thread::Builder::new().name(format!("media-{i}"));
            if i == 0 {
                let sweeper = sweep(Arc::downgrade(&inner), inner.stop.clone());
                builder.spawn(move || rt.block_on(sweeper))?;
            } else {
                let mut stop = inner.stop.clone();
                builder.spawn(move || {
                    rt.block_on(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                })?;
            }
        }
        Ok(MediaPlane(inner))
    }

    /// The relay (for counters).
    #[cfg(test)]
    pub(crate) fn relay(&self) -> MutexGuard<'_, MediaRelay> {
        self.0.relay()
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        self.0.relay().stats().clone()
    }
}

/// One line per ended stream, in the peer's log.
fn log_report(r: &StreamReport) {
    let far = r.far.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let ice = r.ice.map_or_else(|| "none".into(), |p| p.to_string());
    info!(
        call = %r.call_id, stream = r.index, path = r.path.as_str(), far = %far, ice = %ice,
        consent_lost = r.consent_lost,
        seconds = format!("{:.1}", r.duration.as_secs_f64()),
        "media report: phone->far {} packets, {} lost ({:.1} %), jitter {:.2} ms; \
         far->phone {} packets, {} lost ({:.1} %), jitter {:.2} ms",
        r.from_phone.packets, r.from_phone.lost, r.from_phone.loss_percent(),
        r.from_phone.jitter_ms, r.from_far.packets, r.from_far.lost,
        r.from_far.loss_percent(), r.from_far.jitter_ms,
    );
}

impl Inner {
    fn now(&self) -> overlay::Time {
        overlay::Time(self.epoch.elapsed().as_micros() as u64)
    }

    fn relay(&self) -> MutexGuard<'_, MediaRelay> {
        self.relay.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sockets(&self) -> MutexGuard<'_, BTreeMap<u16, Socket>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(&self) -> MutexGuard<'_, BTreeMap<u64, TurnClient>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Do what the relay asked for and log its reports; the ports that could not be
    /// opened or attached.
    fn apply(self: &Arc<Self>, relay: &mut MediaRelay) -> Vec<(u16, std::io::Error)> {
        let mut failed = Vec::new();
        while let Some(c) = relay.poll_command() {
            match c {
                MediaCommand::Open(port) => match self.bind(port) {
                    Ok(sock) => {
                        let task = self.shard(port).spawn(serve(
                            Arc::downgrade(self),
                            sock.clone(),
                            port,
                            self.stop.clone(),
                        ));
                        self.insert(port, Carrier::Udp(sock), task);
                    }
                    Err(e) => {
                        debug!(port, "media port unavailable: {e}");
                        failed.push((port, e));
                    }
                },
                MediaCommand::Close(port) => {
                    if let Some(s) = self.sockets().remove(&port) {
                        s.task.abort();
                        if let Carrier::Turn(client) = s.carrier {
                            self.runtime.spawn(async move { client.shutdown().await });
                        }
                    }
                }
                MediaCommand::Allocate(token) => {
                    self.runtime.spawn(allocate(Arc::downgrade(self), token));
                }
                MediaCommand::Attach { token, port } => {
                    let Some(mut client) = self.pool().remove(&token) else {
                        warn!(token, port, "TURN allocation to attach is gone");
                        failed.push((
                            port,
                            std::io::Error::other("the TURN allocation to attach is gone"),
                        ));
                        continue;
                    };
                    let rx = client.take_receiver();
                    let client = Arc::new(client);
                    let task = self.runtime.spawn(serve_turn(
                        Arc::downgrade(self),
                        rx,
                        port,
                        self.stop.clone(),
                    ));
                    self.insert(port, Carrier::Turn(client), task);
                }
                MediaCommand::Permit { port, peer } => {
                    let client = match self.sockets().get(&port).map(|s| &s.carrier) {
                        Some(Carrier::Turn(c)) => c.clone(),
                        _ => continue,
                    };
                    self.runtime.spawn(async move {
                        // A channel frames RTP in 4 bytes instead of a Send indication's
                        // 36; its permission lets the far end in either way.
                        if let Err(e) = client.bind_channel(peer).await {
                            warn!(%peer, "TURN channel bind failed ({e}); trying a permission");
                            if let Err(e) = client.create_permission(peer).await {
                                warn!(%peer, "TURN permission failed: {e}");
                            }
                        }
                    });
                }
                MediaCommand::Discard(token) => {
                    if let Some(client) = self.pool().remove(&token) {
                        self.runtime.spawn(client.close());
                    }
                }
            }
        }
        while let Some(r) = relay.poll_report() {
            log_report(&r);
        }
        self.transmit(relay);
        self.wake.notify_one();
        failed
    }

    /// Send the datagrams the relay itself sends (ICE): on a socket at once, through a
    /// TURN allocation on the runtime.
    fn transmit(&self, relay: &mut MediaRelay) {
        while let Some(t) = relay.poll_transmit() {
            let carrier = match self.sockets().get(&t.from_port).map(|s| &s.carrier) {
                Some(Carrier::Udp(s)) => Carrier::Udp(s.clone()),
                Some(Carrier::Turn(c)) => Carrier::Turn(c.clone()),
                None => continue,
            };
            match carrier {
                Carrier::Udp(s) => {
                    let _ = socket2::SockRef::from(&*s).send_to(&t.data, &t.to.into());
                }
                Carrier::Turn(c) => {
                    self.runtime.spawn(async move {
                        let _ = c.send_to(&t.data, t.to).await;
                    });
                }
            }
        }
    }

    /// The relay's time `at` on the runtime's clock.
    fn instant(&self, at: overlay::Time) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_micros(at.0))
    }

    fn insert(&self, port: u16, carrier: Carrier, task: JoinHandle<()>) {
        if let Some(old) = self.sockets().insert(port, Socket { carrier, task }) {
            old.task.abort();
        }
    }

    /// The runtime serving `port`'s socket.
    fn shard(&self, port: u16) -> &tokio::runtime::Handle {
        &self.shards[usize::from(port / 2) % self.shards.len()]
    }

    fn bind(&self, port: u16) -> std::io::Result<Arc<UdpSocket>> {
        let std = std::net::UdpSocket::bind(SocketAddr::new(self.bind, port))?;
        std.set_nonblocking(true)?;
        let _rt = self.shard(port).enter();
        Ok(Arc::new(UdpSocket::from_std(std)?))
    }

    /// Send `data` out of the relay port `from_port` to `to`. UDP: a full buffer or an
    /// unreachable destination loses this datagram only.
    async fn send(&self, from_port: u16, data: &[u8], to: SocketAddr) {
        let carrier = match self.sockets().get(&from_port).map(|s| &s.carrier) {
            Some(Carrier::Udp(s)) => Carrier::Udp(s.clone()),
            Some(Carrier::Turn(c)) => Carrier::Turn(c.clone()),
            None => return,
        };
        match carrier {
            Carrier::Udp(s) => {
                // Straight to the socket (non-blocking): its readiness is tracked by the
                // runtime that receives on it, which may be another shard's.
                let _ = socket2::SockRef::from(&*s).send_to(data, &to.into());
            }
            Carrier::Turn(c) => {
                let _ = c.send_to(data, to).await;
            }
        }
    }
}

/// Make the TURN allocation `token` and hand it to the relay (or tell it of the failure).
async fn allocate(inner: Weak<Inner>, token: u64) {
    let Some(t) = inner.upgrade().and_then(|i| i.turn.clone()) else {
        return;
    };
    let opts = TurnOptions {
        timeout: Duration::from_secs(5),
        recv_queue: TURN_QUEUE,
    };
    let got =
        TurnClient::allocate(t.server, Credentials::new(&t.username, &t.password), opts).await;
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let mut relay = inner.relay();
    let now = inner.now();
    match got {
        Ok(client) => {
            let relayed = client.relayed_addr();
            inner.pool().insert(token, client);
            relay.turn_allocated(now, token, relayed);
        }
        Err(e) => {
            warn!(server = %t.server, "TURN allocation for media failed: {e}");
            relay.turn_failed(now, token);
        }
    }
    inner.apply(&mut relay);
}

impl MediaAnchor for MediaPlane {
    fn rewrite(&mut self, _now: Time, call_id: &str, origin: Origin, sdp: &[u8]) -> Rewritten {
        let inner = &self.0;
        let now = inner.now();
        let mut relay = inner.relay();
        for _ in 0..BIND_ATTEMPTS {
            let body = relay.rewrite(now, call_id, origin, sdp)?;
            let failed = inner.apply(&mut relay);
            if failed.is_empty() {
                return Ok(body);
            }
            // Another program holds a port: give its stream back, rest the port's pair and
            // take the next ports. Warned once per pair and rest, not per call.
            for (port, e) in failed {
                if relay.port_unavailable(now, port) {
                    warn!(
                        port,
                        "media port unavailable, its pair is passed over for {:?}: {e}",
                        sip::media::relay::REFUSED_PAIR_REST
                    );
                }
            }
            inner.apply(&mut relay);
        }
        Err(MediaError::NoPorts)
    }

    fn end_call(&mut self, call_id: &str) {
        let mut relay = self.0.relay();
        relay.end_call(call_id);
        self.0.apply(&mut relay);
    }
}

/// Datagrams arriving on `port`, forwarded where the relay says.
async fn serve(
    inner: Weak<Inner>,
    sock: Arc<UdpSocket>,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let got = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((len, from)) = got else {
            // ICMP errors from an earlier send surface here on some systems: go on, without
            // spinning should the error persist.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let data = &buf[..len];
        let out = {
            let mut relay = inner.relay();
            let out = relay.handle_datagram(inner.now(), port, from, data);
            if sip::media::ice::is_stun(data) {
                inner.apply(&mut relay);
            }
            out
        };
        if let Some(f) = out {
            inner.send(f.from_port, data, f.to).await;
        }
    }
}

/// Datagrams the TURN allocation carrying `port` received from its peers, forwarded where
/// the relay says.
async fn serve_turn(
    inner: Weak<Inner>,
    rx: Option<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let Some(mut rx) = rx else {
        return;
    };
    loop {
        let got = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = rx.recv() => r,
        };
        let Some((data, from)) = got else {
            return;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let out = {
            let mut relay = inner.relay();
            let out = relay.handle_datagram(inner.now(), port, from, &data);
            if sip::media::ice::is_stun(&data) {
                inner.apply(&mut relay);
            }
            out
        };
        if let Some(f) = out {
            inner.send(f.from_port, &data, f.to).await;
        }
    }
}

/// Hand the relay the time at its deadlines (at least every [`SWEEP`]): idle streams, TURN
/// retries, ICE checks and consent.
async fn sweep(inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let mut next = tokio::time::Instant::now() + SWEEP;
    loop {
        let woken = {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            // Holds the plane only while waiting for its notice, not past it.
            let wake = async move { strong.wake.notified().await };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(next) => false,
                _ = wake => true,
            }
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut relay = inner.relay();
        let now = inner.now();
        if !woken {
            relay.handle_timeout(now);
            inner.apply(&mut relay);
        }
        let limit = tokio::time::Instant::now() + SWEEP;
        next = relay
            .poll_timeout()
            .map_or(limit, |at| inner.instant(at).min(limit));
    }
    // Stopped: close every socket and allocation.
    if let Some(inner) = inner.upgrade() {
        let sockets = std::mem::take(&mut *inner.sockets());
        let pool = std::mem::take(&mut *inner.pool());
        for (_, s) in sockets {
            s.task.abort();
            if let Carrier::Turn(c) = s.carrier {
                c.shutdown().await;
            }
        }
        for (_, c) in pool {
            c.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sip::media::Sdp;

    fn sdp(port: u16) -> Vec<u8> {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:key\r\n"
        )
        .into_bytes()
    }

    fn port_in(body: &[u8]) -> u16 {
        Sdp::parse(body).unwrap().streams()[0].port
    }

    fn plane(first: u16, stop: watch::Receiver<bool>) -> MediaPlane {
        plane_via(first, None, stop)
    }

    /// A relay on loopback with the 200 ports from `first`, its far legs through `turn`.
    fn plane_via(first: u16, turn: Option<MediaTurn>, stop: watch::Receiver<bool>) -> MediaPlane {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut cfg = RelayConfig::new(loopback, loopback);
        (cfg.bounds.first_port, cfg.bounds.last_port) = (first, first + 199);
        MediaPlane::start(cfg, turn, stop).unwrap()
    }

    /// A phone's socket on loopback, and its port.
    async fn phone() -> (UdpSocket, u16) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap().port();
        (sock, port)
    }

    async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 256];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        (buf[..n].to_vec(), from)
    }

    /// Two peers' relays on loopback, each phone a real socket: the SDP each phone gets
    /// names its own relay, the relays run ICE between them over their sockets, RTP crosses
    /// both relays both ways on the selected pair (from a phone port other than the one it
    /// announced, too), and hanging up closes the sockets.
    #[tokio::test]
    async fn rtp_crosses_two_relays_over_real_sockets() {
        let (stop_tx, stop) = watch::channel(false);
        let (mut a, mut b) = (plane(41000, stop.clone()), plane(41200, stop));
        let (alice, pa) = phone().await;
        let (bob, _) = phone().await;
        // Bob's phone sends from another socket than the one its SDP names (held, so that
        // nothing else takes that port meanwhile).
        let (_bob_announced, pb) = phone().await;
        let (offer, to_bob, _, to_alice) = offer_answer(&mut a, &mut b, pa, pb);
        assert!(
            String::from_utf8_lossy(&to_bob)
                .contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:key")
        );
        let (relay_a, relay_b) = (port_in(&to_alice), port_in(&to_bob));
        assert!(String::from_utf8_lossy(&offer).contains("a=ice-ufrag:"));
        assert!(!String::from_utf8_lossy(&to_bob).contains("a=ice-ufrag:"));

        // Bob speaks first, from his other port: the relay latches on it. His RTP reaches
        // alice's relay on the default path while ICE checks run, and alice's phone hears
        // it from her own relay.
        let rtp = |s: &str| [&[0x80u8, 0][..], s.as_bytes()].concat();
        let (got, from) = until_heard(&bob, &rtp("from bob"), addr(relay_b), &alice).await;
        assert_eq!((got, from.port()), (rtp("from bob"), relay_a));
        // Once both relays have selected a pair, media takes it, both ways.
        ice_selected(&[&a, &b]).await;
        for (phone, to, other, relay) in [
            (&bob, relay_b, &alice, relay_a),
            (&alice, relay_a, &bob, relay_b),
        ] {
            phone.send_to(&rtp("on the pair"), addr(to)).await.unwrap();
            let (got, from) = recv(other).await;
            assert_eq!((got, from.port()), (rtp("on the pair"), relay));
        }
        for p in [&a, &b] {
            let s = p.relay().stats().clone();
            assert_eq!((s.ice_selected, s.ice_failed, s.consent_lost), (1, 0, 0));
            assert!(s.stun_received > 0 && s.forwarded >= 2, "{s:?}");
        }

        // Hang up: the relays give their ports back and close them.
        a.end_call("c1");
        b.end_call("c1");
        assert_eq!((a.relay().streams(), b.relay().streams()), (0, 0));
        assert!(a.0.sockets().is_empty() && b.0.sockets().is_empty());
        let _ = stop_tx.send(true);
    }

    /// A port another program holds is skipped: the stream takes the next free ports.
    #[tokio::test]
    async fn a_port_in_use_is_skipped() {
        let (_stop_tx, stop) = watch::channel(false);
        let held = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let first = held.local_addr().unwrap().port() & !1;
        let mut p = plane(first, stop);
        let offer = p
            .rewrite(overlay::Time::ZERO, "c", Origin::Phone, &sdp(5000))
            .unwrap();
        // The phone leg takes the first pair it can bind, the far leg the next one: neither
        // is the held pair.
        let far = port_in(&offer);
        assert!(far >= first + 4, "took {far}");
        assert_eq!(p.relay().streams(), 1);
        assert_eq!(p.0.sockets().len(), 4);
        assert!(!p.0.sockets().contains_key(&first));
        drop(held);
    }

    /// Receive on `sock` until `want` arrives, sending `data` to `to` from `from` every
    /// 100 ms meanwhile (a TURN permission is installed asynchronously: the first
    /// datagrams may arrive before it and be dropped, as on a real network).
    async fn until_heard(
        from: &UdpSocket,
        data: &[u8],
        to: SocketAddr,
        sock: &UdpSocket,
    ) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 256];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            from.send_to(data, to).await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf));
            if let Ok(Ok((n, src))) = got.await {
                return (buf[..n].to_vec(), src);
            }
            assert!(tokio::time::Instant::now() < deadline, "nothing within 5 s");
        }
    }

    /// Call "c1": alice's phone (port `pa`) offers through `a`, bob's (port `pb`) answers
    /// through `b`. Returns the offer `a` sent, what `b` gave bob, the answer `b` sent and
    /// what `a` gave alice.
    fn offer_answer(
        a: &mut MediaPlane,
        b: &mut MediaPlane,
        pa: u16,
        pb: u16,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let t = overlay::Time::ZERO;
        let offer = a.rewrite(t, "c1", Origin::Phone, &sdp(pa)).unwrap();
        let to_bob = b.rewrite(t, "c1", Origin::FarEnd, &offer).unwrap();
        let answer = b.rewrite(t, "c1", Origin::Phone, &sdp(pb)).unwrap();
        let to_alice = a.rewrite(t, "c1", Origin::FarEnd, &answer).unwrap();
        (offer, to_bob, answer, to_alice)
    }

    /// Our TURN server on a loopback port, and the media relay's settings for it (user
    /// "test", always, two allocations kept ready).
    async fn turn_on_loopback() -> (nat::ServerHandle, MediaTurn) {
        let mut creds = nat::CredentialStore::new();
        creds.add_user(Credentials::new("test", "test"));
        let srv = nat::StunServer::bind(nat::ServerConfig::loopback(creds))
            .await
            .unwrap()
            .spawn();
        let turn = MediaTurn {
            server: srv.local_addr,
            username: "test".into(),
            password: "test".into(),
            mode: TurnMode::Always,
            stun: Vec::new(),
            pool: 2,
        };
        (srv, turn)
    }

    /// `plane` takes `turn` for its far legs; wait (at most 5 s) until its two ready
    /// allocations are there.
    async fn allocations_ready(plane: &MediaPlane, turn: MediaTurn) {
        choose_turn(Arc::downgrade(&plane.0), turn).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while plane.relay().turn_ready() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no TURN allocations"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Bob's peer sends its far leg through a TURN server on loopback: the SDP towards
    /// alice's peer names the relayed address, the datagrams cross both ways through the
    /// allocation, and hanging up deletes it.
    #[tokio::test]
    async fn rtp_crosses_when_one_relay_goes_through_turn() {
        let (srv, turn) = turn_on_loopback().await;
        let (stop_tx, stop) = watch::channel(false);
        let mut a = plane(41600, stop.clone());
        let mut b = plane_via(41800, Some(turn.clone()), stop);
        allocations_ready(&b, turn).await;
        let (alice, pa) = phone().await;
        let (bob, pb) = phone().await;
        let (_, to_bob, answer, to_alice) = offer_answer(&mut a, &mut b, pa, pb);
        // Bob's peer offers alice's peer its TURN relay, not one of its own ports (the
        // TURN server takes its relayed port from the ephemeral range, which may fall
        // inside the range this plane binds from: only the sockets it holds tell).
        let relayed = port_in(&answer);
        assert!(
            !b.0.sockets().contains_key(&relayed),
            "answer names {relayed}, one of bob's own ports"
        );
        assert_eq!(b.relay().stats().turn_streams, 1);
        let (relay_a, relay_b) = (port_in(&to_alice), port_in(&to_bob));

        // Bob speaks first: through the allocation to alice's far leg, then to alice.
        let (got, from) = until_heard(&bob, b"rtp from bob", addr(relay_b), &alice).await;
        assert_eq!(
            (got.as_slice(), from.port()),
            (&b"rtp from bob"[..], relay_a)
        );
        // Alice answers: her far leg latched on the relayed address and sends back there.
        let (got, from) = until_heard(&alice, b"rtp from alice", addr(relay_a), &bob).await;
        assert_eq!(
            (got.as_slice(), from.port()),
            (&b"rtp from alice"[..], relay_b)
        );
        a.end_call("c1");
        b.end_call("c1");
        assert!(b.0.sockets().is_empty());
        let report = b.relay().poll_report();
        assert_eq!(report, None, "reports are drained into the log by apply");
        assert_eq!(b.relay().stats().ended, 1);
        let _ = stop_tx.send(true);
        srv.shutdown().await.unwrap();
    }

    /// Both peers' far legs go through TURN allocations on one server: ICE pairs the two
    /// relayed candidates, and RTP crosses from one allocation to the other.
    #[tokio::test]
    async fn rtp_crosses_when_both_relays_go_through_turn() {
        let (srv, turn) = turn_on_loopback().await;
        let (stop_tx, stop) = watch::channel(false);
        let mut planes = Vec::new();
        for first in [42000, 42200] {
            let p = plane_via(first, Some(turn.clone()), stop.clone());
            allocations_ready(&p, turn.clone()).await;
            planes.push(p);
        }
        let (mut a, mut b) = (planes.remove(0), planes.remove(0));
        let (alice, pa) = phone().await;
        let (bob, pb) = phone().await;
        let (offer, to_bob, _, to_alice) = offer_answer(&mut a, &mut b, pa, pb);
        assert!(String::from_utf8_lossy(&offer).contains(" typ relay"));
        let (relay_a, relay_b) = (port_in(&to_alice), port_in(&to_bob));
        let rtp = |s: &str| [&[0x80u8, 0][..], s.as_bytes()].concat();
        let (got, _) = until_heard(&bob, &rtp("from bob"), addr(relay_b), &alice).await;
        assert_eq!(got, rtp("from bob"));
        let (got, _) = until_heard(&alice, &rtp("from alice"), addr(relay_a), &bob).await;
        assert_eq!(got, rtp("from alice"));
        ice_selected(&[&a, &b]).await;
        let (got, _) = until_heard(&bob, &rtp("on the pair"), addr(relay_b), &alice).await;
        assert_eq!(got, rtp("on the pair"));
        for p in [&a, &b] {
            let s = p.relay().stats().clone();
            assert_eq!((s.ice_selected, s.turn_streams), (1, 1), "{s:?}");
        }
        a.end_call("c1");
        b.end_call("c1");
        let _ = stop_tx.send(true);
        srv.shutdown().await.unwrap();
    }

    /// Wait (at most 5 s) until each of `planes` has selected an ICE pair for its stream.
    async fn ice_selected(planes: &[&MediaPlane]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while planes.iter().any(|p| p.relay().stats().ice_selected == 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no ICE pair within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}
