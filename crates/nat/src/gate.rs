//! The admission gate in front of the sans-IO TURN server (pure, no I/O).
//!
//! `turn-server-proto` implements the TURN protocol but keeps a static user table and has no
//! quotas. The gate sits between the socket and the protocol machine and adds what an
//! operator needs:
//!
//! - **credentials on demand**: a username is looked up in the [`CredentialStore`] (static
//!   users, or TURN REST `<expiry>:<node-id>` names signed with the shared secret) and handed to
//!   the protocol machine only once a request carrying it passes MESSAGE-INTEGRITY, so
//!   garbage usernames cannot grow its table; expired REST names are refused with 401 even if
//!   the protocol machine learnt them earlier;
//! - **quotas**: allocations per user (486 Allocation Quota Reached), allocations in total,
//!   permissions and channels per allocation (508 Insufficient Capacity). Refusals are signed
//!   with the user's key so that clients act on them.
//!
//! The gate mirrors the protocol machine's allocation table from the driver's notifications
//! ([`Gate::socket_allocated`], [`Gate::socket_closed`]); permissions and channels are mirrored
//! with the protocol's fixed lifetimes (300 s and 600 s).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tracing::{debug, info, warn};
use turn_server_proto::stun::Instant;
use turn_server_proto::stun::types::attribute::{ErrorCode, Realm, Userhash, Username};
use turn_server_proto::stun::types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_server_proto::stun::types::prelude::*;
use turn_server_proto::types::attribute::{ChannelNumber, XorPeerAddress};
use turn_server_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};

use crate::credentials::{CredentialStore, LookupError};

/// TURN permission lifetime (RFC 8656 §9, and what turn-server-proto uses).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// TURN channel binding lifetime (RFC 8656 §12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long an admitted Allocate may wait for its relay socket before its slot is freed.
const PENDING_LIFETIME: Duration = Duration::from_secs(5);

/// Resource limits enforced by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Allocations in total (508 beyond).
    pub max_allocations: usize,
    /// Allocations per user, i.e. per enrolled peer with REST credentials (486 beyond).
    pub max_allocations_per_user: usize,
    /// Permissions (peer IPs) per allocation (508 beyond).
    pub max_permissions: usize,
    /// Channel bindings per allocation (508 beyond).
    pub max_channels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_allocations: 1024,
            max_allocations_per_user: 4,
            max_permissions: 32,
            max_channels: 32,
        }
    }
}

/// What to do with an incoming datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it to the protocol machine; first teach it this user if given.
    Forward {
        /// A validated user the protocol machine does not know yet.
        add_user: Option<(String, String)>,
    },
    /// Answer with these bytes (an error response) and do not forward.
    Reply(Vec<u8>),
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GateStats {
    /// Allocations that got a relay socket.
    pub allocations_created: u64,
    /// Allocations released (deleted, expired or shut down).
    pub allocations_closed: u64,
    /// Allocate requests refused with 486.
    pub quota_rejects: u64,
    /// Requests refused with 508 (total allocations, permissions, channels).
    pub capacity_rejects: u64,
    /// Requests refused because REST credentials had expired.
    pub expired_credentials: u64,
    /// STUN Binding requests seen (answered by the protocol machine).
    pub binding_requests: u64,
    /// Of `capacity_rejects`: Allocates refused because the server holds its most
    /// allocations, CreatePermissions and ChannelBinds refused for an allocation's most
    /// permissions or channels.
    pub allocations_full: u64,
    /// See `allocations_full`.
    pub permissions_full: u64,
    /// See `allocations_full`.
    pub channels_full: u64,
}

#[derive(Debug)]
struct Allocation {
    username: String,
    relay: SocketAddr,
    permissions: BTreeMap<IpAddr, Instant>,
    channels: BTreeMap<u16, Instant>,
}

