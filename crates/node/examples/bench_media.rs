//! Relayed G.711 streams through our media relay and through rtpengine's userspace relay,
//! side by side in the same run, on loopback (`scripts/bench-media` starts rtpengine and
//! runs this).
//!
//! Each stream is one call: a "phone" side and a "far" side, each sending 172-byte RTP
//! packets (12-byte header, 160 bytes of 20 ms G.711) 50 times a second through the relay
//! to the other side. The generator measures, per stream and direction, the loss (sent −
//! received), the interarrival jitter (RFC 3550 §A.8, with the sender's real send instant
//! as S so that the generator's own pacing slips are not charged to the relay) and the
//! one-way latency (send → receive on the same host and clock), p50/p99 over all packets.
//! A "direct" row sends the same traffic from side to side without a relay: the floor that
//! the generator and the kernel cost, so that the latency a relay adds is the difference.
//!
//! Our relay is [`node::MediaPlane`], the media shell `p2psip peer --media-*` runs (on its
//! own runtime, one worker per core), in a child process (`bench_media relay`); streams are set up through [`MediaAnchor::rewrite`], the call the SIP front-end makes
//! for each SDP body it forwards, and freed with [`MediaAnchor::end_call`]. rtpengine gets
//! `offer`/`answer`/`delete` over its ng control protocol ([`node::rtpengine::NgClient`]).
//! CPU is the relay process's utime+stime from /proc/PID/stat over the measured window.
//!
//! Usage: `bench_media run --rtpengine ADDR --rtpengine-pid PID [--steps 50,100]
//! [--seconds 10] [--warmup 1] [--clk-tck 100]` (`--rtpengine none`: ours only).

use node::MediaPlane;
use node::rtpengine::NgClient;
use sip::digest::{hex, unhex};
use sip::media::{MediaAnchor, Origin, RelayConfig};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Packet interval (20 ms ptime).
const PTIME: Duration = Duration::from_millis(20);
/// RTP timestamp units per packet (8 kHz).
const TS_STEP: u32 = 160;
/// Whole RTP datagram: 12-byte header and 160 bytes of G.711.
const PACKET: usize = 172;
/// Marks the generator's packets.
const MAGIC: &[u8; 4] = b"P2MB";
/// Latency histogram: 1 µs buckets up to this, then one overflow bucket.
const HIST_US: usize = 100_000;
/// Generator sockets per side (streams are spread over them).
const SOCKETS: usize = 4;
/// A row passes below this jitter (ms), at 0 % loss.
const MAX_JITTER_MS: f64 = 5.0;

/// Which way a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Phone side → relay → far side.
    PhoneToFar = 0,
    /// Far side → relay → phone side.
    FarToPhone = 1,
}

/// One generator packet: RTP header (SSRC = stream × 2 + direction), then the marker, the
/// measured flag and the send instant (ns since the generator's epoch).
fn packet(stream: u32, dir: Dir, seq: u32, measured: bool, sent_ns: u64) -> [u8; PACKET] {
    let mut p = [0u8; PACKET];
    p[0] = 0x80;
    p[1] = 0; // PCMU
    p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    p[4..8].copy_from_slice(&seq.wrapping_mul(TS_STEP).to_be_bytes());
    p[8..12].copy_from_slice(&(stream * 2 + dir as u32).to_be_bytes());
    p[12..16].copy_from_slice(MAGIC);
    p[16] = u8::from(measured);
    p[20..28].copy_from_slice(&sent_ns.to_be_bytes());
    p
}

/// What a received packet says: (stream, direction, measured, send instant in ns).
fn parse(p: &[u8]) -> Option<(u32, Dir, bool, u64)> {
    if p.len() != PACKET || &p[12..16] != MAGIC {
        return None;
    }
    let ssrc = u32::from_be_bytes(p[8..12].try_into().ok()?);
    let dir = if ssrc % 2 == 0 {
        Dir::PhoneToFar
    } else {
        Dir::FarToPhone
    };
    let sent = u64::from_be_bytes(p[20..28].try_into().ok()?);
    Some((ssrc / 2, dir, p[16] == 1, sent))
}

