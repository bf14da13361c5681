//! The server's message path driven in memory, for the gate's tests and the `nat_server`
//! fuzz target (which compiles this file from its path): a rig that feeds it datagrams and
//! simulates relay sockets, and a real signed TURN session (401 challenge, Allocate,
//! CreatePermission, ChannelBind, Send, ChannelData, Refresh) whose datagrams seed
//! mutations. A failure here is the test's failure.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use turn_server_proto::api::SocketAllocateError;
use turn_server_proto::stun::Instant;
use turn_server_proto::stun::types::attribute::{Nonce, Realm, Username};
use turn_server_proto::stun::types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWrite, MessageWriteExt, MessageWriteVec, Method,
    TransactionId,
};
use turn_server_proto::types::attribute::{
    ChannelNumber, Data as AData, Lifetime, RequestedTransport, XorPeerAddress,
};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

use crate::credentials::{CredentialStore, Credentials};
use crate::gate::Limits;
use crate::path::{Datagram, MessagePath, Wants};

pub(crate) const REALM: &str = "p2psip.test";

pub(crate) fn listen() -> SocketAddr {
    "127.0.0.1:3478".parse().unwrap()
}
pub(crate) fn client() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
pub(crate) fn peer() -> SocketAddr {
    "127.0.0.2:5000".parse().unwrap()
}
pub(crate) const RELAY: &str = "127.0.0.1:50000";

/// The server's message path driven in memory, one millisecond per datagram; allocations
/// get relay ports from [`RELAY`]'s up while the gate has room.
pub(crate) struct Rig {
    /// The path under test.
    pub(crate) path: MessagePath,
    /// The clock.
    pub(crate) now: Instant,
    next_relay: u16,
}

impl Rig {
    pub(crate) fn new() -> Self {
        let mut creds = CredentialStore::new();
        creds.add_user(Credentials::new("test", "test"));
        creds.set_rest_secret(b"s".to_vec());
        let limits = Limits {
            max_allocations: 4,
            max_allocations_per_user: 2,
            max_permissions: 2,
            max_channels: 2,
        };
        Self {
            path: MessagePath::new(listen(), REALM.into(), creds, limits, None),
            now: Instant::ZERO,
            next_relay: 50_000,
        }
    }

    /// What the driver does with a client datagram; returns the replies' bytes.
    pub(crate) fn client(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
        self.now += Duration::from_millis(1);
        let reply = self.path.client(from, data, self.now, 1_000);
        self.drive(reply)
    }

    /// What the driver does with a peer's datagram to the first relay address.
    pub(crate) fn peer(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Vec<u8>> {
        self.now += Duration::from_millis(1);
        let relayed = self.path.peer(from, RELAY.parse().unwrap(), data, self.now);
        self.drive(relayed)
    }

    /// `first`, then what the protocol machine sends once its wants are met.
    /// `first`, then what the protocol machine sends once its wants are met (time passing
    /// alone when `first` is `None`).
    pub(crate) fn drive(&mut self, first: Option<Datagram>) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = first.into_iter().map(|d| d.data).collect();
        for _ in 0..16 {
            match self.path.poll(self.now) {
                Wants::Wait(_) => break,
                Wants::RelaySocket(req) => {
                    let relay = SocketAddr::from(([127, 0, 0, 1], self.next_relay));
                    self.next_relay = self.next_relay.wrapping_add(1).max(50_000);
                    let relay = if self.path.gate.has_capacity() {
                        Ok(relay)
                    } else {
                        Err(SocketAllocateError::InsufficientCapacity)
                    };
                    self.path.relay_socket(req, relay, self.now);
                }
                Wants::Closed(_) => {}
            }
        }
        while let Some(d) = self.path.poll_transmit(self.now) {
            out.push(d.data);
        }
        out
    }
}

pub(crate) fn key() -> MessageIntegrityCredentials {
    LongTermKeyCredentials::new("test".into(), "test".into(), REALM.into()).into()
}

pub(crate) fn signed(
    method: Method,
    nonce: &str,
    add: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let mut m = Message::builder_request(method, MessageWriteVec::new());
    let tid = m.transaction_id();
    add(&mut m, tid);
    m.add_attribute(&Username::new("test").unwrap()).unwrap();
    m.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
    m.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    m.add_message_integrity(&key(), IntegrityAlgorithm::Sha1)
        .unwrap();
    m.finish()
}

/// A real session: 401 challenge, Allocate, CreatePermission, ChannelBind, Send, ChannelData,
/// Refresh. Returns every datagram the client sent (seeds for mutation).
pub(crate) fn session(rig: &mut Rig) -> Vec<Vec<u8>> {
    let mut seeds = vec![];
    let mut a = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    a.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    let a = a.finish();
    let r = rig.client(client(), &a);
    seeds.push(a);
    let challenge = Message::from_bytes(&r[0]).unwrap();
    let nonce = challenge.attribute::<Nonce>().unwrap().nonce().to_owned();
    let alloc = signed(ALLOCATE, &nonce, |m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let r = rig.client(client(), &alloc);
    assert!(
        r.iter()
            .any(|b| Message::from_bytes(b).is_ok_and(|m| m.class() == MessageClass::Success)),
        "allocate failed"
    );
    seeds.push(alloc);
    let perm = signed(CREATE_PERMISSION, &nonce, |m, tid| {
        m.add_attribute(&XorPeerAddress::new(peer(), tid)).unwrap();
    });
    rig.client(client(), &perm);
    seeds.push(perm);
    let chan = signed(CHANNEL_BIND, &nonce, |m, tid| {
        m.add_attribute(&XorPeerAddress::new(peer(), tid)).unwrap();
        m.add_attribute(&ChannelNumber::new(0x4001)).unwrap();
    });
    rig.client(client(), &chan);
    seeds.push(chan);
    let mut send = Message::builder_indication(SEND, MessageWriteVec::new());
    let tid = send.transaction_id();
    send.add_attribute(&XorPeerAddress::new(peer(), tid))
        .unwrap();
    send.add_attribute(&AData::new(b"hello")).unwrap();
    let send = send.finish();
    let r = rig.client(client(), &send);
    assert_eq!(r.len(), 1, "send indication relayed");
    seeds.push(send);
    let mut cd = vec![0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
    rig.client(client(), &cd);
    seeds.push(cd.clone());
    cd.truncate(7);
    seeds.push(cd);
    let refresh = signed(REFRESH, &nonce, |m, _| {
        m.add_attribute(&Lifetime::new(600)).unwrap();
    });
    rig.client(client(), &refresh);
    seeds.push(refresh);
    let binding = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    seeds.push(binding);
    seeds
}
