//! Bytes per table entry, measured on the heap: the front-end's default caps are memory
//! budgets over [`TRANSACTION_BYTES`], [`TOMBSTONE_BYTES`] and [`CALL_BYTES`], so an entry
//! that grows past its constant fails here instead of quietly making the caps a lie.
//!
//! `cargo test -p sip --test table_memory -- --nocapture` prints the numbers.
#![allow(clippy::unwrap_used)]

use overlay::Time;
use sip::frontend::{CALL_BYTES, FrontEndTables};
use sip::msg::{self, SipMessage, SipMethod};
use sip::txn::{TOMBSTONE_BYTES, TRANSACTION_BYTES, Transactions, TxEvent};
use sip::{Peer, SipTransmit, Transport};
use sipx_sip::Timers;
use std::net::SocketAddr;
use testkit::sip::{FrontEnds, LoopbackFrontEnds};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Entries per measurement.
const N: u32 = 1000;

/// Heap bytes in use.
fn live() -> i64 {
    dhat::HeapStats::get().curr_bytes as i64
}

/// An SDP offer the size SIPp's stock UAC sends.
const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Request `n` from alice's UA at 127.0.0.1:5150, shaped like SIPp's.
fn request(method: &str, n: u32, to_tag: bool, body: bool) -> Vec<u8> {
    let to_tag = if to_tag { ";tag=b1" } else { "" };
    let body = if body { SDP } else { "" };
    let content = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sip:bob@p2psip.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5150;branch=z9hG4bK-{n}-1-0\r\n\
         From: sipp <sip:sipp@127.0.0.1:5150>;tag={n}SIPpTag001\r\n\
         To: <sip:bob@p2psip.test>{to_tag}\r\n\
         Call-ID: {n}-4711@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Contact: sip:sipp@127.0.0.1:5150\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         {content}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn alice() -> Peer {
    udp("127.0.0.1:5150".parse().unwrap())
}

/// A SIP endpoint over UDP at `addr`.
fn udp(addr: SocketAddr) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr,
    }
}

/// Feed request `n` to `tx` and answer it with `code`; returns the bytes sent.
fn answered(tx: &mut Transactions, method: &str, n: u32, code: u16) -> usize {
    let invite = method == "INVITE";
    let bytes = request(method, n, !invite, invite);
    let m = msg::parse_datagram(&bytes).unwrap();
    let now = Time::from_millis(1);
    tx.receive(now, alice(), m);
    let Some(TxEvent::Request { key, req, .. }) = tx.poll_event() else {
        panic!("no request");
    };
    tx.send_response(now, &key, req.response(code, "OK", Some("b1")).unwrap());
    std::iter::from_fn(|| tx.poll_transmit())
        .map(|t| t.bytes.len())
        .sum()
}

/// Average heap bytes `add` leaves behind per entry, over [`N`] entries.
fn per_entry(mut add: impl FnMut(u32)) -> i64 {
    let before = live();
    for n in 0..N {
        add(n);
    }
    (live() - before) / i64::from(N)
}

#[test]
fn table_entries_fit_their_byte_budgets() {
    let _profiler = dhat::Profiler::builder().testing().build();

    // A transaction in flight: an INVITE answered 100 Trying (its request and response).
    let mut tx = Transactions::new(Timers::default(), 10 * N as usize, 0);
    let transaction = per_entry(|n| {
        answered(&mut tx, "INVITE", n, 100);
    });
    assert_eq!(tx.len(), N as usize);
    drop(tx);

    // Tombstones over UDP: a BYE's (keeps its 200 to resend) and an accepted INVITE's.
    let mut tx = Transactions::new(Timers::default(), 10, 10 * N as usize);
    let mut response = 0;
    let bye = per_entry(|n| response = answered(&mut tx, "BYE", n, 200) as i64);
    let invite = per_entry(|n| {
        answered(&mut tx, "INVITE", N + n, 200);
    });
    assert_eq!((tx.len(), tx.tombstones()), (0, 2 * N as usize));
    drop(tx);

    // A call ringing through two front-ends: per front-end, its call entry, its INVITE
    // transaction and the overlay's share.
    let (mut fes, bob) = two_front_ends();
    let call = per_entry(|n| ringing_call(&mut fes, bob, n)) / 2;
    let t: Vec<FrontEndTables> = fes.nodes.iter().map(|n| n.fe.tables()).collect();
    assert!(t.iter().all(|t| t.calls == N as usize), "{t:?}");
    assert!(t.iter().all(|t| t.transactions == N as usize), "{t:?}");

    eprintln!(
        "bytes per entry: transaction {transaction} (budget {TRANSACTION_BYTES}), \
         BYE tombstone {bye} with its {response}-byte 200, INVITE tombstone {invite} \
         (budget {TOMBSTONE_BYTES} + the message), ringing call per front-end {call} \
         (budget {CALL_BYTES} + a transaction)"
    );
    assert!(transaction <= TRANSACTION_BYTES as i64);
    assert!(bye - response <= TOMBSTONE_BYTES as i64);
    assert!(invite <= TOMBSTONE_BYTES as i64);
    assert!(call <= (CALL_BYTES + TRANSACTION_BYTES) as i64);
}

/// Two front-ends with bob's UA registered at the second; returns bob's address.
fn two_front_ends() -> (LoopbackFrontEnds, SocketAddr) {
    let mut fes = LoopbackFrontEnds::new(2, "p2psip.test", |_| {});
    let bob: SocketAddr = "127.0.0.2:5170".parse().unwrap();
    let register = "REGISTER sip:p2psip.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5170;branch=z9hG4bK-reg\r\n\
         From: <sip:bob@p2psip.test>;tag=r\r\n\
         To: <sip:bob@p2psip.test>\r\n\
         Call-ID: reg@x\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:bob@127.0.0.2:5170>\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n";
    let from = udp(bob);
    let to = udp(fes.nodes[1].addr);
    fes.handle_datagram(from, to, register.as_bytes());
    pump(&mut fes);
    (fes, bob)
}

/// Run the overlay until it is quiet; return what the front-ends sent.
fn pump(fes: &mut LoopbackFrontEnds) -> Vec<SipTransmit> {
    let mut sent = Vec::new();
    loop {
        sent.extend(std::iter::from_fn(|| fes.poll_transmit()).map(|(_, t)| t));
        if !fes.step_overlay(fes.now()) {
            sent.extend(std::iter::from_fn(|| fes.poll_transmit()).map(|(_, t)| t));
            return sent;
        }
    }
}

/// Alice's INVITE `n` reaches bob's UA through both front-ends, and bob's UA rings.
fn ringing_call(fes: &mut LoopbackFrontEnds, bob: SocketAddr, n: u32) {
    let to = udp(fes.nodes[0].addr);
    fes.handle_datagram(alice(), to, &request("INVITE", n, false, true));
    let forwarded = pump(fes)
        .into_iter()
        .find_map(|t| match msg::parse_datagram(&t.bytes) {
            Ok(SipMessage::Request(r)) if *r.method() == SipMethod::Invite => Some(r),
            _ => None,
        })
        .unwrap();
    let ringing = forwarded.response(180, "Ringing", Some("b1")).unwrap();
    let from = udp(bob);
    let to = udp(fes.nodes[1].addr);
    fes.handle_datagram(from, to, &ringing.to_bytes());
    pump(fes);
}
