//! The STUN/TURN server's message path: nat's admission gate (compiled from the server's own
//! source file, `crates/nat/src/gate.rs`, which is crate-private) in front of the
//! `turn-server-proto` machine, driven exactly as `nat::server`'s loop drives them, with
//! relay sockets simulated. A real signed session (401 challenge, Allocate,
//! CreatePermission, ChannelBind) runs first, so fuzzed datagrams meet a live allocation.
//!
//! Input: a sequence of `[who u8][len u16 BE][bytes]` datagrams; `who` picks the authenticated
//! client, a stranger, or a peer on the relay side.
#![no_main]
#![allow(dead_code, unreachable_pub)]

mod credentials {
    pub use nat::{CredentialStore, LookupError};
}
#[path = "../../crates/nat/src/gate.rs"]
mod gate;

use gate::{Gate, Limits, Verdict};
mod datagrams;

use datagrams::datagrams;
use libfuzzer_sys::fuzz_target;
use nat::{CredentialStore, Credentials};
use std::net::SocketAddr;
use std::time::Duration;
use turn_server_proto::api::{SocketAllocateError, TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::Instant;
use turn_server_proto::stun::agent::Transmit;
use turn_server_proto::stun::types::TransportType;
use turn_server_proto::stun::types::attribute::{Nonce, Realm, Username};
use turn_server_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageWrite, MessageWriteExt,
    MessageWriteVec, Method, TransactionId,
};
use turn_server_proto::types::attribute::{ChannelNumber, RequestedTransport, XorPeerAddress};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use turn_server_proto::types::prelude::DelayedTransmitBuild;

const REALM: &str = "p2psip.test";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

struct Rig {
    gate: Gate,
    proto: TurnServer,
    now: Instant,
    listen: SocketAddr,
    next_relay: u16,
}

impl Rig {
    fn new() -> Self {
        let mut creds = CredentialStore::new();
        creds.add_user(Credentials::new("test", "test"));
        creds.set_rest_secret(b"s".to_vec());
        let limits = Limits {
            max_allocations: 4,
            max_allocations_per_user: 2,
            max_permissions: 2,
            max_channels: 2,
        };
        let listen = addr("127.0.0.1:3478");
        Self {
            gate: Gate::new(REALM.into(), creds, limits),
            proto: TurnServer::new(TransportType::Udp, listen, REALM.into()),
            now: Instant::ZERO,
            listen,
            next_relay: 50_000,
        }
    }

    /// `nat::server::Driver::handle_client`, minus the socket.
    fn client(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
        self.now += Duration::from_millis(1);
        let mut out = vec![];
        match self
            .gate
            .handle_client_datagram(from, data, self.now, 1_000)
        {
            Verdict::Reply(b) => out.push(b),
            Verdict::Forward { add_user } => {
                if let Some((u, p)) = add_user {
                    self.proto.add_user(u, p);
                }
                let t = Transmit::new(data, TransportType::Udp, from, self.listen);
                if let Some(o) = self.proto.recv(t, self.now) {
                    out.push(o.data.build());
                }
            }
        }
        self.drive(&mut out);
        out
    }

    /// `nat::server::Driver::handle_peer`, minus the socket.
    fn peer(&mut self, from: SocketAddr, relay: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
        self.now += Duration::from_millis(1);
        let mut out = vec![];
        let t = Transmit::new(data, TransportType::Udp, from, relay);
        if let Some(o) = self.proto.recv(t, self.now) {
            out.push(o.data.build());
        }
        self.drive(&mut out);
        out
    }

    fn drive(&mut self, out: &mut Vec<Vec<u8>>) {
        for _ in 0..16 {
            match self.proto.poll(self.now) {
                TurnServerPollRet::WaitUntil(_) => break,
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let relay = SocketAddr::from(([127, 0, 0, 1], self.next_relay));
                    self.next_relay = self.next_relay.wrapping_add(1).max(50_000);
                    let r = if self.gate.has_capacity() {
                        self.gate.socket_allocated(client_addr, relay);
                        Ok(relay)
                    } else {
                        Err(SocketAllocateError::InsufficientCapacity)
                    };
                    self.proto.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        r,
                        self.now,
                    );
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    self.gate.socket_closed(listen_addr)
                }
                _ => {}
            }
        }
        while let Some(t) = self.proto.poll_transmit(self.now) {
            out.push(t.data);
        }
    }
}

fn signed(
    method: Method,
    nonce: &str,
    add: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let key = LongTermKeyCredentials::new("test".into(), "test".into(), REALM.into()).into();
    let mut m = Message::builder_request(method, MessageWriteVec::new());
    let tid = m.transaction_id();
    add(&mut m, tid);
    m.add_attribute(&Username::new("test").expect("username"))
        .expect("attr");
    m.add_attribute(&Realm::new(REALM).expect("realm"))
        .expect("attr");
    m.add_attribute(&Nonce::new(nonce).expect("nonce"))
        .expect("attr");
    m.add_message_integrity(&key, IntegrityAlgorithm::Sha1)
        .expect("integrity");
    m.finish()
}

/// A real session so that fuzzed datagrams meet an allocation with a permission and a channel.
fn session(rig: &mut Rig, client: SocketAddr, peer: SocketAddr) {
    let mut a = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    a.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .expect("attr");
    let r = rig.client(client, &a.finish());
    let nonce = r
        .first()
        .and_then(|b| {
            Message::from_bytes(b)
                .ok()
                .and_then(|m| m.attribute::<Nonce>().ok().map(|n| n.nonce().to_owned()))
        })
        .expect("401 with a nonce");
    rig.client(
        client,
        &signed(ALLOCATE, &nonce, |m, _| {
            m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .expect("attr");
        }),
    );
    assert_eq!(rig.gate.active_allocations(), 1, "session allocates");
    rig.client(
        client,
        &signed(CREATE_PERMISSION, &nonce, |m, tid| {
            m.add_attribute(&XorPeerAddress::new(peer, tid))
                .expect("attr");
        }),
    );
    rig.client(
        client,
        &signed(CHANNEL_BIND, &nonce, |m, tid| {
            m.add_attribute(&XorPeerAddress::new(peer, tid))
                .expect("attr");
            m.add_attribute(&ChannelNumber::new(0x4001)).expect("attr");
        }),
    );
}

fuzz_target!(|data: &[u8]| {
    let client = addr("127.0.0.1:40000");
    let peer = addr("127.0.0.2:5000");
    let mut rig = Rig::new();
    session(&mut rig, client, peer);
    for (who, dgram) in datagrams(data) {
        match who % 4 {
            0 => drop(rig.client(client, dgram)),
            1 => drop(rig.client(addr("10.0.0.1:1"), dgram)),
            2 => drop(rig.peer(peer, addr("127.0.0.1:50000"), dgram)),
            _ => {
                // Time passes: lifetimes expire, the gate and machine must agree.
                rig.now += Duration::from_secs(u64::from(who) * 4);
                let mut out = vec![];
                rig.drive(&mut out);
            }
        }
        assert!(rig.gate.active_allocations() <= 4, "allocation cap held");
    }
});
