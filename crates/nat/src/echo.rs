//! A UDP echo peer: what `p2psip stun-client`, the TURN benchmark and the relay tests put
//! behind a TURN allocation to see datagrams come back through the relay; and the echo
//! round trips those tools and `p2psip ice` measure ([`EchoTally`], [`probe_turn`],
//! [`probe_ice`]).

use crate::{ClientError, IceError, IceSession, TurnClient};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Bind a UDP socket on `bind` and echo every datagram back to its sender from a task that
/// lives as long as the runtime; returns the bound address.
pub async fn spawn_udp_echo(bind: SocketAddr) -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind(bind).await?;
    let addr = sock.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}

/// Echo round trips as `p2psip stun-client` and `p2psip ice` count them: how many came back
/// and how long each took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EchoTally {
    /// Echoes sent.
    pub sent: u32,
    /// Round-trip times of the echoes that came back, ms.
    pub rtts_ms: Vec<f64>,
    /// Why each lost echo was lost (`echo N: …`), for the operator.
    pub failures: Vec<String>,
}

impl EchoTally {
    /// Count echo number `i`, sent at `sent_at`: back intact, or lost and why.
    pub fn record(&mut self, i: u32, sent_at: Instant, back: Result<(), String>) {
        self.sent += 1;
        match back {
            Ok(()) => self.rtts_ms.push(sent_at.elapsed().as_secs_f64() * 1e3),
            Err(why) => self.failures.push(format!("echo {i}: {why}")),
        }
    }

    /// Echoes that came back.
    pub fn ok(&self) -> u32 {
        u32::try_from(self.rtts_ms.len()).unwrap_or(u32::MAX)
    }

    /// Echoes lost.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.ok())
    }

    /// Mean round trip, ms (0 when none came back).
    pub fn avg_ms(&self) -> f64 {
        if self.rtts_ms.is_empty() {
            0.0
        } else {
            self.rtts_ms.iter().sum::<f64>() / self.rtts_ms.len() as f64
        }
    }

    /// Longest round trip, ms (0 when none came back).
    pub fn max_ms(&self) -> f64 {
        self.rtts_ms.iter().copied().fold(0.0, f64::max)
    }
}

/// Send `count` numbered echo requests over an ICE pair, each waiting up to `timeout` for
/// its answer; a wrong or missing answer is counted lost.
pub async fn probe_ice(
    session: &mut IceSession,
    count: u32,
    timeout: Duration,
) -> Result<EchoTally, IceError> {
    let mut tally = EchoTally::default();
    for i in 0..count {
        let payload = format!("p2psip-ice-echo {i}");
        let sent_at = Instant::now();
        session.send(payload.as_bytes()).await?;
        let back = match session.recv(timeout).await {
            Ok(d) if d == payload.as_bytes() => Ok(()),
            Ok(_) => Err("unexpected datagram".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        tally.record(i, sent_at, back);
    }
    Ok(tally)
}

/// Send `count` echo datagrams of `size` bytes (at least 4: the sequence number) through
/// the allocation `turn` to the echo peer `peer`, each awaited for at most `timeout`. A lost
/// or garbled echo is counted; a failure of the relay itself ends the probe.
pub async fn probe_turn(
    turn: &mut TurnClient,
    peer: SocketAddr,
    count: u32,
    size: usize,
    timeout: Duration,
) -> Result<EchoTally, ClientError> {
    let mut tally = EchoTally::default();
    for i in 0..count {
        let mut payload = vec![0u8; size.max(4)];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        let sent_at = Instant::now();
        turn.send_to(&payload, peer).await?;
        let back = match tokio::time::timeout(timeout, turn.recv_from()).await {
            Ok(Ok((data, from))) if data == payload && from == peer => Ok(()),
            Ok(Ok(_)) => Err("unexpected datagram".to_owned()),
            Ok(Err(e)) => return Err(e),
            Err(_) => Err("timed out".to_owned()),
        };
        tally.record(i, sent_at, back);
    }
    Ok(tally)
}

/// Answer `count` echo requests over an ICE pair (the other side of [`probe_ice`]), each
/// awaited for at most `timeout`.
pub async fn answer_ice(
    session: &mut IceSession,
    count: u32,
    timeout: Duration,
) -> Result<(), IceError> {
    for _ in 0..count {
        let d = session.recv(timeout).await?;
        session.send(&d).await?;
    }
    Ok(())
}
