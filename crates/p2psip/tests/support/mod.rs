//! Helpers shared by the tests that run the `p2psip` binary as real processes: run a
//! subcommand and check it succeeded, spawn a long-running one and read its first lines,
//! start an E&A and enroll through it, and start peers and wait for their ring.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2psip");

/// A child process killed on drop (unless it already exited).
pub struct Proc {
    pub child: Child,
    pub first_lines: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `cmd` with stdout piped and read its first `lines` lines; the rest is drained by a
/// thread for as long as the process lives (a pipe the test stopped reading must not be
/// what ends a server). `None` when stdout ends first (e.g. the port was not free yet).
pub fn try_spawn_cmd(cmd: &mut Command, lines: usize) -> Option<Proc> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first_lines = Vec::with_capacity(lines);
    for _ in 0..lines {
        match out.next() {
            Some(Ok(l)) => first_lines.push(l),
            _ => {
                let _ = child.wait();
                return None;
            }
        }
    }
    std::thread::spawn(move || {
        for l in out.map_while(Result::ok) {
            eprintln!("[child] {l}");
        }
    });
    Some(Proc { child, first_lines })
}

/// [`try_spawn_cmd`] for a process that must print its first `lines` lines.
pub fn spawn_cmd(cmd: &mut Command, lines: usize) -> Proc {
    try_spawn_cmd(cmd, lines)
        .unwrap_or_else(|| panic!("{cmd:?} ended before printing {lines} line(s)"))
}

/// Spawn a subcommand and read the first `lines` lines of its stdout.
pub fn spawn(args: &[&str], lines: usize) -> Proc {
    spawn_cmd(Command::new(BIN).args(args).stderr(Stdio::inherit()), lines)
}

/// The URL a server printed as its first line after `prefix` (`listening on `, `sos
/// listening on `).
pub fn url_after(proc: &Proc, prefix: &str) -> String {
    let first = &proc.first_lines[0];
    first
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string()
}

/// Crash a server mid-stream: once the streaming clients' `acked` count reaches `at_least`
/// (or `within` has passed), SIGKILL `server`, tell the clients' `tasks` to `stop`, and
/// wait for them.
pub async fn kill_mid_stream(
    server: &mut Proc,
    (acked, at_least): (&AtomicU64, u64),
    within: Duration,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    let deadline = Instant::now() + within;
    while acked.load(Ordering::SeqCst) < at_least && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().expect("SIGKILL the server");
    let _ = server.child.wait();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
}

/// Run a subcommand to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The stdout of a run that must have succeeded.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The JSON a subcommand that must succeed printed.
pub fn ok_json(args: &[&str]) -> Value {
    serde_json::from_str(ok(run(args)).trim()).unwrap()
}

/// The Node-ID in a JSON contact (`{"id": "…"}`).
pub fn id_of(v: &Value) -> Option<u128> {
    v.get("id")?.as_str()?.parse().ok()
}

/// The true owner of `key` among `ids`: the first ID at or after it, clockwise.
pub fn owner_of(ids: &[u128], key: u128) -> u128 {
    let mut s: Vec<overlay::NodeId> = ids.iter().map(|i| overlay::NodeId(*i)).collect();
    s.sort();
    match overlay::NodeId(key).owner_in(&s) {
        Some(o) => o.0,
        None => panic!("no owner of {key} on an empty ring"),
    }
}

/// `p2psip enroll-server` on a free port with Node-IDs of `id_bits` bits and its data in
/// `data`; the caller adds its own flags (and where stderr goes) before [`start_ea`].
pub fn ea_command(data: &Path, id_bits: u32) -> Command {
    let mut c = Command::new(BIN);
    c.args(["enroll-server", "--listen", "127.0.0.1:0", "--id-bits"])
        .arg(id_bits.to_string())
        .arg("--data")
        .arg(data);
    c
}

/// The CA fingerprint each E&A started by [`start_ea`] printed, by its base URL: what
/// [`enroll`] pins on first contact, as an operator copies it from the token output.
static FINGERPRINTS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Start an E&A from [`ea_command`]: it prints where it listens (HTTPS) and its CA's
/// fingerprint. Returns the process and its base URL.
pub fn start_ea(cmd: &mut Command) -> (Proc, String) {
    let ea = spawn_cmd(cmd, 2);
    let url = url_after(&ea, "listening on ");
    assert!(url.starts_with("https://"), "{url}");
    let fp = ea.first_lines[1]
        .strip_prefix("ca-fingerprint ")
        .unwrap_or_else(|| panic!("{:?}", ea.first_lines))
        .to_string();
    FINGERPRINTS.lock().unwrap().push((url.clone(), fp));
    (ea, url)
}

