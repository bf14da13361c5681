//! Loopback TURN benchmark: allocation set-up time and relay throughput against one or more
//! servers given as `name=ip:port` (user test:test, realm learnt from the 401). Prints a table.
//!
//! Usage: `cargo run --release -p nat --example bench_turn -- ours=127.0.0.1:3478 coturn=127.0.0.1:3479`
//! (`scripts/bench-turn` starts both servers and runs this).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nat::{Credentials, TurnClient, TurnOptions};
use tokio::net::UdpSocket;
use turn_server_proto::stun::types::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_server_proto::types::attribute::{Lifetime, RequestedTransport};
use turn_server_proto::types::message::{ALLOCATE, REFRESH};

const ALLOCS: usize = 300;
const PAYLOAD: usize = 1000;
const WINDOW: usize = 64;
const RUN: Duration = Duration::from_secs(3);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn rx(sock: &UdpSocket, buf: &mut [u8]) -> Res<usize> {
    Ok(tokio::time::timeout(Duration::from_secs(2), sock.recv(buf)).await??)
}

/// One Allocate exchange on the wire (challenge + authenticated request), timed; then delete.
async fn raw_allocate(server: SocketAddr) -> Res<(Duration, UdpSocket)> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await?;
    let mut buf = vec![0u8; 2048];
    let t0 = Instant::now();
    let mut a = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    a.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))?;
    sock.send(&a.finish()).await?;
    let n = rx(&sock, &mut buf).await?;
    let ch = Message::from_bytes(&buf[..n])?;
    if ch.attribute::<Nonce>().is_err() {
        let code = ch.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
        return Err(format!("no NONCE in challenge: {:?} {code}", ch.class()).into());
    }
    let nonce = ch.attribute::<Nonce>()?.nonce().to_owned();
    let realm = ch.attribute::<Realm>()?.realm().to_owned();
    let key: MessageIntegrityCredentials =
        LongTermKeyCredentials::new("test".into(), "test".into(), realm.clone()).into();
    let signed = |method, lifetime: Option<u32>| -> Res<Vec<u8>> {
        let mut m = Message::builder_request(method, MessageWriteVec::new());
        if let Some(l) = lifetime {
            m.add_attribute(&Lifetime::new(l))?;
        } else {
            m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))?;
        }
        m.add_attribute(&Username::new("test")?)?;
        m.add_attribute(&Realm::new(&realm)?)?;
        m.add_attribute(&Nonce::new(&nonce)?)?;
        m.add_message_integrity(&key, IntegrityAlgorithm::Sha1)?;
        Ok(m.finish())
    };
    sock.send(&signed(ALLOCATE, None)?).await?;
    let n = rx(&sock, &mut buf).await?;
    let elapsed = t0.elapsed();
    let r = Message::from_bytes(&buf[..n])?;
    if r.class() != MessageClass::Success {
        let code = r.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
        return Err(format!("allocate refused: {code}").into());
    }
    sock.send(&signed(REFRESH, Some(0))?).await?;
    let _ = rx(&sock, &mut buf).await;
    // The caller keeps the socket so the next allocation gets a fresh 5-tuple (coturn answers
    // 437 to an Allocate from a 5-tuple whose deleted allocation it still remembers).
    Ok((elapsed, sock))
}

async fn echo_peer() -> Res<SocketAddr> {
    Ok(nat::spawn_udp_echo("127.0.0.1:0".parse()?).await?)
}

/// Windowed echo through a channel: returns (echoed datagrams, seconds, losses).
async fn throughput(server: SocketAddr) -> Res<(u64, f64, u64)> {
    let peer = echo_peer().await?;
    let mut turn = TurnClient::allocate(
        server,
        Credentials::new("test", "test"),
        TurnOptions {
            recv_queue: 4 * WINDOW,
            ..TurnOptions::default()
        },
    )
    .await?;
    turn.bind_channel(peer).await?;
    let payload = vec![0xa5u8; PAYLOAD];
    let mut inflight = 0usize;
    let mut done = 0u64;
    let mut lost = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < RUN {
        while inflight < WINDOW {
            turn.send_to(&payload, peer).await?;
            inflight += 1;
        }
        match tokio::time::timeout(Duration::from_millis(200), turn.recv_from()).await {
            Ok(r) => {
                r?;
                inflight -= 1;
                done += 1;
            }
            Err(_) => {
                // Whatever is still in flight after 200 ms of silence is lost.
                lost += inflight as u64;
                inflight = 0;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    turn.close().await;
    Ok((done, secs, lost))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let servers: Vec<(String, SocketAddr)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (n, s) = a.split_once('=')?;
            Some((n.to_owned(), s.parse().ok()?))
        })
        .collect();
    if servers.is_empty() {
        return Err("usage: bench_turn name=ip:port ...".into());
    }
    println!(
        "| server | alloc p50 (µs) | alloc p99 (µs) | alloc mean (µs) | TurnClient::allocate (ms) | relay echo (datagrams/s) | relay echo payload (Mbit/s, one way) | lost |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, addr) in servers {
        let mut times = Vec::with_capacity(ALLOCS);
        let mut keep = Vec::with_capacity(ALLOCS);
        for _ in 0..ALLOCS {
            let (t, sock) = raw_allocate(addr).await?;
            times.push(t.as_secs_f64() * 1e6);
            keep.push(sock);
        }

        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
        let t0 = Instant::now();
        let c = TurnClient::allocate(
            addr,
            Credentials::new("test", "test"),
            TurnOptions::default(),
        )
        .await?;
        let client_ms = t0.elapsed().as_secs_f64() * 1e3;
        c.close().await;
        let (done, secs, lost) = throughput(addr).await?;
        let rate = done as f64 / secs;
        let mbit = rate * PAYLOAD as f64 * 8.0 / 1e6;
        drop(keep);
        println!(
            "| {name} | {p50:.0} | {p99:.0} | {mean:.0} | {client_ms:.1} | {rate:.0} | {mbit:.1} | {lost} |"
        );
    }
    println!(
        "\n{ALLOCS} sequential allocations (401 challenge + authenticated Allocate, then delete), one UDP socket each; \
         relay: {PAYLOAD}-byte ChannelData echoed by a loopback peer, window {WINDOW}, {} s. \
         TurnClient::allocate includes turn-client-proto's 50 ms minimum request cadence.",
        RUN.as_secs()
    );
    Ok(())
}
