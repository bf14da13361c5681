//! Wire types of the overlay and the framed codec that carries them.
//!
//! A frame is `version (u8) | kind (u8) | length (u32, big-endian) | body`, where the body is
//! the postcard encoding of a [`Message`]. The decoder checks the version, the kind, the
//! maximum frame size (before allocating anything) and that the body decodes to a message of
//! the announced kind; anything else is a typed [`CodecError`].

use crate::{Contact, NodeId};
use serde::{Deserialize, Serialize};

/// The wire version this build speaks. Version 2: [`Message::Ringing`] carries a SHA-256
/// digest and PingRequest signatures cover domain-separated bytes. Version 3: a PingRequest
/// body names peers its copy must avoid, every hop acknowledges a copy with a signed
/// [`Message::PingAck`], and a [`Message::HopReceipt`] carries the next hop's acknowledgement.
/// Version 4: [`Message::Ringing`] names the caller and carries the callee's signature, and
/// a copy of it comes back along the request's path.
pub const WIRE_VERSION: u8 = 4;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;
/// The highest message kind this build knows.
pub const MAX_KIND: u8 = 24;
/// Default cap on a frame (header + body); bigger frames are refused unread.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// A recursive routing step toward the peer that owns `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The origin's handle for this lookup.
    pub lookup: u64,
    /// Who asked; the answer goes straight back to it.
    pub origin: Contact,
    /// The key (or Node-ID) being looked up.
    pub key: NodeId,
    /// Hop-level token: the receiver acknowledges it with [`Message::RouteAck`].
    pub token: u64,
    /// Set on the final hop: the receiver is the owner of `key`.
    pub last_hop: bool,
    /// Peers the request has passed through so far, origin first.
    pub path: Vec<NodeId>,
}

/// The owner's answer to a lookup, sent directly to the origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReply {
    /// The origin's handle for this lookup.
    pub lookup: u64,
    /// The key that was looked up.
    pub key: NodeId,
    /// The peer responsible for `key`.
    pub owner: Contact,
    /// The full hop path, origin first, owner last.
    pub path: Vec<NodeId>,
}

/// A stored item that moves with key responsibility (hand-over on join and leave).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Where the record lives on the ring.
    pub key: NodeId,
    /// Opaque payload (bounded by the store's configuration).
    pub value: Vec<u8>,
}

/// A call set-up request: caller → (CSPG → CSPG →) CSP, or straight to the callee when the
/// caller has it in its contact cache (`direct`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The caller's handle for this call.
    pub call: u64,
    /// Who calls (answers go straight back to it).
    pub caller: Contact,
    /// The callee's Node-ID.
    pub callee: NodeId,
    /// The original request (a SIP INVITE); intermediate peers never see it.
    pub invite: Vec<u8>,
    /// Sent to the callee directly from the contact cache.
    pub direct: bool,
}

/// The callee rings: sent back along the path the request took (the CSP, and the CSPGs of a
/// call across layers), over links those peers hold open anyway, so no call waits for a
/// fresh TLS handshake between caller and callee to ring; straight to the caller only when
/// the request came straight from it (the contact cache, the plain Chord baseline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ringing {
    /// The caller's handle.
    pub call: u64,
    /// The caller: where a copy on its way back goes in the end.
    pub caller: NodeId,
    /// The callee (cached by the caller for next time).
    pub callee: Contact,
    /// SHA-256 of the request as the callee received it
    /// ([`crate::secure::invite_digest`]): a request altered on the way shows.
    pub digest: [u8; 32],
    /// The route the request took.
    pub route: Vec<NodeId>,
    /// The callee's signature over [`crate::secure::ringing_bytes`]: a copy that did not
    /// come from the callee itself is taken only with it.
    pub sig: Vec<u8>,
}