/// Loss, jitter and latency of the packets one receiver saw.
#[derive(Clone, Debug)]
struct Tally {
    /// Per stream and direction (index stream × 2 + dir): packets received.
    received: Vec<u64>,
    /// Per stream and direction: RFC 3550 jitter in ns, and the previous transit (ns).
    jitter: Vec<(f64, Option<i64>)>,
    /// Latency histogram (µs buckets, last one: overflow).
    hist: Vec<u64>,
    /// Packets not of this run (unknown stream, not ours).
    strays: u64,
}

impl Tally {
    fn new(streams: usize) -> Self {
        Tally {
            received: vec![0; streams * 2],
            jitter: vec![(0.0, None); streams * 2],
            hist: vec![0; HIST_US + 1],
            strays: 0,
        }
    }

    /// A measured packet of `stream` going `dir`, sent at `sent_ns`, arrived at
    /// `arrived_ns` (same clock).
    fn record(&mut self, stream: u32, dir: Dir, sent_ns: u64, arrived_ns: u64) {
        let i = stream as usize * 2 + dir as usize;
        if i >= self.received.len() {
            self.strays += 1;
            return;
        }
        self.received[i] += 1;
        let transit = arrived_ns as i64 - sent_ns as i64;
        let (j, prev) = &mut self.jitter[i];
        if let Some(p) = *prev {
            let d = (transit - p).unsigned_abs() as f64;
            *j += (d - *j) / 16.0;
        }
        *prev = Some(transit);
        let us = (transit.max(0) as u64 / 1000) as usize;
        self.hist[us.min(HIST_US)] += 1;
    }

    /// Add another receiver's tally (disjoint streams, or the same ones: counts add,
    /// jitter keeps the larger).
    fn merge(&mut self, o: &Tally) {
        for (a, b) in self.received.iter_mut().zip(&o.received) {
            *a += b;
        }
        for (a, b) in self.jitter.iter_mut().zip(&o.jitter) {
            if b.1.is_some() && (a.1.is_none() || b.0 > a.0) {
                *a = *b;
            }
        }
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
        self.strays += o.strays;
    }

    /// Packets received in all.
    fn total(&self) -> u64 {
        self.received.iter().sum()
    }

    /// Packets lost, when each stream and direction sent `sent` packets.
    fn lost(&self, sent: u64) -> u64 {
        self.received.iter().map(|r| sent.saturating_sub(*r)).sum()
    }

    /// Largest jitter of any stream and direction, in ms.
    fn max_jitter_ms(&self) -> f64 {
        self.jitter.iter().map(|j| j.0).fold(0.0, f64::max) / 1e6
    }

    /// Mean jitter over streams and directions, in ms.
    fn mean_jitter_ms(&self) -> f64 {
        let n = self.jitter.len().max(1) as f64;
        self.jitter.iter().map(|j| j.0).sum::<f64>() / n / 1e6
    }

    /// The latency below which a fraction `q` of the packets arrived, in µs (the overflow
    /// bucket reads as its lower bound).
    fn latency_us(&self, q: f64) -> u64 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                return us as u64;
            }
        }
        HIST_US as u64
    }
}

/// Where each stream sends, per direction: (phone side sends to, far side sends to).
type Targets = Vec<(SocketAddr, SocketAddr)>;

/// A call's offer and answer as a relay passes them on.
type Bodies = (String, String);

/// A relay under test: sets streams up and frees them.
trait Relay {
    fn name(&self) -> &str;
    /// The process whose CPU time counts, if any.
    fn pid(&self) -> Option<u32>;
    /// Anchor `call`: the phone's `offer` and the far end's `answer` as the relay passes
    /// them on (the offer towards the far end, the answer back towards the phone).
    fn anchor(&mut self, call: &str, offer: &str, answer: &str)
    -> Result<(String, String), String>;
    /// Free what `anchor` set up for `call`.
    fn end(&mut self, call: &str) -> Result<(), String>;

