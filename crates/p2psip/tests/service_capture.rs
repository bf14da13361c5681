//! Nothing secret crosses the wire in cleartext to or from the E&A and the SOS: tshark
//! captures loopback while real processes enroll (tokens, CSRs), start an overlay with the SOS
//! following the E&A's directory, and place a call the SOS ranks and the callee reports on.
//! In the capture, no enrollment token appears anywhere, every TCP payload on the E&A's and
//! the SOS's ports is a TLS record, and none of them shows an API path, a ranking or a
//! report field. The check is shown able to see cleartext: the peer's local control endpoint
//! (plain HTTP on loopback, by design) is read through the same capture, and its answer is
//! found. `scripts/capture-check` does the same for the overlay's own links.
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
    FAST_TIMERS, create_token, ea_command, enroll, free_port, ok, run, sos_tls, spawn, start_ea,
    start_peer, status, url_after,
};

/// A tshark capture of TCP on `lo` into a file, stopped (SIGINT) on drop.
struct Capture {
    child: Child,
}

impl Capture {
    /// Start capturing into `file`; `None` (after a loud skip) when tshark cannot capture.
    fn start(file: &Path, dir: &Path) -> Option<Capture> {
        for tool in ["tshark", "dumpcap"] {
            if Command::new(tool).arg("--version").output().is_err() {
                testkit::tool_missing(tool, "tshark");
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

#[test]
fn enrollment_rankings_and_reports_are_never_in_cleartext() {
    let tmp = tempfile::tempdir().unwrap();
    let cap_file = tmp.path().join("services.pcapng");
    let Some(capture) = Capture::start(&cap_file, tmp.path()) else {
        return;
    };

    // E&A, tokens, enrollment of a CSP and two peers (tokens and CSRs on the wire).
    let data = tmp.path().join("ea");
    let sos_addr = format!("127.0.0.1:{}", free_port());
    let sos_url = format!("https://{sos_addr}");
    let (_ea, ea_url) = start_ea(ea_command(&data, 16).args(["--sos-url", &sos_url]));
    let csp_token = create_token(&data, &["--role", "csp", "--layer", "2"]);
    let peer_token = create_token(&data, &["--role", "peer", "--layer", "2", "--uses", "2"]);
    let dirs: Vec<_> = ["csp", "a", "b"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    for (i, d) in dirs.iter().enumerate() {
        let listen = format!("127.0.0.1:{}", free_port());
        let token = if i == 0 { &csp_token } else { &peer_token };
        enroll(&ea_url, token, d, &["--listen", &listen]);
    }

    // The SOS follows the E&A's directory (over HTTPS) for the reporters' keys.
    let tls = sos_tls(&data, &tmp.path().join("sos-tls"));
    let sos = spawn(
        &[
            "sos",
            "--listen",
            &sos_addr,
            "--tls",
            tls.to_str().unwrap(),
            "--db",
            tmp.path().join("sos.db").to_str().unwrap(),
            "--enroll-server",
            &ea_url,
            "--directory-refresh-s",
            "1",
        ],
        1,
    );
    assert_eq!(url_after(&sos, "sos listening on "), sos_url);

    // The overlay; A calls B, B asks the SOS to rank the routes and reports on the hops.
    let control = free_port();
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
    // The control endpoint (plain HTTP on loopback): the cleartext the check must see.
    let sa = status(&a.dir).unwrap();
    assert!(sa["sos"].is_object(), "{sa}");
    capture.stop();

    // No token anywhere in the capture.
    let raw = std::fs::read(&cap_file).unwrap();
    for token in [&csp_token, &peer_token] {
        assert!(
            !contains(&raw, token),
            "an enrollment token is in the capture in cleartext"
        );
    }

    // The E&A and the SOS: TLS handshakes seen, every payload a TLS record, nothing readable.
    let secrets = [
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
    for (service, port) in [("E&A", port_of(&ea_url)), ("SOS", port_of(&sos_url))] {
        let hellos = tshark(
            &cap_file,
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
            &cap_file,
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
        let bytes = payloads(&cap_file, port);
        assert!(
            bytes.len() > 1000,
            "{service}: only {} payload bytes captured",
            bytes.len()
        );
        for s in secrets {
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
    let plain = payloads(&cap_file, control);
    assert!(
        contains(&plain, "GET /status"),
        "the capture misses the control endpoint's request"
    );
    assert!(
        contains(&plain, "\"reports_ok\""),
        "the capture misses the control endpoint's answer"
    );
}