/// What a CSP signs when it multicasts a PingRequest: one body per copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingBody {
    /// The peer being probed (the callee).
    pub target: NodeId,
    /// The CSP holding the original request.
    pub csp: Contact,
    /// The CSP's handle for the held request.
    pub handle: u64,
    /// Random per request; with `copy` it identifies this copy (replays are refused).
    pub nonce: u64,
    /// Unix milliseconds when the CSP sent it (late copies are refused).
    pub timestamp_ms: u64,
    /// Which copy of the multicast this is.
    pub copy: u8,
    /// How many copies the CSP sent.
    pub copies: u8,
    /// Peers this copy must not pass: the CSP's suspects from earlier copies of the same
    /// request that stalled with them (empty on the first round).
    pub avoid: Vec<NodeId>,
}

/// One hop's signed statement that it carried a PingRequest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRecord {
    /// The hop.
    pub hop: NodeId,
    /// Its signature over (body, previous signature, hop): the chain cannot be cut or reordered.
    pub sig: Vec<u8>,
}

/// A PingRequest copy on its way to the target, with the signed path so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingRequest {
    /// What the CSP signed.
    pub body: PingBody,
    /// The CSP's signature over `body`.
    pub csp_sig: Vec<u8>,
    /// Hops so far, first first.
    pub hops: Vec<HopRecord>,
}

/// A SIP request routed hop by hop over plain Chord (the baseline the paper improves on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainInvite {
    /// The caller's handle for this call.
    pub call: u64,
    /// The caller.
    pub caller: Contact,
    /// The callee's Node-ID.
    pub callee: NodeId,
    /// The request, visible to every hop.
    pub invite: Vec<u8>,
    /// Hops so far, caller first.
    pub path: Vec<NodeId>,
}

/// Every message peers exchange on the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Recursive lookup step.
    Route(Route),
    /// Acknowledges a [`Route`] hop, so the sender can detect a dead next hop.
    RouteAck {
        /// The hop token being acknowledged.
        token: u64,
    },
    /// Lookup answer.
    RouteReply(RouteReply),
    /// Stabilize: "tell me your predecessor and successor list".
    GetNeighbours {
        /// Request token.
        token: u64,
    },
    /// Answer to [`Message::GetNeighbours`].
    Neighbours {
        /// Request token.
        token: u64,
        /// The answering peer's predecessor.
        pred: Option<Contact>,
        /// The answering peer's successor list.
        succs: Vec<Contact>,
    },
    /// "I think I am your predecessor."
    Notify,
    /// Liveness probe (check_predecessor).
    Ping {
        /// Request token.
        token: u64,
    },
    /// Answer to [`Message::Ping`].
    Pong {
        /// Request token.
        token: u64,
    },
    /// Graceful leave: the sender is going; here are its neighbours.
    Leaving {
        /// The leaving peer's predecessor.
        pred: Option<Contact>,
        /// The leaving peer's successor list.
        succs: Vec<Contact>,
    },
    /// Records handed over because responsibility for their keys moved.
    Records {
        /// The records.
        records: Vec<Record>,
    },
    /// Call set-up request toward the CSP (or the callee, from the cache).
    Call(CallRequest),
    /// A PingRequest copy being routed to its target.
    PingRequest(PingRequest),
    /// A hop tells the CSP it forwarded a copy and to whom (drop and misroute evidence),
    /// once the next hop acknowledged it.
    HopReceipt {
        /// The CSP's handle.
        handle: u64,
        /// The request's nonce.
        nonce: u64,
        /// Which copy.
        copy: u8,
        /// The peer it was passed to.
        next: NodeId,
        /// `next`'s signed acknowledgement ([`Message::PingAck`]'s `sig`): proof that `next`
        /// holds the copy, so a hop that drops cannot pass the blame on.
        ack: Vec<u8>,
    },
    /// The target asks the CSP for the held request, naming the copies that reached it and
    /// the route the SOS ranked first.
    Fetch {
        /// The CSP's handle.
        handle: u64,
        /// The request's nonce.
        nonce: u64,
        /// Copies that arrived intact.
        arrived: Vec<u8>,
        /// The chosen route (hops then target).
        route: Vec<NodeId>,
    },
    /// The CSP hands the held request to the target.
    Deliver {
        /// The CSP's handle.
        handle: u64,
        /// The original request.
        request: CallRequest,
        /// The route the target chose.
        route: Vec<NodeId>,
    },
    /// The callee rings (see [`Ringing`]).
    Ringing(Ringing),
    /// Plain-Chord baseline: the request itself, routed hop by hop.
    PlainInvite(PlainInvite),
    /// One in-dialog message (a SIP response or in-dialog request) between the two ends of
    /// a call that rang, sent directly over their authenticated link.
    Dialog {
        /// The caller's Node-ID (with `call`, names the call at both ends).
        caller: NodeId,
        /// The caller's handle.
        call: u64,
        /// The message (opaque here; SIP bytes for the front-end).
        body: Vec<u8>,
    },
    /// Store a record at the peer responsible for `key` (and, from it, at its successors).
    Put {
        /// The storing peer's handle (answered by [`Message::PutReply`]).
        query: u64,
        /// The record's key.
        key: NodeId,
        /// The record (checked by the responsible peer's record validator).
        value: Vec<u8>,
        /// A copy from the responsible peer to a successor (not answered).
        replica: bool,
    },
    /// The answer to [`Message::Put`].
    PutReply {
        /// The storing peer's handle.
        query: u64,
        /// Why the record was refused, if it was.
        error: Option<String>,
    },
    /// Fetch the record stored under `key` from the peer responsible for it.
    Get {
        /// The asking peer's handle (answered by [`Message::GetReply`]).
        query: u64,
        /// The key.
        key: NodeId,
    },
    /// The answer to [`Message::Get`].
    GetReply {
        /// The asking peer's handle.
        query: u64,
        /// The record, if the peer holds one.
        value: Option<Vec<u8>>,
    },
    /// A hop acknowledges a PingRequest copy to the peer that passed it: "I hold copy `copy`
    /// of the CSP's request", signed ([`crate::secure::ack_bytes`]). The sender re-routes a
    /// copy nobody acknowledges and relays the signature to the CSP in its receipt.
    PingAck {
        /// The CSP of the request.
        csp: NodeId,
        /// The CSP's handle.
        handle: u64,
        /// The request's nonce.
        nonce: u64,
        /// Which copy.
        copy: u8,
        /// The acknowledging hop's signature.
        sig: Vec<u8>,
    },
    /// "A peer has joined between you and me": sent by a peer that just adopted a new
    /// predecessor to its old one, which asks for the neighbourhood at once instead of at
    /// its next (perhaps backed-off) stabilize. Carries nothing to trust: the old
    /// predecessor only stabilizes with its successor, as it would anyway.
    NeighbourChanged,
}