/// The CA fingerprint the E&A at `url` printed at its start.
pub fn fingerprint_of(url: &str) -> Option<String> {
    let all = FINGERPRINTS.lock().unwrap();
    all.iter()
        .rev()
        .find(|(u, _)| u == url)
        .map(|(_, f)| f.clone())
}

/// An HTTPS certificate for an SOS on loopback, issued by the E&A CA in `ea_data` (created
/// if missing) with `enroll-server sos-cert`; returns the directory for `sos --tls`.
pub fn sos_tls(ea_data: &Path, out: &Path) -> PathBuf {
    ok(run(&[
        "enroll-server",
        "sos-cert",
        "--data",
        ea_data.to_str().unwrap(),
        "--name",
        "127.0.0.1",
        "--name",
        "localhost",
        "--out",
        out.to_str().unwrap(),
    ]));
    out.to_path_buf()
}

/// Start `p2psip sos` on `listen` over HTTPS with the certificate directory `tls` and the
/// database `db`, with more flags in `extra`; returns it and the URL it printed.
pub fn start_sos(listen: &str, tls: &Path, db: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "sos",
        "--listen",
        listen,
        "--tls",
        tls.to_str().unwrap(),
        "--db",
        db,
    ];
    args.extend_from_slice(extra);
    let sos = spawn(&args, 1);
    let url = url_after(&sos, "sos listening on ");
    (sos, url)
}

/// `sos` flags for a test that streams reports as fast as it can: no ageing, no rate limit.
pub const SOS_UNTHROTTLED: [&str; 6] = [
    "--half-life-secs",
    "0",
    "--report-rate",
    "1000000",
    "--report-burst",
    "1000000",
];

/// What clients of an SOS with `sos --tls DIR` trust: the CA in that directory.
pub fn sos_trust(tls: &Path) -> service::tls::Trust {
    service::tls::Trust::ca_file(&tls.join("ca.pem")).unwrap()
}

/// A fresh enrollment token from the E&A's data directory, with `flags` (`--role`,
/// `--layer`, `--uses`).
pub fn create_token(data: &Path, flags: &[&str]) -> String {
    let mut args = vec![
        "enroll-server",
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    ok(run(&args)).trim().to_string()
}

/// `p2psip enroll` with `token` at the E&A on `url`, writing the node directory `out`; what
/// it printed.
/// The E&A's CA is pinned by the fingerprint it printed at start ([`start_ea`]).
/// An E&A on plain `http://` (`--insecure-http`) has no CA to pin.
pub fn enroll(url: &str, token: &str, out: &Path, flags: &[&str]) -> String {
    let fp = match fingerprint_of(url) {
        Some(fp) => Some(fp),
        None if url.starts_with("http://") => None,
        None => panic!("no E&A started at {url}"),
    };
    let mut args = vec![
        "enroll",
        "--server",
        url,
        "--token",
        token,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(fp) = &fp {
        args.extend_from_slice(&["--ca-fingerprint", fp]);
    }
    args.extend_from_slice(flags);
    ok(run(&args))
}

/// Enroll a node directory under `root` for each of `names`, each listening on a free
/// loopback port: the first with `csp_token` (the CSP, enrolled first so that everyone
/// else gets it as bootstrap and the directory has its address), the rest with
/// `peer_token`. The directories, in the order of `names`.
pub fn enroll_csp_and_peers(
    url: &str,
    root: &Path,
    names: &[&str],
    csp_token: &str,
    peer_token: &str,
) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    for (i, d) in dirs.iter().enumerate() {
        let listen = testkit::ports::free_addr().to_string();
        let token = if i == 0 { csp_token } else { peer_token };
        enroll(url, token, d, &["--listen", &listen]);
    }
    dirs
}

/// Overlay timers fast enough for peers on loopback: stabilize and fix fingers every 100 ms,
/// check the predecessor every 200 ms and the ring every second.
pub const FAST_TIMERS: &[&str] = &[
    "--stabilize-ms",
    "100",
    "--fix-fingers-ms",
    "100",
    "--check-pred-ms",
    "200",
    "--ring-check-ms",
    "1000",
];

/// A running `p2psip peer` process.
pub struct PeerProc {
    pub proc: Proc,
    pub id: u128,
    /// The overlay address it listens on.
    pub addr: String,
    pub dir: PathBuf,
    /// The SIP front-end's address, when started with `--sip-listen`.
    pub sip: Option<std::net::SocketAddr>,
}

impl PeerProc {
    /// `ID@address`, as `--bootstrap` takes it.
    pub fn bootstrap(&self) -> String {
        format!("{}@{}", self.id, self.addr)
    }

    /// SIGTERM (a graceful leave) and wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.proc.child.id().to_string();
        ok(Command::new("kill").args(["-TERM", &pid]).output().unwrap());
        self.proc.child.wait().unwrap()
    }
}

