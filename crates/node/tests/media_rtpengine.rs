//! A call between two peers that hand their phones' media to a real rtpengine
//! (`MediaConfig::rtpengine`, `p2psip peer --media-rtpengine`), end to end: two SIP phones
//! (the in-tree user agent on real UDP sockets, each with an RTP socket of its own) register
//! at the front-ends of peers A and B, alice calls bob through the secure overlay, each
//! phone is told an rtpengine port instead of the other phone's, RTP crosses rtpengine both
//! ways and is counted where it lands, and alice's BYE deletes the call from rtpengine.
//!
//! One rtpengine serves both peers, as an operator's one serves several: each peer's
//! session of the call must be its own there. Skips loudly without rtpengine.
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod common;

use common::Overlay;
use node::{MediaConfig, SipConfig};
use sip::ua::{UaConfig, UaEvent, UserAgent};
use sip::{Peer, Transport};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use testkit::rtpengine::Rtpengine;
use tokio::net::UdpSocket;

/// Peers with a front-end (node indices: 0 is the CSP).
const A: usize = 1;
const B: usize = 2;
/// rtpengine's media ports (no other test uses them).
const PORTS: (u16, u16) = (46200, 46299);
/// RTP packets each phone sends (20 ms apart: one second of G.711).
const PACKETS: u16 = 50;
/// How long a step of the call may take.
const STEP: Duration = Duration::from_secs(10);

fn sdp(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    .into_bytes()
}

/// The connection address and port of the first stream of an SDP body.
fn target(body: &[u8]) -> SocketAddr {
    let sdp = sip::media::Sdp::parse(body).unwrap();
    let s = &sdp.streams()[0];
    let ip: IpAddr = String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .unwrap()
        .parse()
        .unwrap();
    SocketAddr::new(ip, s.port)
}

/// A SIP phone: the in-tree user agent on a UDP socket, with an RTP socket of its own.
struct Phone {
    ua: UserAgent,
    sip: UdpSocket,
    rtp: UdpSocket,
    epoch: Instant,
    events: Vec<UaEvent>,
}

impl Phone {
    async fn new(user: &str, front_end: SocketAddr) -> Phone {
        let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = |addr| Peer {
            transport: Transport::Udp,
            addr,
        };
        let cfg = UaConfig {
            user: user.into(),
            domain: "p2psip.test".into(),
            local: udp(sip.local_addr().unwrap()),
            proxy: udp(front_end),
            sdp_answer: sdp(rtp.local_addr().unwrap().port()),
            auto_answer: true,
            timers: sipx_sip::Timers::default(),
        };
        let seed = u64::from(sip.local_addr().unwrap().port());
        Phone {
            ua: UserAgent::new(cfg, seed),
            sip,
            rtp,
            epoch: Instant::now(),
            events: Vec::new(),
        }
    }

    fn now(&self) -> overlay::Time {
        overlay::Time(self.epoch.elapsed().as_micros() as u64)
    }

    fn rtp_port(&self) -> u16 {
        self.rtp.local_addr().unwrap().port()
    }

    /// Send what the user agent queued; keep what it reported.
    async fn flush(&mut self) {
        while let Some(t) = self.ua.poll_transmit() {
            self.sip.send_to(&t.bytes, t.to.addr).await.unwrap();
        }
        while let Some(e) = self.ua.poll_event() {
            self.events.push(e);
        }
    }

    fn handle(&mut self, bytes: &[u8], from: SocketAddr) {
        let now = self.now();
        let from = Peer {
            transport: Transport::Udp,
            addr: from,
        };
        self.ua.handle_datagram(now, from, bytes);
    }

    fn tick(&mut self) {
        let now = self.now();
        if self.ua.poll_timeout().is_some_and(|t| t <= now) {
            self.ua.handle_timeout(now);
        }
    }

    fn find<T>(&self, f: impl Fn(&UaEvent) -> Option<T>) -> Option<T> {
        self.events.iter().find_map(f)
    }
}

/// Drive both phones (their datagrams and timers) until `done` holds; at most [`STEP`].
async fn run_until(
    a: &mut Phone,
    b: &mut Phone,
    what: &str,
    done: impl Fn(&Phone, &Phone) -> bool,
) {
    let deadline = Instant::now() + STEP;
    let (mut ba, mut bb) = ([0u8; 65_536], [0u8; 65_536]);
    loop {
        a.flush().await;
        b.flush().await;
        if done(a, b) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {STEP:?}; alice saw {:?}, bob saw {:?}",
            a.events,
            b.events
        );
        let got = tokio::select! {
            r = a.sip.recv_from(&mut ba) => Some((true, r.unwrap())),
            r = b.sip.recv_from(&mut bb) => Some((false, r.unwrap())),
            _ = tokio::time::sleep(Duration::from_millis(10)) => None,
        };
        match got {
            Some((true, (n, from))) => a.handle(&ba[..n], from),
            Some((false, (n, from))) => b.handle(&bb[..n], from),
            None => {}
        }
        a.tick();
        b.tick();
    }
}

