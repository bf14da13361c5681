//! The sockets of the peer's media relay for its local phones ([`sip::media`]): the
//! front-end rewrites the SDP it carries through [`MediaPlane`], which opens and closes the
//! UDP sockets the sans-IO relay asks for and moves each datagram to where the relay says.
//! Towards local phones the SDP names the front-end's address; towards the other peer it
//! names this peer's advertised or server-reflexive address, so two homes behind NAT send
//! their media peer to peer between the two peers' public addresses (each side latches on
//! where the other's datagrams really come from).
//!
//! Bounded by the relay (ports, streams per peer and per call, rate, idle timeout); a port
//! another program holds is given back to the relay, which takes the next free one.

use sip::media::{MediaAnchor, MediaCommand, MediaError, MediaRelay, Origin, RelayConfig};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Media relay settings of a peer's SIP front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// First and last UDP port of the relay's range.
    pub ports: (u16, u16),
    /// The address phones send media to; `None`: the front-end's listen address.
    pub lan: Option<IpAddr>,
    /// The address the other peer sends media to; `None`: the peer's `--advertise`
    /// address, else its server-reflexive address, else its overlay listen address, else
    /// the LAN address.
    pub public: Option<IpAddr>,
    /// Most streams relayed at once.
    pub max_streams: usize,
    /// Most streams of one call.
    pub max_streams_per_call: usize,
    /// A stream without traffic this long is freed.
    pub idle: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let r = RelayConfig::new(IpAddr::from([0, 0, 0, 0]), IpAddr::from([0, 0, 0, 0]));
        MediaConfig {
            ports: (r.first_port, r.last_port),
            lan: None,
            public: None,
            max_streams: r.max_streams,
            max_streams_per_call: r.max_streams_per_call,
            idle: r.idle,
        }
    }
}

/// Times a rewrite is tried again when a port it took cannot be bound.
const BIND_ATTEMPTS: usize = 8;
/// Longest datagram read.
const MAX_DATAGRAM: usize = 4096;
/// How often idle streams are looked for.
const SWEEP: Duration = Duration::from_secs(1);

struct Socket {
    sock: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

struct Inner {
    relay: Mutex<MediaRelay>,
    sockets: Mutex<BTreeMap<u16, Socket>>,
    /// The relay's clock starts here (its own: the core's clock is another one).
    epoch: Instant,
    /// Sockets bind on the unspecified address of the LAN address's family.
    bind: IpAddr,
    runtime: tokio::runtime::Handle,
    stop: watch::Receiver<bool>,
}

/// The relay and its sockets, shared by the front-end (SDP) and the socket tasks
/// (datagrams). Everything ends when the peer's stop signal fires.
#[derive(Clone)]
pub(crate) struct MediaPlane(Arc<Inner>);

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
    let public = cfg
        .public
        .or(advertise.map(|a| a.ip()))
        .or(reflexive.map(|r| r.reflexive.ip()))
        .or(Some(overlay.ip()).filter(|ip| !ip.is_unspecified()))
        .unwrap_or(lan);
    let mut rc = RelayConfig::new(lan, public);
    (rc.first_port, rc.last_port) = cfg.ports;
    rc.max_streams = cfg.max_streams;
    rc.max_streams_per_call = cfg.max_streams_per_call;
    rc.idle = cfg.idle;
    rc.max_datagram = MAX_DATAGRAM;
    let plane = MediaPlane::start(rc, stop).ok()?;
    info!(%lan, %public, ports = ?cfg.ports, "media relay for local phones");
    Some(plane)
}

impl MediaPlane {
    /// A relay with `cfg`, running until `stop` fires (or its sender goes away).
    pub(crate) fn start(
        cfg: RelayConfig,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, tokio::runtime::TryCurrentError> {
        let runtime = tokio::runtime::Handle::try_current()?;
        let bind = match cfg.lan {
            IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
            IpAddr::V6(_) => IpAddr::from([0u16; 8]),
        };
        let inner = Arc::new(Inner {
            relay: Mutex::new(MediaRelay::new(cfg)),
            sockets: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            bind,
            runtime,
            stop,
        });
        inner
            .runtime
            .spawn(sweep(Arc::downgrade(&inner), inner.stop.clone()));
        Ok(MediaPlane(inner))
    }

    /// The relay (for counters).
    #[cfg(test)]
    pub(crate) fn relay(&self) -> MutexGuard<'_, MediaRelay> {
        self.0.relay()
    }
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

