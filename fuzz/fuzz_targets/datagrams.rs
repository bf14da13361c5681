//! The input format the datagram-driven targets share: a sequence of
//! `[who u8][len u16 BE][bytes]` records (a short last record takes what is left).

/// Each `(who, datagram)` in `data`, in order.
pub fn datagrams(mut rest: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < 3 {
            return None;
        }
        let who = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let dgram = &rest[3..3 + len];
        rest = &rest[3 + len..];
        Some((who, dgram))
    })
}
