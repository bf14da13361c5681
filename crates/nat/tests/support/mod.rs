//! Helpers shared by nat's tests against real sockets (our server on loopback, coturn): a
//! UDP peer that echoes, relay echo through a TURN allocation, and the shape of a refusal.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use nat::{ClientError, TurnClient};
use std::net::SocketAddr;
use std::time::Duration;

/// A UDP peer on loopback that echoes everything back to its sender.
pub async fn echo_peer() -> SocketAddr {
    nat::spawn_udp_echo("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The next datagram through the allocation, within two seconds.
pub async fn recv_relayed(turn: &mut TurnClient) -> (Vec<u8>, SocketAddr) {
    tokio::time::timeout(Duration::from_secs(2), turn.recv_from())
        .await
        .unwrap()
        .unwrap()
}

/// `n` numbered datagrams to the echo `peer` through the allocation, each coming back
/// from that peer.
pub async fn relay_echo(turn: &mut TurnClient, peer: SocketAddr, n: u32) {
    for i in 0..n {
        turn.send_to(&i.to_be_bytes(), peer).await.unwrap();
        let (data, from) = recv_relayed(turn).await;
        assert_eq!((data.as_slice(), from), (&i.to_be_bytes()[..], peer));
    }
}

/// The server refused with STUN error `code`.
pub fn assert_rejected(err: &ClientError, code: u16) {
    assert!(
        matches!(err, ClientError::Rejected { code: c, .. } if *c == code),
        "{err}"
    );
}
