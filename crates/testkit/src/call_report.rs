//! What a completed call's report shows of its SIP: one place for the exchange that the
//! in-process peers and the peer processes are both checked against.

/// The starts of the SIP lines of one completed call, in order, as a call report lists
/// them (`>` sent by the caller's peer, `<` received): INVITE, 180, 200, ACK, BYE, 200.
pub const COMPLETED_CALL_SIP: [&str; 6] = [
    "> INVITE sip:",
    "< SIP/2.0 180 Ringing",
    "< SIP/2.0 200 OK",
    "> ACK sip:",
    "> BYE sip:",
    "< SIP/2.0 200 OK",
];

/// Asserts that `sip`, the SIP lines of a call report, are those of one completed call
/// ([`COMPLETED_CALL_SIP`]), no more and no fewer.
pub fn assert_completed_call_sip(sip: &[String]) {
    assert_eq!(sip.len(), COMPLETED_CALL_SIP.len(), "{sip:?}");
    for (got, want) in sip.iter().zip(COMPLETED_CALL_SIP) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}: {sip:?}");
    }
}