#[derive(Debug)]
pub(crate) struct Gate {
    realm: String,
    creds: CredentialStore,
    limits: Limits,
    known_users: BTreeSet<String>,
    /// client address → (username, admitted at)
    pending: BTreeMap<SocketAddr, (String, Instant)>,
    /// client address → allocation
    allocations: BTreeMap<SocketAddr, Allocation>,
    relay_to_client: BTreeMap<SocketAddr, SocketAddr>,
    per_user: BTreeMap<String, usize>,
    stats: GateStats,
}

impl Gate {
    pub(crate) fn new(realm: String, creds: CredentialStore, limits: Limits) -> Self {
        Self {
            realm,
            creds,
            limits,
            known_users: BTreeSet::new(),
            pending: BTreeMap::new(),
            allocations: BTreeMap::new(),
            relay_to_client: BTreeMap::new(),
            per_user: BTreeMap::new(),
            stats: GateStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> GateStats {
        self.stats
    }

    pub(crate) fn active_allocations(&self) -> usize {
        self.allocations.len()
    }

    pub(crate) fn active_users(&self) -> usize {
        self.per_user.len()
    }

    /// Whether another relay socket may be opened (total limit).
    pub(crate) fn has_capacity(&self) -> bool {
        self.allocations.len() < self.limits.max_allocations
    }

    /// Inspect a datagram from a client on the listening socket.
    pub(crate) fn handle_client_datagram(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        unix_now: u64,
    ) -> Verdict {
        let forward = Verdict::Forward { add_user: None };
        // ChannelData and non-STUN bytes go straight to the protocol machine.
        let Ok(msg) = Message::from_bytes(data) else {
            return forward;
        };
        if msg.class() != MessageClass::Request {
            return forward;
        }
        if msg.method() == BINDING {
            self.stats.binding_requests += 1;
        }
        let username = if let Ok(u) = msg.attribute::<Username>() {
            u.username().to_owned()
        } else if let Some(u) = msg
            .attribute::<Userhash>()
            .ok()
            .and_then(|h| self.creds.user_for_hash(h.hash(), &self.realm))
        {
            // RFC 8489 anonymous username: only static users can be recognised by hash.
            u
        } else {
            return forward;
        };
        let password = match self.creds.lookup(&username, unix_now) {
            Ok(p) => p,
            Err(LookupError::Unknown) => {
                debug!(%from, user = %username, "unknown TURN user; protocol answers 401");
                return forward;
            }
            Err(LookupError::Expired(ago)) => {
                self.stats.expired_credentials += 1;
                info!(%from, user = %username, expired_secs_ago = ago, "refusing expired REST credentials (401)");
                return Verdict::Reply(self.unsigned_401(&msg));
            }
        };
        let key: MessageIntegrityCredentials =
            LongTermKeyCredentials::new(username.clone(), password.clone(), self.realm.clone())
                .into();
        let Ok(algo) = msg.validate_integrity(&key) else {
            debug!(%from, user = %username, "MESSAGE-INTEGRITY does not validate; protocol answers 401");
            return forward;
        };
        let add_user = if self.known_users.contains(&username) {
            None
        } else {
            self.known_users.insert(username.clone());
            Some((username.clone(), password))
        };
        let verdict = |reply: Option<Vec<u8>>| match reply {
            Some(bytes) => Verdict::Reply(bytes),
            None => Verdict::Forward {
                add_user: add_user.clone(),
            },
        };
        let method = msg.method();
        let reply = if method == ALLOCATE {
            self.admit_allocate(from, &msg, &username, &key, algo, now)
        } else if method == CREATE_PERMISSION {
            let ips: Vec<IpAddr> = msg
                .iter_attributes()
                .filter(|(_, a)| a.get_type() == XorPeerAddress::TYPE)
                .filter_map(|(_, a)| XorPeerAddress::from_raw(a).ok())
                .map(|a| a.addr(msg.transaction_id()).ip())
                .collect();
            self.admit_permissions(from, &msg, &ips, None, &key, algo, now)
        } else if method == CHANNEL_BIND {
            let peer = msg
                .attribute::<XorPeerAddress>()
                .ok()
                .map(|a| a.addr(msg.transaction_id()).ip());
            let channel = msg.attribute::<ChannelNumber>().ok().map(|c| c.channel());
            match (peer, channel) {
                (Some(ip), Some(ch)) => {
                    self.admit_permissions(from, &msg, &[ip], Some(ch), &key, algo, now)
                }
                _ => None,
            }
        } else {
            None
        };
        verdict(reply)
    }

    fn admit_allocate(
        &mut self,
        from: SocketAddr,
        msg: &Message<'_>,
        username: &str,
        key: &MessageIntegrityCredentials,
        algo: IntegrityAlgorithm,
        now: Instant,
    ) -> Option<Vec<u8>> {
        self.pending
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < PENDING_LIFETIME);
        if self.allocations.contains_key(&from) || self.pending.contains_key(&from) {
            // Retransmission or a second Allocate on the same 5-tuple: the protocol answers.
            return None;
        }
        let used = self.per_user.get(username).copied().unwrap_or(0)
            + self.pending.values().filter(|(u, _)| u == username).count();
        if used >= self.limits.max_allocations_per_user {
            self.stats.quota_rejects += 1;
            warn!(%from, user = %username, used, quota = self.limits.max_allocations_per_user,
                "allocation quota reached (486)");
            return Some(signed_error(
                msg,
                ErrorCode::ALLOCATION_QUOTA_REACHED,
                key,
                algo,
            ));
        }
        if self.allocations.len() + self.pending.len() >= self.limits.max_allocations {
            self.stats.capacity_rejects += 1;
            self.stats.allocations_full += 1;
            warn!(%from, user = %username, total = self.allocations.len(),
                max = self.limits.max_allocations, "server full, refusing allocation (508)");
            return Some(signed_error(
                msg,
                ErrorCode::INSUFFICIENT_CAPACITY,
                key,
                algo,
            ));
        }
        self.pending.insert(from, (username.to_owned(), now));
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn admit_permissions(
        &mut self,
        from: SocketAddr,
        msg: &Message<'_>,
        ips: &[IpAddr],
        channel: Option<u16>,
        key: &MessageIntegrityCredentials,
        algo: IntegrityAlgorithm,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let limits = self.limits;
        let alloc = self.allocations.get_mut(&from)?;
        alloc.permissions.retain(|_, exp| *exp >= now);
        alloc.channels.retain(|_, exp| *exp >= now);
        let new_ips: BTreeSet<&IpAddr> = ips
            .iter()
            .filter(|ip| !alloc.permissions.contains_key(ip))
            .collect();
        if alloc.permissions.len() + new_ips.len() > limits.max_permissions {
            self.stats.capacity_rejects += 1;
            self.stats.permissions_full += 1;
            warn!(%from, user = %alloc.username, relay = %alloc.relay,
                have = alloc.permissions.len(), max = limits.max_permissions,
                "permission limit reached (508)");
            return Some(signed_error(
                msg,
                ErrorCode::INSUFFICIENT_CAPACITY,
                key,
                algo,
            ));
        }
        if let Some(ch) = channel {
            if !alloc.channels.contains_key(&ch) && alloc.channels.len() >= limits.max_channels {
                self.stats.capacity_rejects += 1;
                self.stats.channels_full += 1;
                warn!(%from, user = %alloc.username, relay = %alloc.relay,
                    max = limits.max_channels, "channel limit reached (508)");
                return Some(signed_error(
                    msg,
                    ErrorCode::INSUFFICIENT_CAPACITY,
                    key,
                    algo,
                ));
            }
            alloc.channels.insert(ch, now + CHANNEL_LIFETIME);
        }
        for ip in ips {
            alloc.permissions.insert(*ip, now + PERMISSION_LIFETIME);
        }
        None
    }

    /// The driver opened a relay socket for the client at `client`.
    pub(crate) fn socket_allocated(&mut self, client: SocketAddr, relay: SocketAddr) {
        let username = match self.pending.remove(&client) {
            Some((u, _)) => u,
            None => {
                // Admitted long ago (slow socket allocation) or anonymous: still account for it.
                String::from("<unknown>")
            }
        };
        *self.per_user.entry(username.clone()).or_insert(0) += 1;
        self.stats.allocations_created += 1;
        info!(%client, %relay, user = %username, active = self.allocations.len() + 1,
            "allocation created");
        self.relay_to_client.insert(relay, client);
        self.allocations.insert(
            client,
            Allocation {
                username,
                relay,
                permissions: BTreeMap::new(),
                channels: BTreeMap::new(),
            },
        );
    }

    /// The protocol machine released the relay socket `relay`.
    pub(crate) fn socket_closed(&mut self, relay: SocketAddr) {
        let Some(client) = self.relay_to_client.remove(&relay) else {
            return;
        };
        let Some(alloc) = self.allocations.remove(&client) else {
            return;
        };
        if let Some(n) = self.per_user.get_mut(&alloc.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&alloc.username);
            }
        }
        self.stats.allocations_closed += 1;
        info!(%client, %relay, user = %alloc.username, active = self.allocations.len(),
            "allocation closed (deleted or expired)");
    }

