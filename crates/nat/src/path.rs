//! The STUN/TURN server's message path without sockets: the admission [`Gate`] in front of
//! the `turn-server-proto` machine, fed datagrams and the clock, telling its driver what to
//! send and when it needs a relay socket. The server's loop drives it over tokio sockets;
//! the gate's tests and the `nat_server` fuzz target drive it in memory, so all three run
//! the same path.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::debug;
use turn_server_proto::api::{SocketAllocateError, TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::Instant;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::stun::types::TransportType;
use turn_server_proto::types::AddressFamily;
use turn_server_proto::types::prelude::DelayedTransmitBuild;

use crate::credentials::CredentialStore;
use crate::gate::{Gate, Limits, Verdict};

/// A datagram to send: from the listening address or a relay address, to a client or a
/// peer.
pub(crate) struct Datagram {
    /// The local address it leaves from.
    pub(crate) from: SocketAddr,
    /// Where it goes.
    pub(crate) to: SocketAddr,
    /// Its bytes.
    pub(crate) data: Vec<u8>,
}

/// What the path needs from its driver next.
pub(crate) enum Wants {
    /// Nothing before this time.
    Wait(Instant),
    /// A relay socket for an allocation: answer with [`MessagePath::relay_socket`].
    RelaySocket(RelayRequest),
    /// The allocation on this relay address is gone: its socket can close.
    Closed(SocketAddr),
}

/// An allocation waiting for its relay socket.
pub(crate) struct RelayRequest {
    transport: TransportType,
    listen_addr: SocketAddr,
    client_addr: SocketAddr,
    allocation_transport: TransportType,
    family: AddressFamily,
}

impl RelayRequest {
    /// The address family the client asked for.
    pub(crate) fn family(&self) -> AddressFamily {
        self.family
    }

    /// The client the allocation is for.
    pub(crate) fn client(&self) -> SocketAddr {
        self.client_addr
    }
}

/// The gate and the protocol machine behind one listening address.
pub(crate) struct MessagePath {
    /// The admission gate (quotas, credentials on demand, the allocation mirror).
    pub(crate) gate: Gate,
    proto: TurnServer,
    listen: SocketAddr,
}

impl MessagePath {
    /// The path behind `listen` for `realm`, admitting `credentials` within `limits`;
    /// nonces live `nonce_expiry` (the protocol machine's default when `None`).
    pub(crate) fn new(
        listen: SocketAddr,
        realm: String,
        credentials: CredentialStore,
        limits: Limits,
        nonce_expiry: Option<Duration>,
    ) -> Self {
        let mut proto = TurnServer::new(TransportType::Udp, listen, realm.clone());
        if let Some(expiry) = nonce_expiry {
            proto.set_nonce_expiry_duration(expiry);
        }
        Self {
            gate: Gate::new(realm, credentials, limits),
            proto,
            listen,
        }
    }

    /// A datagram from a client to the listening address; the answer to send, if any.
    pub(crate) fn client(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        unix_secs: u64,
    ) -> Option<Datagram> {
        match self.gate.handle_client_datagram(from, data, now, unix_secs) {
            Verdict::Reply(data) => Some(Datagram {
                from: self.listen,
                to: from,
                data,
            }),
            Verdict::Forward { add_user } => {
                if let Some((u, p)) = add_user {
                    debug!(user = %u, "teaching protocol machine a validated user");
                    self.proto.add_user(u, p);
                }
                let t = Transmit::new(data, TransportType::Udp, from, self.listen);
                let out = self.proto.recv(t, now)?;
                // turn-server-proto 0.7 addresses Binding responses to its own listen
                // address (the request's destination); they belong to the requester.
                let to = if out.to == self.listen { from } else { out.to };
                Some(Datagram {
                    from: out.from,
                    to,
                    data: out.data.build(),
                })
            }
        }
    }

    /// A datagram from a peer to the relay address `relay`; what to send on, if any.
    pub(crate) fn peer(
        &mut self,
        from: SocketAddr,
        relay: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Option<Datagram> {
        let t = Transmit::new(data, TransportType::Udp, from, relay);
        let Some(out) = self.proto.recv(t, now) else {
            debug!(%relay, peer = %from, "peer datagram dropped (no permission)");
            return None;
        };
        Some(Datagram {
            from: out.from,
            to: out.to,
            data: out.data.build(),
        })
    }

    /// What the protocol machine needs next; a closed allocation is taken off the gate's
    /// mirror before it is reported.
    pub(crate) fn poll(&mut self, now: Instant) -> Wants {
        loop {
            match self.proto.poll(now) {
                TurnServerPollRet::WaitUntil(at) => return Wants::Wait(at),
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    return Wants::RelaySocket(RelayRequest {
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                    });
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    self.gate.socket_closed(listen_addr);
                    return Wants::Closed(listen_addr);
                }
                // Only UDP allocations exist on a UDP listener; nothing to do.
                TurnServerPollRet::TcpConnect { .. } | TurnServerPollRet::TcpClose { .. } => {}
            }
        }
    }

    /// The driver's answer to a [`Wants::RelaySocket`]: the relay address it bound, or why
    /// it could not.
    pub(crate) fn relay_socket(
        &mut self,
        req: RelayRequest,
        result: Result<SocketAddr, SocketAllocateError>,
        now: Instant,
    ) {
        if let Ok(relay) = result {
            self.gate.socket_allocated(req.client_addr, relay);
        }
        self.proto.allocated_socket(
            req.transport,
            req.listen_addr,
            req.client_addr,
            req.allocation_transport,
            req.family,
            result,
            now,
        );
    }

    /// The next datagram the protocol machine sends on its own (refreshes, expiries).
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Datagram> {
        let t = self.proto.poll_transmit(now)?;
        Some(Datagram {
            from: t.from,
            to: t.to,
            data: t.data,
        })
    }
}
