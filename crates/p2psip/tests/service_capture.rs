//! Nothing secret crosses the wire in cleartext to or from the E&A and the SOS: tshark
//! captures loopback while real processes enroll (tokens, CSRs), start an overlay with the SOS
//! following the E&A's directory, and place a call the SOS ranks and the callee reports on.
//! In the capture, no enrollment token appears anywhere, every TCP payload on the E&A's and
//! the SOS's ports is a TLS record, and none of them shows an API path, a ranking or a
//! report field. The check is shown able to see cleartext: the peer's local control endpoint
//! (plain HTTP on loopback, by design) is read through the same capture, and its answer is
//! found; and a control run with both servers on `--insecure-http` finds the tokens, the API
//! paths, the ranking and the reports with the same check. `scripts/capture-check` does the
//! same for the overlay's own links.
//!
//! Needs tshark and dumpcap (Debian package tshark) and permission to capture on `lo`;
//! without them it skips loudly (fails under `CI=true`).
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{
    FAST_TIMERS, create_token, ea_command, ok, run, sos_tls, start_ea, start_peer, status,
    url_after,
};

/// A tshark capture of TCP on `lo` into a file, stopped (SIGINT) on drop.
struct Capture {
    child: Child,
}

impl Capture {
    /// Start capturing into `file`; `None` (after a loud skip) when tshark cannot capture.
    fn start(file: &Path, dir: &Path) -> Option<Capture> {
        for tool in ["tshark", "dumpcap"] {
            if !testkit::have_tool(tool, "tshark") {
                return None;
            }
        }
        let probe = Command::new("dumpcap")
            .args(["-i", "lo", "-a", "duration:1", "-q", "-w"])
            .arg(dir.join("probe.pcapng"))
            .output()
            .unwrap();
        if !probe.status.success() {
            testkit::tool_missing("permission to capture on lo (dumpcap)", "tshark");
            return None;
        }
        let log = dir.join("tshark.err");
        let child = Command::new("tshark")
            .args(["-i", "lo", "-f", "tcp", "-B", "64", "-q", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Capturing on")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "tshark did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        Some(Capture { child })
    }

    /// Stop and wait until the file is complete.
    fn stop(mut self) {
        std::thread::sleep(Duration::from_millis(500));
        let pid = self.child.id().to_string();
        ok(Command::new("kill").args(["-INT", &pid]).output().unwrap());
        self.child.wait().unwrap();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tshark -r file ARGS…`, its stdout.
fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The TCP payload bytes of every packet to or from `port`, concatenated (a line each).
fn payloads(file: &Path, port: u16) -> Vec<u8> {
    let hex = tshark(
        file,
        &[
            "-Y",
            &format!("tcp.port == {port} && tcp.len > 0"),
            "-T",
            "fields",
            "-e",
            "tcp.payload",
        ],
    );
    let mut out = Vec::new();
    for line in hex.lines() {
        let clean: String = line.chars().filter(char::is_ascii_hexdigit).collect();
        for i in (0..clean.len() / 2).map(|i| 2 * i) {
            out.push(u8::from_str_radix(&clean[i..i + 2], 16).unwrap());
        }
        out.push(b'\n');
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// What one run of the services put on the wire.
struct Run {
    /// The capture file.
    file: std::path::PathBuf,
    /// The enrollment tokens used.
    tokens: Vec<String>,
    /// The E&A's and the SOS's ports.
    ea_port: u16,
    sos_port: u16,
    /// The peer control endpoint's port (plain HTTP on loopback).
    control_port: u16,
    _tmp: tempfile::TempDir,
}

/// Under capture: an E&A, enrollment of a CSP and two peers (tokens and CSRs on the wire),
/// the SOS following the E&A's directory for the reporters' keys, the overlay, and a call
/// from A to B that B has the SOS rank and reports on. `insecure`: both servers with
/// `--insecure-http` (the control run). `None` when tshark cannot capture (skipped).
impl Run {
    /// Check that every enrollment token stands somewhere in the raw capture (`all`: the
    /// plain-HTTP run), or that none does (the TLS run).
    fn expect_tokens_in_clear(&self, all: bool) {
        let raw = std::fs::read(&self.file).unwrap();
        let seen = self.tokens.iter().filter(|t| contains(&raw, t)).count();
        if all {
            assert_eq!(
                seen,
                self.tokens.len(),
                "a token is not seen over plain HTTP"
            );
        } else {
            assert_eq!(
                seen, 0,
                "an enrollment token is in the capture in cleartext"
            );
        }
    }
}

fn capture_services(insecure: bool) -> Option<Run> {
    let tmp = tempfile::tempdir().unwrap();
    let cap_file = tmp.path().join("services.pcapng");
    let capture = Capture::start(&cap_file, tmp.path())?;

    let data = tmp.path().join("ea");
    let sos_addr = testkit::ports::free_addr().to_string();
    let scheme = if insecure { "http" } else { "https" };
    let sos_url = format!("{scheme}://{sos_addr}");
    let mut ea_cmd = ea_command(&data, 16);
    ea_cmd.args(["--sos-url", &sos_url]);
    if insecure {
        ea_cmd.arg("--insecure-http").stderr(Stdio::null());
    }
    let (ea_proc, ea_url) = if insecure {
        let ea = support::spawn_cmd(&mut ea_cmd, 2);
        let url = url_after(&ea, "listening on ");
        (ea, url)
    } else {
        start_ea(&mut ea_cmd)
    };
    let csp_token = create_token(&data, &["--role", "csp", "--layer", "2"]);
    let peer_token = create_token(&data, &["--role", "peer", "--layer", "2", "--uses", "2"]);
    let names = ["csp", "a", "b"];
    let dirs = support::enroll_csp_and_peers(&ea_url, tmp.path(), &names, &csp_token, &peer_token);

    let tls = sos_tls(&data, &tmp.path().join("sos-tls"));
    let db = tmp.path().join("sos.db");
    let mut sos_args = vec!["sos", "--listen", &sos_addr];
    if insecure {
        sos_args.push("--insecure-http");
    } else {
        sos_args.extend(["--tls", tls.to_str().unwrap()]);
    }
    sos_args.extend([
        "--db",
        db.to_str().unwrap(),
        "--enroll-server",
        &ea_url,
        "--directory-refresh-s",
        "1",
    ]);
    let sos = support::spawn_cmd(
        Command::new(support::BIN)
            .args(&sos_args)
            .stderr(Stdio::null()),
        1,
    );
    assert_eq!(url_after(&sos, "sos listening on "), sos_url);

    let control = testkit::ports::free_port();
    let control_s = format!("127.0.0.1:{control}");
    let mut a_args = vec!["--control", control_s.as_str()];
    a_args.extend_from_slice(FAST_TIMERS);
    let mut csp_args = vec!["--create"];
    csp_args.extend_from_slice(FAST_TIMERS);
    let csp = start_peer(&dirs[0], &csp_args, 3);
    let a = start_peer(&dirs[1], &a_args, 3);
    let b = start_peer(&dirs[2], FAST_TIMERS, 3);
    support::wait_converged(&[&csp, &a, &b], Duration::from_secs(30));
    let out = run(&[
        "call",
        "--from",
        dirs[1].to_str().unwrap(),
        "--to",
        &b.id.to_string(),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "completed", "{v}");
    let t0 = Instant::now();
    loop {
        let sb = status(&b.dir).unwrap();
        if sb["sos"]["rank_ok"].as_u64().unwrap() >= 1
            && sb["sos"]["reports_ok"].as_u64().unwrap() >= 1
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no ranking or report: {sb}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The control endpoint (plain HTTP on loopback): cleartext the check must see.
    let sa = status(&a.dir).unwrap();
    assert!(sa["sos"].is_object(), "{sa}");
    capture.stop();
    drop((csp, a, b, sos, ea_proc));
    Some(Run {
        file: cap_file,
        tokens: vec![csp_token, peer_token],
        ea_port: port_of(&ea_url),
        sos_port: port_of(&sos_url),
        control_port: control,
        _tmp: tmp,
    })
}

/// What must never be readable on the E&A's and the SOS's ports.
const SECRETS: [&str; 17] = [
    "p2pt_",
    "POST ",
    "GET /",
    "HTTP/1.1",
    "/v1/enroll",
    "/v1/directory",
    "/v1/crl",
    "/v1/routes/rank",
    "/v1/reports",
    "CERTIFICATE REQUEST",
    "\"token\"",
    "\"routes\"",
    "\"ranked\"",
    "\"expectation\"",
    "\"reporter\"",
    "\"nonce\"",
    "\"signature\"",
];

#[test]
fn enrollment_rankings_and_reports_are_never_in_cleartext() {
    let Some(r) = capture_services(false) else {
        return;
    };
    // No token anywhere in the capture.
    r.expect_tokens_in_clear(false);
    // The E&A and the SOS: TLS handshakes seen, every payload a TLS record, nothing readable.
    for (service, port) in [("E&A", r.ea_port), ("SOS", r.sos_port)] {
        let hellos = tshark(
            &r.file,
            &[
                "-Y",
                &format!("tls.handshake.type == 1 && tcp.dstport == {port}"),
            ],
        );
        assert!(
            hellos.lines().count() >= 1,
            "{service}: no TLS ClientHello to port {port}"
        );
        let decode = format!("tcp.port=={port},tls");
        let not_tls = tshark(
            &r.file,
            &[
                "-d",
                &decode,
                "-Y",
                &format!("tcp.port == {port} && tcp.len > 0 && !tls"),
            ],
        );
        assert_eq!(
            not_tls.lines().count(),
            0,
            "{service}: TCP payloads that are not TLS:\n{not_tls}"
        );
        let bytes = payloads(&r.file, port);
        assert!(
            bytes.len() > 1000,
            "{service}: only {} payload bytes captured",
            bytes.len()
        );
        for s in SECRETS {
            assert!(
                !contains(&bytes, s),
                "{service}: {s:?} in cleartext on port {port}"
            );
        }
        eprintln!(
            "{service} port {port}: {} payload bytes, all TLS",
            bytes.len()
        );
    }
    // The same capture and decoding do show cleartext where there is some.
    let plain = payloads(&r.file, r.control_port);
    assert!(
        contains(&plain, "GET /status"),
        "the capture misses the control endpoint's request"
    );
    assert!(
        contains(&plain, "\"reports_ok\""),
        "the capture misses the control endpoint's answer"
    );
}

/// The control run: the same services with `--insecure-http` put the tokens, the API paths,
/// the ranking and the reports on the wire in cleartext, and the same check finds them.
#[test]
fn the_check_finds_tokens_rankings_and_reports_over_insecure_http() {
    let Some(r) = capture_services(true) else {
        return;
    };
    r.expect_tokens_in_clear(true);
    let ea: &[&str] = &[
        "/v1/enroll",
        "\"token\"",
        "CERTIFICATE REQUEST",
        "/v1/directory",
    ];
    let sos: &[&str] = &[
        "/v1/routes/rank",
        "\"ranked\"",
        "\"expectation\"",
        "/v1/reports",
        "\"nonce\"",
    ];
    for (service, port, seen) in [("E&A", r.ea_port, ea), ("SOS", r.sos_port, sos)] {
        let bytes = payloads(&r.file, port);
        for s in seen {
            assert!(
                contains(&bytes, s),
                "{service}: {s:?} not seen over plain HTTP"
            );
        }
    }
}
