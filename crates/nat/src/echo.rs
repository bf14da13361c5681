//! A UDP echo peer: what `p2psip stun-client`, the TURN benchmark and the relay tests put
//! behind a TURN allocation to see datagrams come back through the relay.

use std::net::SocketAddr;
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