impl Message {
    /// The frame's kind byte for this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Route(_) => 1,
            Message::RouteAck { .. } => 2,
            Message::RouteReply(_) => 3,
            Message::GetNeighbours { .. } => 4,
            Message::Neighbours { .. } => 5,
            Message::Notify => 6,
            Message::Ping { .. } => 7,
            Message::Pong { .. } => 8,
            Message::Leaving { .. } => 9,
            Message::Records { .. } => 10,
            Message::Call(_) => 11,
            Message::PingRequest(_) => 12,
            Message::HopReceipt { .. } => 13,
            Message::Fetch { .. } => 14,
            Message::Deliver { .. } => 15,
            Message::Ringing(_) => 16,
            Message::PlainInvite(_) => 17,
            Message::Dialog { .. } => 18,
            Message::Put { .. } => 19,
            Message::PutReply { .. } => 20,
            Message::Get { .. } => 21,
            Message::GetReply { .. } => 22,
            Message::PingAck { .. } => 23,
            Message::NeighbourChanged => 24,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Route(_) => "route",
            Message::RouteAck { .. } => "route-ack",
            Message::RouteReply(_) => "route-reply",
            Message::GetNeighbours { .. } => "get-neighbours",
            Message::Neighbours { .. } => "neighbours",
            Message::Notify => "notify",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Leaving { .. } => "leaving",
            Message::Records { .. } => "records",
            Message::Call(_) => "call",
            Message::PingRequest(_) => "ping-request",
            Message::HopReceipt { .. } => "hop-receipt",
            Message::Fetch { .. } => "fetch",
            Message::Deliver { .. } => "deliver",
            Message::Ringing(_) => "ringing",
            Message::PlainInvite(_) => "plain-invite",
            Message::Dialog { .. } => "dialog",
            Message::Put { .. } => "put",
            Message::PutReply { .. } => "put-reply",
            Message::Get { .. } => "get",
            Message::GetReply { .. } => "get-reply",
            Message::PingAck { .. } => "ping-ack",
            Message::NeighbourChanged => "neighbour-changed",
        }
    }

    /// Ring upkeep: acknowledgements, liveness checks and neighbour exchanges. Small, and
    /// losing one makes a neighbour wrongly declare this peer failed, so a driver keeps
    /// room for them on a link that bulk traffic (routed lookups, calls) has filled.
    pub fn is_upkeep(&self) -> bool {
        matches!(
            self,
            Message::RouteAck { .. }
                | Message::GetNeighbours { .. }
                | Message::Neighbours { .. }
                | Message::Notify
                | Message::Ping { .. }
                | Message::Pong { .. }
                | Message::Leaving { .. }
                | Message::HopReceipt { .. }
                | Message::PingAck { .. }
                | Message::NeighbourChanged
        )
    }

    /// A request a peer sends to keep its own ring (its successors, predecessor and
    /// fingers): the link it goes over is one the sender keeps.
    pub fn is_upkeep_request(&self) -> bool {
        matches!(
            self,
            Message::GetNeighbours { .. } | Message::Notify | Message::Ping { .. }
        )
    }

    /// Is this call traffic (as opposed to ring maintenance and lookups)?
    pub fn is_call_traffic(&self) -> bool {
        (11..=18).contains(&self.kind()) || matches!(self, Message::PingAck { .. })
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not enough bytes yet; read at least this many more and try again.
    #[error("incomplete frame: need {0} more bytes")]
    Incomplete(usize),
    /// The peer speaks another wire version.
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    BadVersion(u8),
    /// The kind byte names no message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The frame is bigger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced or produced frame length.
        len: usize,
        /// The configured cap.
        max: usize,
    },
    /// The body does not decode as a message.
    #[error("malformed message body: {0}")]
    Body(#[from] postcard::Error),
    /// The body decoded to a different kind than the header announced.
    #[error("header says kind {header} but body is kind {body}")]
    KindMismatch {
        /// Kind byte in the header.
        header: u8,
        /// Kind of the decoded body.
        body: u8,
    },
    /// Bytes were left over inside the frame after the message.
    #[error("{0} trailing bytes after the message body")]
    Trailing(usize),
}