    /// Set up `n` streams between the generator's sockets `phone[i % SOCKETS]` and
    /// `far[i % SOCKETS]`.
    fn setup(
        &mut self,
        run: u32,
        n: usize,
        phone: &[SocketAddr],
        far: &[SocketAddr],
    ) -> Result<Targets, String> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (offer, answer) = self.anchor(
                &call_id(run, i),
                &sdp(phone[i % SOCKETS], i as u64),
                &sdp(far[i % SOCKETS], i as u64),
            )?;
            let far_sends_to = sdp_target(&offer).ok_or("no address in the offer")?;
            let phone_sends_to = sdp_target(&answer).ok_or("no address in the answer")?;
            out.push((phone_sends_to, far_sends_to));
        }
        Ok(out)
    }

    /// Free the `n` streams `setup` made for `run`.
    fn teardown(&mut self, run: u32, n: usize) -> Result<(), String> {
        (0..n).try_for_each(|i| self.end(&call_id(run, i)))
    }
}

/// The Call-ID of stream `i` in run `run`.
fn call_id(run: u32, i: usize) -> String {
    format!("r{run}c{i}")
}

/// An SDP offer or answer for G.711 at `addr`.
fn sdp(addr: SocketAddr, session: u64) -> String {
    format!(
        "v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The RTP address an SDP body names (session c= line, first m= line).
fn sdp_target(body: &str) -> Option<SocketAddr> {
    let mut ip: Option<IpAddr> = None;
    let mut port = None;
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = ip.or(c.trim().parse().ok());
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = port.or(m.split(' ').next().and_then(|p| p.parse().ok()));
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// No relay: each side sends straight to the other.
struct Direct;

impl Relay for Direct {
    fn name(&self) -> &str {
        "direct"
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn anchor(&mut self, _call: &str, offer: &str, answer: &str) -> Result<Bodies, String> {
        Ok((offer.to_owned(), answer.to_owned()))
    }
    fn end(&mut self, _call: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Our relay in a child process, driven over its stdin with the front-end's rewrite calls.
struct Ours {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Ours {
    fn spawn(ports: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["relay", "--ports", ports])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("our relay: {e}"))?;
        let to = child.stdin.take().ok_or("no stdin")?;
        let from = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Ours { child, to, from })
    }

    fn ask(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.to, "{line}").map_err(|e| e.to_string())?;
        let mut answer = String::new();
        self.from
            .read_line(&mut answer)
            .map_err(|e| e.to_string())?;
        match answer.trim_end().split_once(' ') {
            Some(("ok", rest)) => Ok(rest.to_owned()),
            _ if answer.trim_end() == "ok" => Ok(String::new()),
            _ => Err(format!("our relay: {}", answer.trim_end())),
        }
    }

    fn rewrite(&mut self, call: &str, origin: &str, body: &str) -> Result<String, String> {
        let body_hex = hex(body.as_bytes());
        let got = self.ask(&format!("rewrite {call} {origin} {body_hex}"))?;
        let bytes = unhex(&got).ok_or("bad hex from our relay")?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay for Ours {
    fn name(&self) -> &str {
        "ours"
    }
    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }
    fn anchor(&mut self, call: &str, offer: &str, answer: &str) -> Result<Bodies, String> {
        let offer = self.rewrite(call, "phone", offer)?;
        let answer = self.rewrite(call, "far", answer)?;
        Ok((offer, answer))
    }
    fn end(&mut self, call: &str) -> Result<(), String> {
        self.ask(&format!("end {call}")).map(drop)
    }
}

/// rtpengine, driven over its ng control protocol.
struct Rtpengine {
    ng: NgClient,
    pid: Option<u32>,
}

impl Rtpengine {
    fn new(addr: SocketAddr, pid: Option<u32>) -> Result<Self, String> {
        let mut ng = NgClient::new(addr).map_err(|e| e.to_string())?;
        ng.ping().map_err(|e| e.to_string())?;
        Ok(Rtpengine { ng, pid })
    }
}

impl Relay for Rtpengine {
    fn name(&self) -> &str {
        "rtpengine"
    }
    fn pid(&self) -> Option<u32> {
        self.pid
    }
    fn anchor(&mut self, call: &str, offer: &str, answer: &str) -> Result<Bodies, String> {
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        let offer = self
            .ng
            .offer(call, "a", offer.as_bytes())
            .map_err(|e| e.to_string())?;
        let answer = self
            .ng
            .answer(call, "a", "b", answer.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok((text(offer), text(answer)))
    }
    fn end(&mut self, call: &str) -> Result<(), String> {
        self.ng.delete(call).map_err(|e| e.to_string())
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// One measured row.
struct Row {
    relay: String,
    n: usize,
    sent: u64,
    received: u64,
    lost: u64,
    jitter_max_ms: f64,
    jitter_mean_ms: f64,
    p50_us: u64,
    p99_us: u64,
    pps: f64,
    cpu_s: Option<f64>,
}

impl Row {
    fn passes(&self) -> bool {
        self.lost == 0 && self.received > 0 && self.jitter_max_ms < MAX_JITTER_MS
    }
    /// CPU seconds per relayed packet.
    fn cpu_per_packet(&self) -> Option<f64> {
        self.cpu_s
            .filter(|_| self.received > 0)
            .map(|c| c / self.received as f64)
    }
}

fn generator_socket() -> Result<UdpSocket, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    s.set_recv_buffer_size(8 << 20).map_err(|e| e.to_string())?;
    s.set_send_buffer_size(4 << 20).map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    s.bind(&addr.into()).map_err(|e| e.to_string())?;
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Run `n` streams through `relay` for `warmup` + `seconds`, measuring the second part.
fn measure(
    relay: &mut dyn Relay,
    run: u32,
    n: usize,
    warmup: Duration,
    seconds: Duration,
    clk_tck: f64,
) -> Result<Row, String> {
    let phone: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| generator_socket())
        .collect::<Result<_, _>>()?;
    let far: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| generator_socket())
        .collect::<Result<_, _>>()?;
    let addr = |v: &[UdpSocket]| -> Result<Vec<SocketAddr>, String> {
        v.iter()
            .map(|s| s.local_addr().map_err(|e| e.to_string()))
            .collect()
    };
    let (pa, fa) = (addr(&phone)?, addr(&far)?);
    let targets = relay.setup(run, n, &pa, &fa)?;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for s in phone.iter().chain(&far) {
        let s = s.try_clone().map_err(|e| e.to_string())?;
        let stop = stop.clone();
        receivers.push(std::thread::spawn(move || {
            let mut t = Tally::new(n);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((len, _)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let at = epoch.elapsed().as_nanos() as u64;
                match parse(&buf[..len]) {
                    Some((stream, dir, true, sent)) => t.record(stream, dir, sent, at),
                    Some(_) => {}
                    None => t.strays += 1,
                }
            }
            t
        }));
    }
    let warm_rounds = (warmup.as_millis() / PTIME.as_millis()) as u32;
    let rounds = (seconds.as_millis() / PTIME.as_millis()) as u32;
    let slot = PTIME.as_nanos() as u64 / n as u64;
    let mut send_errors = 0u64;
    let mut cpu_start = None;
    let mut measured_start = epoch;
    // Event k: stream k % n, round k / n, due at round × ptime + stream × ptime / n.
    let total = u64::from(warm_rounds + rounds) * n as u64;
    for k in 0..total {
        let (round, stream) = ((k / n as u64) as u32, (k % n as u64) as usize);
        if round == warm_rounds && stream == 0 {
            cpu_start = relay.pid().and_then(cpu_ticks);
            measured_start = Instant::now();
        }
        let due =
            Duration::from_nanos(u64::from(round) * PTIME.as_nanos() as u64 + stream as u64 * slot);
        loop {
            let now = epoch.elapsed();
            if now >= due {
                break;
            }
            let wait = due - now;
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait - Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        }
        let measured = round >= warm_rounds;
        let (to_far, to_phone) = targets[stream];
        let s = stream % SOCKETS;
        for (socket, dir, to) in [
            (&phone[s], Dir::PhoneToFar, to_far),
            (&far[s], Dir::FarToPhone, to_phone),
        ] {
            let sent_ns = epoch.elapsed().as_nanos() as u64;
            let p = packet(stream as u32, dir, round, measured, sent_ns);
            if socket.send_to(&p, to).is_err() {
                send_errors += 1;
            }
        }
    }
    // Let the last packets arrive.
    std::thread::sleep(Duration::from_millis(300));
    let elapsed = measured_start.elapsed().as_secs_f64() - 0.3;
    let cpu_end = relay.pid().and_then(cpu_ticks);
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::new(n);
    for r in receivers {
        let t = r.join().map_err(|_| "a receiver panicked")?;
        tally.merge(&t);
    }
    relay.teardown(run, n)?;
    if send_errors > 0 {
        eprintln!("{}: {send_errors} sends failed", relay.name());
    }
    let sent_each = u64::from(rounds);
    let cpu_s = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clk_tck),
        _ => None,
    };
    let received = tally.total();
    Ok(Row {
        relay: relay.name().to_owned(),
        n,
        sent: sent_each * n as u64 * 2,
        received,
        lost: tally.lost(sent_each),
        jitter_max_ms: tally.max_jitter_ms(),
        jitter_mean_ms: tally.mean_jitter_ms(),
        p50_us: tally.latency_us(0.50),
        p99_us: tally.latency_us(0.99),
        pps: received as f64 / elapsed,
        cpu_s,
    })
}

fn print_header() {
    println!(
        "{:<9} {:>5} {:>9} {:>7} {:>8} {:>13} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}  ok",
        "relay",
        "N",
        "sent",
        "lost",
        "loss%",
        "jit mean/max",
        "p50 µs",
        "p99 µs",
        "pkt/s",
        "cpu s",
        "cpu µs/pkt",
        "pkt/s/core"
    );
}

fn print_row(r: &Row) {
    let cpp = r.cpu_per_packet();
    println!(
        "{:<9} {:>5} {:>9} {:>7} {:>8.3} {:>6.2}/{:<6.2} {:>9} {:>9} {:>9.0} {:>8} {:>11} {:>11}  {}",
        r.relay,
        r.n,
        r.sent,
        r.lost,
        100.0 * r.lost as f64 / r.sent.max(1) as f64,
        r.jitter_mean_ms,
        r.jitter_max_ms,
        r.p50_us,
        r.p99_us,
        r.pps,
        r.cpu_s.map(|c| format!("{c:.2}")).unwrap_or("-".into()),
        cpp.map(|c| format!("{:.2}", c * 1e6)).unwrap_or("-".into()),
        cpp.filter(|c| *c > 0.0)
            .map(|c| format!("{:.0}", 1.0 / c))
            .unwrap_or("-".into()),
        if r.passes() {
            "yes"
        } else if r.lost > 0 {
            "LOSS"
        } else {
            "JITTER"
        },
    );
}

/// The child: our media shell (serving its sockets on its own runtime), answering `rewrite CALL phone|far HEX` and `end CALL` lines on stdin.
fn relay_main(ports: &str) -> Result<(), String> {
    let (first, last) = ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or("--ports FIRST-LAST")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let mut cfg = RelayConfig::new(loopback, loopback);
    (cfg.bounds.first_port, cfg.bounds.last_port) = (first, last);
    cfg.bounds.max_streams = 4096;
    let mut plane = {
        let _g = rt.enter();
        MediaPlane::start(cfg, None, stop).map_err(|e| e.to_string())?
    };
    // The runtime serves the sockets on this thread; the control lines are read on another.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rt.block_on(async move {
        let mut out = std::io::stdout();
        while let Some(line) = rx.recv().await {
            let words: Vec<&str> = line.split(' ').collect();
            let answer = match words.as_slice() {
                ["rewrite", call, origin, body_hex] => {
                    let origin = if *origin == "phone" {
                        Origin::Phone
                    } else {
                        Origin::FarEnd
                    };
                    match unhex(body_hex) {
                        Some(body) => {
                            match plane.rewrite(overlay::Time::ZERO, call, origin, &body) {
                                Ok(b) => format!("ok {}", hex(&b)),
                                Err(e) => format!("err {e}"),
                            }
                        }
                        None => "err bad hex".into(),
                    }
                }
                ["end", call] => {
                    plane.end_call(call);
                    "ok".into()
                }
                _ => "err unknown command".into(),
            };
            if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    Ok(())
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn run_main(args: &[String]) -> Result<bool, String> {
    let steps: Vec<usize> = arg(args, "--steps")
        .unwrap_or("50,100,200,400,800,1600")
        .split(',')
        .map(|s| s.parse().map_err(|_| format!("bad step {s}")))
        .collect::<Result<_, _>>()?;
    let secs = |name, default: f64| -> Result<Duration, String> {
        let v = arg(args, name).map_or(Ok(default), |s| s.parse().map_err(|_| name))?;
        Ok(Duration::from_secs_f64(v))
    };
    let (seconds, warmup) = (secs("--seconds", 10.0)?, secs("--warmup", 1.0)?);
    let clk_tck: f64 = arg(args, "--clk-tck")
        .unwrap_or("100")
        .parse()
        .map_err(|_| "--clk-tck")?;
    let mut relays: Vec<Box<dyn Relay>> = vec![
        Box::new(Direct),
        Box::new(Ours::spawn(arg(args, "--ports").unwrap_or("20000-29999"))?),
    ];
    match arg(args, "--rtpengine") {
        None | Some("none") => eprintln!("rtpengine: not measured (--rtpengine none)"),
        Some(a) => {
            let addr = a.parse().map_err(|_| "--rtpengine ADDR")?;
            let pid = arg(args, "--rtpengine-pid").and_then(|p| p.parse().ok());
            relays.push(Box::new(Rtpengine::new(addr, pid)?));
        }
    }
    println!(
        "G.711 streams, 20 ms, {PACKET}-byte RTP, 50 packets/s each way per stream; \
         {:.0} s measured after {:.0} s warm-up; pass: 0 % loss, jitter < {MAX_JITTER_MS} ms \
         (max over streams)",
        seconds.as_secs_f64(),
        warmup.as_secs_f64()
    );
    print_header();
    let mut rows: Vec<Row> = Vec::new();
    let mut run = 0;
    for &n in &steps {
        for r in relays.iter_mut() {
            run += 1;
            let row = measure(r.as_mut(), run, n, warmup, seconds, clk_tck)?;
            print_row(&row);
            rows.push(row);
        }
    }
    println!();
    let mut ok = true;
    let best = |name: &str| {
        rows.iter()
            .filter(|r| r.relay == name && r.passes())
            .max_by_key(|r| r.n)
    };
    for r in relays.iter().skip(1) {
        match best(r.name()) {
            Some(b) => {
                // A reported N must not have lost a packet.
                if b.lost > 0 {
                    println!(
                        "FAIL: {} lost {} packets at its reported N",
                        b.relay, b.lost
                    );
                    ok = false;
                }
                println!(
                    "{:<9} highest N at 0 % loss and jitter < {MAX_JITTER_MS} ms: {} \
                     ({:.0} packets/s relayed, p99 latency {} µs)",
                    b.relay, b.n, b.pps, b.p99_us
                );
            }
            None => {
                println!("FAIL: {} passed at no N", r.name());
                ok = false;
            }
        }
    }
    let per_core = |r: &Row| r.cpu_per_packet().filter(|c| *c > 0.0).map(|c| 1.0 / c);
    for &n in &steps {
        let get = |name: &str| rows.iter().find(|r| r.relay == name && r.n == n);
        let (Some(o), Some(e)) = (get("ours"), get("rtpengine")) else {
            continue;
        };
        let d = get("direct").map_or(0, |d| d.p99_us);
        if let (Some(a), Some(b)) = (per_core(o), per_core(e)) {
            println!(
                "N={n:<5} packets/s per core ours/rtpengine = {:.2} ({a:.0} / {b:.0}); \
                 p99 latency over direct: ours {} µs, rtpengine {} µs",
                a / b,
                o.p99_us.saturating_sub(d),
                e.p99_us.saturating_sub(d)
            );
        }
    }
    Ok(ok)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("relay") => relay_main(arg(&args, "--ports").unwrap_or("20000-29999")).map(|_| true),
        Some("run") => run_main(&args),
        _ => Err(
            "usage: bench_media run [--steps 50,100] [--seconds 10] [--warmup 1] \
                  [--rtpengine ADDR|none] [--rtpengine-pid PID] [--clk-tck 100] \
                  | bench_media relay --ports FIRST-LAST"
                .into(),
        ),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench_media: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Loss is what each stream and direction sent minus what arrived; jitter follows RFC
    /// 3550 (J += (|D| − J) / 16) on the transit times; latency percentiles come from the
    /// histogram.
    #[test]
    fn loss_jitter_and_latency_arithmetic() {
        let mut t = Tally::new(2);
        // Stream 0 phone→far: 4 packets 20 ms apart, transit 100, 300, 100, 100 µs.
        let ms = 1_000_000;
        for (i, transit) in [100_000u64, 300_000, 100_000, 100_000].iter().enumerate() {
            let sent = i as u64 * 20 * ms;
            t.record(0, Dir::PhoneToFar, sent, sent + transit);
        }
        // Stream 1 far→phone: 3 packets, constant transit 50 µs.
        for i in 0..3u64 {
            t.record(1, Dir::FarToPhone, i * 20 * ms, i * 20 * ms + 50_000);
        }
        assert_eq!(t.total(), 7);
        // Each of the 4 stream-directions sent 4: 0 + 4 + 4 + 1 lost.
        assert_eq!(t.lost(4), 9);
        // J: 0 → 200000/16 = 12500 → 12500 + (200000 − 12500)/16 = 24218.75
        //   → 24218.75 + (0 − 24218.75)/16 = 22705.078125 ns.
        let j = t.jitter[0].0;
        assert!((j - 22_705.078_125).abs() < 1e-6, "{j}");
        assert!((t.max_jitter_ms() - 0.022_705_078_125).abs() < 1e-9);
        assert_eq!(t.jitter[3].0, 0.0);
        // Latencies µs: 50, 50, 50, 100, 100, 100, 300.
        assert_eq!(t.latency_us(0.5), 100);
        assert_eq!(t.latency_us(0.4), 50);
        assert_eq!(t.latency_us(0.99), 300);
        // Merging another receiver's tally adds counts.
        let mut u = Tally::new(2);
        u.record(0, Dir::FarToPhone, 0, 10_000);
        t.merge(&u);
        assert_eq!((t.total(), t.lost(4)), (8, 8));
        // A stream beyond the run's is a stray, not a count.
        t.record(7, Dir::PhoneToFar, 0, 1);
        assert_eq!((t.total(), t.strays), (8, 1));
    }

    /// The packet format round-trips and marks warm-up packets unmeasured.
    #[test]
    fn packets_round_trip() {
        let p = packet(1234, Dir::FarToPhone, 70_000, true, 987_654_321);
        assert_eq!(p.len(), 172);
        assert_eq!(p[0] >> 6, 2);
        assert_eq!(
            u16::from_be_bytes([p[2], p[3]]),
            (70_000u32 % 65_536) as u16
        );
        assert_eq!(parse(&p), Some((1234, Dir::FarToPhone, true, 987_654_321)));
        let w = packet(3, Dir::PhoneToFar, 0, false, 5);
        assert_eq!(parse(&w), Some((3, Dir::PhoneToFar, false, 5)));
        assert_eq!(parse(&p[..100]), None);
    }

    /// The SDP address read back.
    #[test]
    fn sdp_address() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(sdp_target(&sdp(a, 1)), Some(a));
    }
}