/// `p2psip peer --dir DIR ARGS…`; reads its first `lines` lines, the first of which says
/// where it listens (`listening ID ADDRESS`).
pub fn start_peer(dir: &Path, args: &[&str], lines: usize) -> PeerProc {
    let mut all = vec!["peer", "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let proc = spawn(&all, lines);
    let parts: Vec<&str> = proc.first_lines[0].split(' ').collect();
    assert_eq!(parts[0], "listening", "{:?}", proc.first_lines);
    PeerProc {
        id: parts[1].parse().unwrap(),
        addr: parts[2].to_string(),
        sip: None,
        proc,
        dir: dir.to_path_buf(),
    }
}

/// `p2psip status` of the peer in `dir`, if it answers.
pub fn status(dir: &Path) -> Option<Value> {
    let out = run(&["status", "--dir", dir.to_str().unwrap()]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Does every peer have its true successor and predecessor among `peers`?
pub fn converged(peers: &[&PeerProc]) -> bool {
    let mut ids: Vec<u128> = peers.iter().map(|p| p.id).collect();
    ids.sort();
    peers.iter().all(|p| {
        let Some(st) = status(&p.dir) else {
            return false;
        };
        let i = ids.iter().position(|&x| x == p.id).unwrap();
        let succ = ids[(i + 1) % ids.len()];
        let pred = ids[(i + ids.len() - 1) % ids.len()];
        st["successors"].get(0).and_then(id_of) == Some(succ)
            && st["predecessor"].as_object().is_some()
            && id_of(&st["predecessor"]) == Some(pred)
    })
}

/// Wait until `peers` form their ring, at most `within`; how long it took.
pub fn wait_converged(peers: &[&PeerProc], within: Duration) -> Duration {
    let t0 = Instant::now();
    while !converged(peers) {
        assert!(t0.elapsed() < within, "no convergence in {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// `GET path` from the server at `base` (`https://ADDR` of E&A and SOS, verified against
/// the CA in `ca`; `http://ADDR` of the loopback metrics and control endpoints): status
/// and body.
pub fn http_get(base: &str, path: &str, ca: &Path) -> (u16, String) {
    let trust = service::tls::Trust::ca_file(ca).unwrap();
    let http = service::http::client_trusting(Duration::from_secs(10), &trust).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.text().await.unwrap())
    })
}

/// The peers the SOS crash and fail-over tests report about.
pub const SUBJECTS: [u128; 4] = [1593, 1600, 1609, 1618];

/// One report of a stream, and what the test checks it by.
pub struct Numbered {
    /// The signed report.
    pub report: sos::SignedReport,
    /// Its nonce: `n` big-endian.
    pub nonce: [u8; 16],
    /// Whom it is about (one of [`SUBJECTS`], also the route).
    pub subject: u128,
    /// Delivered (else dropped): two reports in three.
    pub positive: bool,
}

/// Report number `n` of the stream of reporter `worker` (signing with `signer`): what the
/// SOS crash and fail-over tests stream. Consecutive reports cycle through the subjects,
/// each worker from its own start, and every third one is negative.
pub fn numbered_report(signer: &sos::ReportSigner, worker: usize, n: u64, now_ms: u64) -> Numbered {
    let subject = SUBJECTS[(n as usize + worker) % SUBJECTS.len()];
    let positive = !n.is_multiple_of(3);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&n.to_be_bytes());
    let outcome = if positive {
        sos::Outcome::Delivered
    } else {
        sos::Outcome::Dropped
    };
    let body = sos::ReportBody {
        reporter: signer.peer(),
        subject: sos::PeerId(subject),
        outcome,
        route: vec![sos::PeerId(subject)],
        timestamp_ms: now_ms,
        nonce,
    };
    Numbered {
        report: signer.sign(body).unwrap(),
        nonce,
        subject,
        positive,
    }
}