/// An RTP packet of G.711 (20 ms) from `ssrc`.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 12 + 160];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// Send [`PACKETS`] packets from `ssrc` to `to` every 20 ms out of `sock`, and meanwhile
/// count the packets from `heard` that arrive on it (until a second after the last one is
/// sent), with the addresses they come from.
async fn talk(sock: &UdpSocket, to: SocketAddr, ssrc: u32, heard: u32) -> (u16, Vec<SocketAddr>) {
    let mut buf = [0u8; 2048];
    let (mut count, mut from) = (0u16, Vec::new());
    let mut next = tokio::time::Instant::now();
    let mut sent = 0u16;
    let mut stop = None;
    loop {
        if sent < PACKETS && tokio::time::Instant::now() >= next {
            sock.send_to(&rtp(ssrc, sent), to).await.unwrap();
            sent += 1;
            next += Duration::from_millis(20);
            if sent == PACKETS {
                stop = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
        let wait = match stop {
            Some(s) => s,
            None => next,
        };
        match tokio::time::timeout_at(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, src))) => {
                if n == 172 && buf[8..12] == heard.to_be_bytes() {
                    count += 1;
                    if !from.contains(&src) {
                        from.push(src);
                    }
                }
            }
            Ok(Err(e)) => panic!("rtp socket: {e}"),
            Err(_) => {
                if stop.is_some_and(|s| tokio::time::Instant::now() >= s) {
                    return (count, from);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_two_peers_crosses_rtpengine_both_ways_and_bye_deletes_it() {
    let Some(engine) = Rtpengine::start(PORTS.0, PORTS.1) else {
        return;
    };
    let ng = engine.ng();
    let overlay = Overlay::enroll(2).await;
    let nodes = overlay
        .start(|i, c| {
            if i == A || i == B {
                let mut sc = SipConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "p2psip.test");
                sc.media = Some(MediaConfig {
                    rtpengine: Some(ng),
                    ..MediaConfig::default()
                });
                c.sip = Some(sc);
            }
        })
        .await;
    let front_end = |i: usize| nodes[i].info().sip.as_ref().unwrap().0;
    let mut alice = Phone::new("alice", front_end(A)).await;
    let mut bob = Phone::new("bob", front_end(B)).await;

    // Both register at their own peer's front-end.
    for p in [&mut alice, &mut bob] {
        let now = p.now();
        p.ua.register(now, 3600).unwrap();
    }
    run_until(&mut alice, &mut bob, "registrations", |a, b| {
        [a, b].iter().all(|p| {
            p.events
                .iter()
                .any(|e| matches!(e, UaEvent::Registered { code: 200 }))
        })
    })
    .await;

    // Alice calls bob; bob answers at once.
    let now = alice.now();
    let call = alice.ua.invite(now, "bob", &sdp(alice.rtp_port())).unwrap();
    run_until(&mut alice, &mut bob, "the call", |a, b| {
        a.find(|e| matches!(e, UaEvent::Answered { .. }).then_some(()))
            .is_some()
            && b.find(|e| matches!(e, UaEvent::Incoming { .. }).then_some(()))
                .is_some()
    })
    .await;
    let offer = bob
        .find(|e| match e {
            UaEvent::Incoming { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .unwrap();
    let answer = alice
        .find(|e| match e {
            UaEvent::Answered { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .unwrap();
    // Each phone is told an rtpengine port, not the other phone's.
    let (alice_to, bob_to) = (target(&answer), target(&offer));
    for (t, body) in [(alice_to, &answer), (bob_to, &offer)] {
        assert!(
            (PORTS.0..=PORTS.1).contains(&t.port()),
            "{t} is not rtpengine's:\n{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_ne!(alice_to.port(), bob.rtp_port());
    assert_ne!(bob_to.port(), alice.rtp_port());
    // Two sessions at the one rtpengine: peer A's and peer B's.
    assert_eq!(engine.calls().len(), 2, "{:?}", engine.calls());

    // RTP both ways at once, counted where it lands.
    let (ra, rb) = tokio::join!(
        talk(&alice.rtp, alice_to, 0xa11ce, 0xb0b),
        talk(&bob.rtp, bob_to, 0xb0b, 0xa11ce),
    );
    eprintln!("alice heard {ra:?}, bob heard {rb:?}");
    assert_eq!(rb.0, PACKETS, "bob heard {rb:?}\n{}", engine.log());
    assert_eq!(ra.0, PACKETS, "alice heard {ra:?}\n{}", engine.log());
    // Each heard it from rtpengine, from the port it was told to send to.
    assert_eq!((ra.1, rb.1), (vec![alice_to], vec![bob_to]));

    // Alice hangs up: both see the call end, and rtpengine holds no session of it.
    let now = alice.now();
    alice.ua.bye(now, &call).unwrap();
    run_until(&mut alice, &mut bob, "the hang-up", |a, b| {
        [a, b]
            .iter()
            .all(|p| p.events.iter().any(|e| matches!(e, UaEvent::Ended { .. })))
    })
    .await;
    let t0 = Instant::now();
    while !engine.calls().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "rtpengine still holds {:?}",
            engine.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in [A, B] {
        let refused = nodes[i]
            .handle()
            .call(|n, _| n.frontend().map(|f| f.media_refused()))
            .await
            .unwrap();
        assert_eq!(refused, Some(0), "peer {i} passed SDP on unanchored");
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
    overlay.close().await;
}
