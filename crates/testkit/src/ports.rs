//! Loopback ports for servers a test starts later (a child process, or a peer whose port
//! must be known before it starts, e.g. to enroll it).
//!
//! A port taken by binding port 0 and releasing it lies in the kernel's ephemeral range
//! (32768 and up), where any outgoing connection or port-0 bind of a test running beside
//! this one can take it before the server binds it again. These ports come from below that
//! range and apart per test process, so only another caller of this function could race
//! for one, and it starts elsewhere.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};

/// First port handed out.
const FIRST: u16 = 10_000;
/// How many: 10000–19999, below the media relays' 20000–29999 too.
const SPAN: u16 = 10_000;

/// A loopback port free for TCP and for UDP now. The test process's PID picks where the
/// search starts and a counter walks on, so two test processes do not pick the same one.
///
/// # Panics
/// When every port in 10000–19999 is taken.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id().wrapping_mul(617) % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = FIRST + (start + step) % SPAN;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 10000-19999")
}

/// [`free_port`] on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_differ() {
        let ports: std::collections::BTreeSet<u16> = (0..3).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 3, "{ports:?}");
        assert!(
            ports.iter().all(|p| (10_000..20_000).contains(p)),
            "{ports:?}"
        );
    }
}
