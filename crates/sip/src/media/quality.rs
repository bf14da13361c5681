//! What one direction of a relayed stream looked like: RTP packets seen, packets lost and
//! the interarrival jitter, as RFC 3550 defines them (sequence numbers extended over
//! wraps, §A.1; loss = expected − received, §6.4.1; jitter J += (|D| − J) / 16 on
//! the relative transit times, §A.8). The relay reads only the 12-byte RTP header, which
//! SRTP leaves in the clear, so it measures encrypted calls as well.
//!
//! Pure: the arrival time is the relay's `now`, so tests feed packets at virtual times.

use overlay::Time;

/// RTP clock rate of the static payload types of RFC 3551 (audio), by payload type.
fn static_clock(pt: u8) -> Option<u32> {
    match pt {
        // PCMU, GSM, G723, DVI4/8000, LPC, PCMA, G722 (its RTP clock is 8000), G728, G729.
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 15 | 18 => Some(8000),
        6 => Some(16000),
        10 | 11 => Some(44100),
        _ => None,
    }
}

/// The RTP header fields the statistics need, if `data` looks like RTP (version 2, not an
/// RTCP packet type multiplexed on the RTP port, RFC 5761).
fn rtp_header(data: &[u8]) -> Option<(u8, u16, u32)> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let pt = data[1] & 0x7f;
    if (72..=76).contains(&pt) {
        return None;
    }
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    Some((pt, seq, ts))
}

/// The statistics of one direction of one stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quality {
    /// RTP packets received.
    pub packets: u64,
    /// Their bytes (whole datagrams).
    pub bytes: u64,
    /// Highest extended sequence number seen, and the first.
    max_seq: Option<(u64, u64)>,
    /// Relative transit time of the previous packet, in RTP timestamp units.
    transit: Option<i64>,
    /// Interarrival jitter, in RTP timestamp units.
    jitter: f64,
    /// Clock rate of the packets' payload type, once known.
    clock: Option<u32>,
}

impl Quality {
    /// Account for a datagram arriving at `now`; clock rates of dynamic payload types come
    /// from `clock_rates` (the stream's `a=rtpmap`). Non-RTP datagrams are not counted.
    pub fn packet(&mut self, now: Time, data: &[u8], clock_rates: &[(u8, u32)]) {
        let Some((pt, seq, ts)) = rtp_header(data) else {
            return;
        };
        self.packets += 1;
        self.bytes += data.len() as u64;
        self.max_seq = Some(match self.max_seq {
            None => (u64::from(seq), u64::from(seq)),
            Some((max, first)) => {
                // The extension of `seq` nearest the highest seen (§A.1).
                let cycle = max & !0xffff;
                let candidates = [
                    cycle.wrapping_sub(0x1_0000) | u64::from(seq),
                    cycle | u64::from(seq),
                    (cycle + 0x1_0000) | u64::from(seq),
                ];
                let ext = candidates
                    .into_iter()
                    .filter(|c| *c < (1 << 48))
                    .min_by_key(|c| c.abs_diff(max))
                    .unwrap_or(max);
                (max.max(ext), first.min(ext))
            }
        });
        let rate = clock_rates
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, r)| *r)
            .or_else(|| static_clock(pt));
        if rate != self.clock {
            // A new clock (or the first): transit times are not comparable across it.
            self.clock = rate;
            self.transit = None;
        }
        let Some(rate) = rate.filter(|r| *r > 0) else {
            return;
        };
        let arrival = (u128::from(now.0) * u128::from(rate) / 1_000_000) as i64;
        let transit = arrival.wrapping_sub(i64::from(ts));
        if let Some(prev) = self.transit {
            let d = transit.wrapping_sub(prev).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen (highest − first + 1).
    pub fn expected(&self) -> u64 {
        self.max_seq.map_or(0, |(max, first)| max - first + 1)
    }

    /// Packets lost: expected − received, never below 0 (duplicates can make it so).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// Interarrival jitter in milliseconds (0 until the clock rate is known).
    pub fn jitter_ms(&self) -> f64 {
        match self.clock {
            Some(rate) if rate > 0 => self.jitter * 1000.0 / f64::from(rate),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rtp(pt: u8, seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0; 4 + 160]);
        p
    }

    fn at(ms: u64) -> Time {
        Time::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn a_steady_stream_has_no_loss_and_no_jitter() {
        let mut q = Quality::default();
        // PCMU every 20 ms, sequence wrapping past 65535.
        for i in 0..100u32 {
            let seq = 65500u16.wrapping_add(i as u16);
            q.packet(at(u64::from(i) * 20), &rtp(0, seq, i * 160), &[]);
        }
        assert_eq!((q.packets, q.expected(), q.lost()), (100, 100, 0));
        assert_eq!(q.jitter_ms(), 0.0);
        assert_eq!(q.bytes, 100 * 172);
    }

    #[test]
    fn gaps_count_as_loss_and_late_packets_as_jitter() {
        let mut q = Quality::default();
        // Dynamic payload type 96 at 8000 Hz from the SDP; every tenth packet lost, every
        // other packet 4 ms late.
        let rates = [(96, 8000)];
        for i in 0..200u32 {
            if i % 10 == 5 {
                continue;
            }
            let late = if i % 2 == 1 { 4 } else { 0 };
            q.packet(
                at(u64::from(i) * 20 + late),
                &rtp(96, i as u16, i * 160),
                &rates,
            );
        }
        assert_eq!((q.expected(), q.lost()), (200, 20));
        // |D| is 4 ms for nearly every pair: J converges on 4 ms.
        assert!((3.0..=4.5).contains(&q.jitter_ms()), "{}", q.jitter_ms());
    }

    #[test]
    fn what_is_not_rtp_is_not_counted() {
        let mut q = Quality::default();
        q.packet(at(0), b"short", &[]);
        // RTCP sender report multiplexed on the RTP port (PT 200 → 72 with the marker bit).
        let mut rtcp = rtp(0, 1, 1);
        rtcp[1] = 200;
        q.packet(at(0), &rtcp, &[]);
        // STUN (first two bits 0).
        let mut stun = rtp(0, 1, 1);
        stun[0] = 0;
        q.packet(at(0), &stun, &[]);
        assert_eq!(q.packets, 0);
        // An unknown dynamic type counts, without jitter.
        q.packet(at(0), &rtp(111, 1, 1), &[]);
        q.packet(at(30), &rtp(111, 2, 1), &[]);
        assert_eq!((q.packets, q.jitter_ms()), (2, 0.0));
    }
}