    fn unsigned_401(&self, msg: &Message<'_>) -> Vec<u8> {
        let mut b = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(e) = ErrorCode::builder(ErrorCode::UNAUTHORIZED)
            .reason("Credentials expired")
            .build()
        {
            let _ = b.add_attribute(&e);
        }
        if let Ok(r) = Realm::new(&self.realm) {
            let _ = b.add_attribute(&r);
        }
        let _ = b.add_fingerprint();
        b.finish()
    }
}

/// An error response signed with the requester's long-term key.
fn signed_error(
    msg: &Message<'_>,
    code: u16,
    key: &MessageIntegrityCredentials,
    algo: IntegrityAlgorithm,
) -> Vec<u8> {
    let mut b = Message::builder_error(msg, MessageWriteVec::new());
    if let Ok(e) = ErrorCode::builder(code).build() {
        let _ = b.add_attribute(&e);
    }
    let _ = b.add_message_integrity(key, algo);
    let _ = b.add_fingerprint();
    b.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The server's message path (gate + protocol machine, no sockets) must never panic on
    //! bytes from the network: random bytes, and mutations of real authenticated TURN traffic.

    use crate::rig::{Rig, client, peer, session};
    use proptest::prelude::*;

    #[test]
    fn real_session_passes_the_gate() {
        let mut rig = Rig::new();
        let seeds = session(&mut rig);
        assert_eq!(seeds.len(), 9);
        assert_eq!(rig.path.gate.active_allocations(), 1);
        // A peer with permission reaches the client.
        assert_eq!(rig.peer(peer(), b"back").len(), 1);
        // A stranger does not.
        assert!(rig.peer("127.0.0.9:1".parse().unwrap(), b"x").is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600),
                                    from_peer in any::<bool>()) {
            let mut rig = Rig::new();
            let _ = session(&mut rig);
            if from_peer {
                rig.peer(peer(), &data);
            } else {
                rig.client(client(), &data);
                rig.client("10.0.0.1:1".parse().unwrap(), &data);
            }
        }

        #[test]
        fn mutated_session_traffic_never_panics(
            seed in 0usize..9,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in proptest::option::of(any::<usize>()),
            stranger in any::<bool>(),
        ) {
            let mut rig = Rig::new();
            let seeds = session(&mut rig);
            let mut data = seeds[seed].clone();
            for (at, b) in flips {
                if !data.is_empty() {
                    let i = at % data.len();
                    data[i] ^= b;
                }
            }
            if let Some(c) = cut {
                data.truncate(c % (data.len() + 1));
            }
            let from = if stranger { "127.0.0.1:40001".parse().unwrap() } else { client() };
            rig.client(from, &data);
            rig.peer(peer(), &data);
            // And the message header made consistent with a STUN magic cookie and length.
            if data.len() >= 20 {
                let len = (data.len() - 20) as u16;
                data[2..4].copy_from_slice(&len.to_be_bytes());
                data[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                data[0] &= 0x3f;
                rig.client(from, &data);
            }
        }
    }
}