impl CodecError {
    /// True when the bytes were not wrong, only too few.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, CodecError::Incomplete(_))
    }
}

/// Append one frame carrying `msg` to `out`.
pub fn encode_frame(msg: &Message, max_frame: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let body = postcard::to_allocvec(msg)?;
    let len = HEADER_LEN + body.len();
    if len > max_frame {
        return Err(CodecError::TooLarge {
            len,
            max: max_frame,
        });
    }
    out.reserve(len);
    out.push(WIRE_VERSION);
    out.push(msg.kind());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Decode one frame from the front of `buf`; returns the message and bytes consumed.
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<(Message, usize), CodecError> {
    if buf.len() < HEADER_LEN {
        return Err(CodecError::Incomplete(HEADER_LEN - buf.len()));
    }
    let version = buf[0];
    if version != WIRE_VERSION {
        return Err(CodecError::BadVersion(version));
    }
    let kind = buf[1];
    if !(1..=MAX_KIND).contains(&kind) {
        return Err(CodecError::UnknownKind(kind));
    }
    let body_len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
    let len = HEADER_LEN.saturating_add(body_len);
    if len > max_frame {
        return Err(CodecError::TooLarge {
            len,
            max: max_frame,
        });
    }
    if buf.len() < len {
        return Err(CodecError::Incomplete(len - buf.len()));
    }
    let (msg, rest) = postcard::take_from_bytes::<Message>(&buf[HEADER_LEN..len])?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    if msg.kind() != kind {
        return Err(CodecError::KindMismatch {
            header: kind,
            body: msg.kind(),
        });
    }
    Ok((msg, len))
}

/// Encoded size of a message body (without the header), for byte accounting.
///
/// The routing and ring-maintenance kinds, which a simulation sizes millions of times, are
/// sized by arithmetic on postcard's encoding (varints, one-byte variant indices and option
/// tags); the rest, and contacts that carry a socket address, by a postcard dry run.
pub fn body_len(msg: &Message) -> usize {
    quick_body_len(msg).unwrap_or_else(|| postcard::experimental::serialized_size(msg).unwrap_or(0))
}

/// Bytes of postcard's varint encoding of `v` (7 bits a byte, at least one byte).
fn varint_len(v: u128) -> usize {
    ((128 - v.leading_zeros()).max(1) as usize).div_ceil(7)
}

/// Encoded size of a contact without a socket address (`None` when it has one).
fn id_contact_len(c: &Contact) -> Option<usize> {
    c.addr.is_none().then(|| varint_len(c.id.0) + 1)
}

fn ids_len(ids: &[NodeId]) -> usize {
    varint_len(ids.len() as u128) + ids.iter().map(|id| varint_len(id.0)).sum::<usize>()
}

/// [`body_len`] by arithmetic for the frequent kinds; `None` for the others.
fn quick_body_len(msg: &Message) -> Option<usize> {
    // Every variant index is below 128: one byte.
    let body = match msg {
        Message::Route(r) => {
            varint_len(r.lookup.into())
                + id_contact_len(&r.origin)?
                + varint_len(r.key.0)
                + varint_len(r.token.into())
                + 1
                + ids_len(&r.path)
        }
        Message::RouteReply(r) => {
            varint_len(r.lookup.into())
                + varint_len(r.key.0)
                + id_contact_len(&r.owner)?
                + ids_len(&r.path)
        }
        Message::RouteAck { token }
        | Message::GetNeighbours { token }
        | Message::Ping { token }
        | Message::Pong { token } => varint_len((*token).into()),
        Message::Notify => 0,
        Message::Neighbours { token, pred, succs } => {
            let pred = match pred {
                Some(p) => 1 + id_contact_len(p)?,
                None => 1,
            };
            let mut list = varint_len(succs.len() as u128);
            for s in succs {
                list += id_contact_len(s)?;
            }
            varint_len((*token).into()) + pred + list
        }
        _ => return None,
    };
    Some(1 + body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    /// Values of every width, so varints of every length are encoded (uniform values are
    /// almost always the longest).
    fn wide_u128() -> impl Strategy<Value = u128> + Clone {
        (any::<u128>(), 0u32..128).prop_map(|(v, s)| v >> s)
    }

    fn wide_u64() -> impl Strategy<Value = u64> + Clone {
        (any::<u64>(), 0u32..64).prop_map(|(v, s)| v >> s)
    }

    fn arb_contact() -> impl Strategy<Value = Contact> + Clone {
        (wide_u128(), any::<Option<(u32, u16)>>()).prop_map(|(id, a)| Contact {
            id: NodeId(id),
            addr: a.map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let ids = prop::collection::vec(wide_u128().prop_map(NodeId), 0..20);
        let contacts = prop::collection::vec(arb_contact(), 0..9);
        prop_oneof![
            (
                wide_u64(),
                arb_contact(),
                wide_u128(),
                wide_u64(),
                any::<bool>(),
                ids.clone()
            )
                .prop_map(|(lookup, origin, key, token, last_hop, path)| {
                    Message::Route(Route {
                        lookup,
                        origin,
                        key: NodeId(key),
                        token,
                        last_hop,
                        path,
                    })
                }),
            wide_u64().prop_map(|token| Message::RouteAck { token }),
            (wide_u64(), wide_u128(), arb_contact(), ids).prop_map(|(lookup, key, owner, path)| {
                Message::RouteReply(RouteReply {
                    lookup,
                    key: NodeId(key),
                    owner,
                    path,
                })
            }),
            wide_u64().prop_map(|token| Message::GetNeighbours { token }),
            (
                wide_u64(),
                prop::option::of(arb_contact()),
                contacts.clone()
            )
                .prop_map(|(token, pred, succs)| Message::Neighbours {
                    token,
                    pred,
                    succs
                }),
            Just(Message::Notify),
            Just(Message::NeighbourChanged),
            wide_u64().prop_map(|token| Message::Ping { token }),
            wide_u64().prop_map(|token| Message::Pong { token }),
            (prop::option::of(arb_contact()), contacts)
                .prop_map(|(pred, succs)| Message::Leaving { pred, succs }),
            prop::collection::vec(
                (wide_u128(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(k, value)| {
                    Record {
                        key: NodeId(k),
                        value,
                    }
                }),
                0..4
            )
            .prop_map(|records| Message::Records { records }),
            (
                wide_u64(),
                arb_contact(),
                wide_u128(),
                prop::collection::vec(any::<u8>(), 0..64),
                any::<bool>()
            )
                .prop_map(|(call, caller, callee, invite, direct)| Message::Call(
                    CallRequest {
                        call,
                        caller,
                        callee: NodeId(callee),
                        invite,
                        direct
                    }
                )),
            (
                any::<(u128, u64, u64, u64, u8, u8)>(),
                arb_contact(),
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(
                    (wide_u128(), prop::collection::vec(any::<u8>(), 0..64)),
                    0..6
                ),
                prop::collection::vec(wide_u128().prop_map(NodeId), 0..4)
            )
                .prop_map(
                    |((t, handle, nonce, ts, copy, copies), csp, csp_sig, hops, avoid)| {
                        Message::PingRequest(PingRequest {
                            body: PingBody {
                                target: NodeId(t),
                                csp,
                                handle,
                                nonce,
                                timestamp_ms: ts,
                                copy,
                                copies,
                                avoid,
                            },
                            csp_sig,
                            hops: hops
                                .into_iter()
                                .map(|(h, sig)| HopRecord {
                                    hop: NodeId(h),
                                    sig,
                                })
                                .collect(),
                        })
                    }
                ),
            (
                any::<(u64, u64, u8, u128)>(),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|((handle, nonce, copy, next), ack)| {
                    Message::HopReceipt {
                        handle,
                        nonce,
                        copy,
                        next: NodeId(next),
                        ack,
                    }
                }),
            (
                any::<(u128, u64, u64, u8)>(),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|((csp, handle, nonce, copy), sig)| Message::PingAck {
                    csp: NodeId(csp),
                    handle,
                    nonce,
                    copy,
                    sig,
                }),
            (
                wide_u64(),
                wide_u64(),
                prop::collection::vec(any::<u8>(), 0..8),
                prop::collection::vec(wide_u128().prop_map(NodeId), 0..8)
            )
                .prop_map(|(handle, nonce, arrived, route)| Message::Fetch {
                    handle,
                    nonce,
                    arrived,
                    route
                }),
            (
                (wide_u64(), wide_u128()),
                arb_contact(),
                any::<[u8; 32]>(),
                prop::collection::vec(wide_u128().prop_map(NodeId), 0..8),
                prop::collection::vec(any::<u8>(), 0..72)
            )
                .prop_map(|((call, caller), callee, digest, route, sig)| {
                    Message::Ringing(Ringing {
                        call,
                        caller: NodeId(caller),
                        callee,
                        digest,
                        route,
                        sig,
                    })
                }),
            (
                wide_u128(),
                wide_u64(),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(caller, call, body)| Message::Dialog {
                    caller: NodeId(caller),
                    call,
                    body
                }),
            (
                wide_u64(),
                wide_u128(),
                prop::collection::vec(any::<u8>(), 0..64),
                any::<bool>()
            )
                .prop_map(|(query, key, value, replica)| Message::Put {
                    query,
                    key: NodeId(key),
                    value,
                    replica
                }),
            (wide_u64(), prop::option::of("[a-z ]{0,20}"))
                .prop_map(|(query, error)| Message::PutReply { query, error }),
            (wide_u64(), wide_u128()).prop_map(|(query, key)| Message::Get {
                query,
                key: NodeId(key)
            }),
            (
                wide_u64(),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..64))
            )
                .prop_map(|(query, value)| Message::GetReply { query, value }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(msg in arb_message()) {
            let mut buf = Vec::new();
            encode_frame(&msg, DEFAULT_MAX_FRAME, &mut buf).unwrap();
            prop_assert_eq!(buf.len(), HEADER_LEN + body_len(&msg));
            let (back, used) = decode_frame(&buf, DEFAULT_MAX_FRAME).unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn prefixes_are_incomplete(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            encode_frame(&msg, DEFAULT_MAX_FRAME, &mut buf).unwrap();
            let cut = cut.index(buf.len());
            let err = decode_frame(&buf[..cut], DEFAULT_MAX_FRAME).unwrap_err();
            prop_assert!(err.is_incomplete(), "{err}");
        }

        #[test]
        fn decoding_anything_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            // As the fuzz target `overlay_frame`: whatever decodes re-encodes, never longer,
            // to the same message.
            if let Ok((msg, used)) = decode_frame(&bytes, DEFAULT_MAX_FRAME) {
                let mut again = Vec::new();
                encode_frame(&msg, DEFAULT_MAX_FRAME, &mut again).unwrap();
                prop_assert!(again.len() <= used);
                prop_assert_eq!(decode_frame(&again, DEFAULT_MAX_FRAME).unwrap().0, msg);
            }
        }

        #[test]
        fn decoding_valid_headers_with_junk_never_panics(
            kind in 0u8..=MAX_KIND + 2, body in prop::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut buf = vec![WIRE_VERSION, kind];
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&body);
            let _ = decode_frame(&buf, DEFAULT_MAX_FRAME);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_the_body() {
        let mut buf = vec![WIRE_VERSION, 1];
        buf.extend_from_slice(&(u32::MAX).to_be_bytes());
        match decode_frame(&buf, DEFAULT_MAX_FRAME) {
            Err(CodecError::TooLarge { .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let big = Message::Records {
            records: vec![Record {
                key: NodeId(1),
                value: vec![0; DEFAULT_MAX_FRAME],
            }],
        };
        assert!(matches!(
            encode_frame(&big, DEFAULT_MAX_FRAME, &mut Vec::new()),
            Err(CodecError::TooLarge { .. })
        ));
    }

    /// Fuzz regression (`overlay_frame`, crash-b2114f15): postcard accepts overlong varints, so
    /// one message has several encodings. Harmless — signatures cover re-encoded canonical
    /// bytes (`secure::body_bytes`), never the received ones — but a round trip is only
    /// guaranteed on the message, not on the bytes.
    #[test]
    fn overlong_varints_decode_to_the_canonical_message() {
        let mut crasher = [
            0u8, 1, 0, 0, 0, 10, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x11,
        ];
        crasher[0] = WIRE_VERSION;
        let (msg, used) = decode_frame(&crasher, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(used, 16);
        let mut again = Vec::new();
        encode_frame(&msg, DEFAULT_MAX_FRAME, &mut again).unwrap();
        assert!(again.len() < used, "canonical form is shorter");
        assert_eq!(decode_frame(&again, DEFAULT_MAX_FRAME).unwrap().0, msg);
    }

    #[test]
    fn garbage_gets_typed_errors() {
        assert!(matches!(
            decode_frame(&[9, 1, 0, 0, 0, 0], 100),
            Err(CodecError::BadVersion(9))
        ));
        assert!(matches!(
            decode_frame(&[WIRE_VERSION, 99, 0, 0, 0, 0], 100),
            Err(CodecError::UnknownKind(99))
        ));
        // Kind says Notify (6) but body is a Ping.
        let mut buf = Vec::new();
        encode_frame(&Message::Ping { token: 7 }, 100, &mut buf).unwrap();
        buf[1] = 6;
        assert!(matches!(
            decode_frame(&buf, 100),
            Err(CodecError::KindMismatch { .. })
        ));
    }
}