    /// Open and close what the relay asked for; the ports that could not be bound.
    fn apply(self: &Arc<Self>, relay: &mut MediaRelay) -> Vec<u16> {
        let mut failed = Vec::new();
        while let Some(c) = relay.poll_command() {
            match c {
                MediaCommand::Open(port) => match self.bind(port) {
                    Ok(sock) => {
                        let task = self.runtime.spawn(serve(
                            Arc::downgrade(self),
                            sock.clone(),
                            port,
                            self.stop.clone(),
                        ));
                        if let Some(old) = self.sockets().insert(port, Socket { sock, task }) {
                            old.task.abort();
                        }
                    }
                    Err(e) => {
                        warn!(port, "media port unavailable: {e}");
                        failed.push(port);
                    }
                },
                MediaCommand::Close(port) => {
                    if let Some(s) = self.sockets().remove(&port) {
                        s.task.abort();
                    }
                }
            }
        }
        failed
    }

    fn bind(&self, port: u16) -> std::io::Result<Arc<UdpSocket>> {
        let std = std::net::UdpSocket::bind(SocketAddr::new(self.bind, port))?;
        std.set_nonblocking(true)?;
        let _rt = self.runtime.enter();
        Ok(Arc::new(UdpSocket::from_std(std)?))
    }

    fn socket(&self, port: u16) -> Option<Arc<UdpSocket>> {
        self.sockets().get(&port).map(|s| s.sock.clone())
    }
}

impl MediaAnchor for MediaPlane {
    fn rewrite(
        &mut self,
        _now: overlay::Time,
        call_id: &str,
        origin: Origin,
        sdp: &[u8],
    ) -> Result<Vec<u8>, MediaError> {
        let inner = &self.0;
        let now = inner.now();
        let mut relay = inner.relay();
        for _ in 0..BIND_ATTEMPTS {
            let body = relay.rewrite(now, call_id, origin, sdp)?;
            let failed = inner.apply(&mut relay);
            if failed.is_empty() {
                return Ok(body);
            }
            // Another program holds a port: give its stream back and take the next ports.
            for port in failed {
                relay.port_unavailable(port);
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
        let out = inner.relay().handle_datagram(inner.now(), port, from, len);
        if let Some(f) = out
            && let Some(out_sock) = inner.socket(f.from_port)
        {
            // UDP: a full buffer or an unreachable destination loses this datagram only.
            let _ = out_sock.try_send_to(&buf[..len], f.to);
        }
    }
}

/// Free idle streams every [`SWEEP`].
async fn sweep(inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut relay = inner.relay();
        relay.handle_timeout(inner.now());
        inner.apply(&mut relay);
    }
    // Stopped: close every socket.
    if let Some(inner) = inner.upgrade() {
        for (_, s) in std::mem::take(&mut *inner.sockets()) {
            s.task.abort();
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
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let mut cfg = RelayConfig::new(loopback, loopback);
        (cfg.first_port, cfg.last_port) = (first, first + 199);
        MediaPlane::start(cfg, stop).unwrap()
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
    /// names its own relay, RTP crosses both relays both ways (from a phone port other than
    /// the one it announced, too), and hanging up closes the sockets.
    #[tokio::test]
    async fn rtp_crosses_two_relays_over_real_sockets() {
        let (stop_tx, stop) = watch::channel(false);
        let (mut a, mut b) = (plane(41000, stop.clone()), plane(41200, stop));
        let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bob = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Bob's phone sends from another socket than the one its SDP names.
        let bob_announced = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (pa, pb) = (
            alice.local_addr().unwrap().port(),
            bob_announced.local_addr().unwrap().port(),
        );
        let t = overlay::Time::ZERO;
        let offer = a.rewrite(t, "c1", Origin::Phone, &sdp(pa)).unwrap();
        let to_bob = b.rewrite(t, "c1", Origin::FarEnd, &offer).unwrap();
        let answer = b.rewrite(t, "c1", Origin::Phone, &sdp(pb)).unwrap();
        let to_alice = a.rewrite(t, "c1", Origin::FarEnd, &answer).unwrap();
        assert!(
            String::from_utf8_lossy(&to_bob)
                .contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:key")
        );
        let (relay_a, relay_b) = (port_in(&to_alice), port_in(&to_bob));

        // Bob speaks first, from his other port: the relay latches on it.
        bob.send_to(b"rtp from bob", ("127.0.0.1", relay_b))
            .await
            .unwrap();
        // It reaches alice's relay from bob's far leg, which alice's far leg latches on;
        // alice's phone hears it from her own relay.
        let (got, from) = recv(&alice).await;
        assert_eq!(
            (got.as_slice(), from.port()),
            (&b"rtp from bob"[..], relay_a)
        );
        alice
            .send_to(b"rtp from alice", ("127.0.0.1", relay_a))
            .await
            .unwrap();
        let (got, from) = recv(&bob).await;
        assert_eq!(
            (got.as_slice(), from.port()),
            (&b"rtp from alice"[..], relay_b)
        );
        assert_eq!(a.relay().stats().forwarded, 2);
        assert_eq!(b.relay().stats().forwarded, 2);

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
}
