//! Real processes, the paper's call flow end to end: `p2psip enroll-server` (handing out
//! the SOS URL and publishing the directory), four `p2psip enroll` (one CSP and three
//! peers, all in layer 2), `p2psip sos` with the reporter keys E&A exported
//! (`enroll-server sos-registry`) and four secure `p2psip peer` processes on mutual TLS
//! over loopback. `p2psip call` from one peer to another rings through the CSP (PingRequest
//! multicast, the callee asks the real SOS to rank the routes and reports signed evidence
//! it accepts) and completes
//! INVITE/180/200/ACK/BYE/200 as SIP messages over the overlay; the second call to the
//! same callee comes from the contact cache; a call to a Node-ID nobody holds fails with a
//! non-zero exit status.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use support::{
    PeerProc, Proc, create_token, ea_command, enroll, ok, owner_of, run, sos_tls, start_ea,
    start_sos, status,
};
use testkit::sipp;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Timeouts on top of [`support::FAST_TIMERS`]: room for the secure call flow and the SOS.
const FAST: &[&str] = &[
    "--rpc-timeout-ms",
    "500",
    "--lookup-timeout-ms",
    "1500",
    "--call-timeout-ms",
    "2000",
    "--sos-timeout-ms",
    "1500",
    "--log",
    "net=warn,p2psip=info",
];

fn start_peer(dir: &Path, extra: &[&str]) -> PeerProc {
    let mut args = extra.to_vec();
    args.extend_from_slice(support::FAST_TIMERS);
    args.extend_from_slice(FAST);
    let with_sip = extra.contains(&"--sip-listen");
    let mut peer = support::start_peer(dir, &args, if with_sip { 4 } else { 3 });
    let lines = &peer.proc.first_lines;
    assert!(lines[2].starts_with("secure "), "{lines:?}");
    if with_sip {
        let l: Vec<&str> = lines[3].split(' ').collect();
        assert_eq!(&l[..2], ["sip", "udp+tcp"], "{lines:?}");
        peer.sip = Some(l[2].parse().unwrap());
    }
    peer
}

fn call(from: &Path, to: u128) -> (bool, Value) {
    call_to(from, &to.to_string())
}

fn call_to(from: &Path, to: &str) -> (bool, Value) {
    let out = run(&[
        "call",
        "--from",
        from.to_str().unwrap(),
        "--to",
        to,
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("call → {text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), serde_json::from_str(&text).unwrap())
}

fn sip_lines(v: &Value) -> Vec<String> {
    v["sip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// An HTTPS GET (the body, which must come with a success status), the server verified
/// against the CA in `ca`.
fn https_get(base: &str, path: &str, ca: &Path) -> String {
    let (code, body) = support::http_get(base, path, ca);
    assert!(
        (200..300).contains(&code),
        "GET {base}{path}: {code} {body}"
    );
    body
}

/// The processes of one overlay: SOS, E&A, then the CSP and peers A, B, C (layer 2),
/// converged.
struct Overlay {
    tmp: tempfile::TempDir,
    sos_url: String,
    peers: Vec<PeerProc>,
    _sos: Proc,
    _ea: Proc,
}

fn wait_converged(peers: &[&PeerProc]) {
    let took = support::wait_converged(peers, Duration::from_secs(30));
    eprintln!("{} secure peers converged in {took:?}", peers.len());
}

fn overlay() -> Overlay {
    overlay_with(&[])
}

/// The overlay, peers A and B with the extra flags given (e.g. a SIP front-end).
fn overlay_with(ab: &[&str]) -> Overlay {
    let tmp = tempfile::tempdir().unwrap();
    // The SOS starts once everyone is enrolled (its key registry lists their certificate
    // keys); E&A hands out its URL before that.
    let sos_addr = testkit::ports::free_addr().to_string();
    let sos_url = format!("https://{sos_addr}");
    let data = tmp.path().join("ea");
    let data_s = data.to_str().unwrap();
    let (ea, url) = start_ea(ea_command(&data, 16).args(["--sos-url", &sos_url]));
    let token = |role: &str, uses: &str| {
        create_token(&data, &["--role", role, "--layer", "2", "--uses", uses])
    };
    let csp_token = token("csp", "1");
    let peer_token = token("peer", "3");
    let names = ["csp", "a", "b", "c"];
    let dirs = support::enroll_csp_and_peers(&url, tmp.path(), &names, &csp_token, &peer_token);

    let registry = tmp.path().join("registry.json");
    ok(run(&[
        "enroll-server",
        "sos-registry",
        "--data",
        data_s,
        "--out",
        registry.to_str().unwrap(),
    ]));
    let tls = sos_tls(&data, &tmp.path().join("sos-tls"));
    let (sos, printed) = start_sos(
        &sos_addr,
        &tls,
        tmp.path().join("sos.db").to_str().unwrap(),
        &["--key-registry", registry.to_str().unwrap()],
    );
    assert_eq!(printed, sos_url);
    let t0 = Instant::now();
    let csp = start_peer(&dirs[0], &["--create"]);
    let a = start_peer(&dirs[1], ab);
    let b = start_peer(&dirs[2], ab);
    let c = start_peer(&dirs[3], &[]);
    wait_converged(&[&csp, &a, &b, &c]);
    eprintln!("overlay up in {:?}", t0.elapsed());
    Overlay {
        tmp,
        sos_url,
        peers: vec![csp, a, b, c],
        _sos: sos,
        _ea: ea,
    }
}

#[test]
fn secure_peers_call_each_other_through_the_csp_and_the_sos() {
    let o = overlay();
    let t0 = Instant::now();
    let [csp, a, b, c] = &o.peers[..] else {
        unreachable!()
    };
    let sos_url = &o.sos_url;
    let all = [csp, a, b, c];
    let st = status(&a.dir).unwrap();
    assert_eq!(st["mode"], "secure");
    assert_eq!(st["role"], "peer");
    assert_eq!(st["layer"], 2);
    assert_eq!(st["members"], 4, "{st}");
    assert_eq!(st["directory"]["csps"][1], 1, "{st}");
    assert_eq!(status(&csp.dir).unwrap()["role"], "csp");

    // A → B: through the CSP, ranked by the SOS, the whole SIP dialog.
    let (success, v) = call(&a.dir, b.id);
    assert!(success, "{v}");
    assert_eq!(v["result"], "completed", "{v}");
    assert_eq!(v["cached"], false);
    let route: Vec<u128> = v["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(route.last(), Some(&b.id), "{v}");
    assert_eq!(v["hops"].as_u64(), Some(route.len() as u64));
    assert!(v["srd_ms"].as_f64().unwrap() > 0.0);
    let sip = sip_lines(&v);
    testkit::assert_completed_call_sip(&sip);
    // The callee answered it and saw it end; the SOS was asked to rank the routes.
    let sb = status(&b.dir).unwrap();
    assert_eq!(sb["calls"]["answered"], 1, "{sb}");
    assert_eq!(sb["calls"]["recent"][0]["result"], "ended", "{sb}");
    assert!(sb["sos"]["rank_ok"].as_u64().unwrap() >= 1, "{sb}");
    let metrics = https_get(sos_url, "/metrics", &o.tmp.path().join("ea").join("ca.pem"));
    let ranked: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"p2psip_sos_rankings_total{outcome="ok"} "#))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ranked >= 1, "{metrics}");
    // B signed evidence about the hops with its certificate key; the SOS accepted it.
    let t1 = Instant::now();
    while status(&b.dir).unwrap()["sos"]["reports_ok"]
        .as_u64()
        .unwrap()
        == 0
    {
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "no report accepted: {}",
            status(&b.dir).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Again: B is in A's contact cache now (layer 2 caches), no CSP involved.
    let (success, v) = call(&a.dir, b.id);
    assert!(success, "{v}");
    assert_eq!(v["cached"], true, "{v}");
    assert_eq!(v["route"], serde_json::json!([b.id.to_string()]));

    // C → A through the CSP.
    let (success, v) = call(&c.dir, a.id);
    assert!(success, "{v}");
    assert_eq!(v["result"], "completed", "{v}");

    // Nobody holds this ID: failed, exit status non-zero, the reason given.
    let ids: Vec<u128> = all.iter().map(|p| p.id).collect();
    let _ = &o.tmp;
    let nobody = (b.id + 1..).find(|i| !ids.contains(i)).unwrap();
    let (success, v) = call(&a.dir, nobody);
    assert!(!success, "{v}");
    assert_eq!(v["result"], "failed", "{v}");
    assert!(v["reason"].as_str().is_some(), "{v}");
    eprintln!("total {:?}", t0.elapsed());
}

/// Peers A and B behind "NAT": outbound-only (they accept no connections; the CSP, their
/// first bootstrap, relays for them) and running ICE for their calls. A → B and B → A
/// complete, and each call reports the candidate pair ICE chose.
#[test]
fn outbound_only_peers_call_each_other_and_run_ice() {
    let o = overlay_with(&["--outbound-only", "--ice"]);
    let [csp, a, b, _c] = &o.peers[..] else {
        unreachable!()
    };
    for p in [a, b] {
        let st = status(&p.dir).unwrap();
        assert_eq!(st["nat"]["relay"]["id"], csp.id.to_string(), "{st}");
        assert_eq!(st["stats"]["accepts_ok"], 0, "{st}");
    }
    for (from, to) in [(a, b), (b, a)] {
        let (success, v) = call(&from.dir, to.id);
        assert!(success, "{v}");
        assert_eq!(v["result"], "completed", "{v}");
        let ice = v["ice"].as_str().unwrap();
        assert!(ice.starts_with("local host 127.0.0.1:"), "{v}");
        // The remote end is its host candidate, or the same address learnt from its checks
        // before its answer was read (peer-reflexive).
        assert!(
            ice.contains("-> remote host 127.0.0.1:") || ice.contains("-> remote prflx 127.0.0.1:"),
            "{v}"
        );
    }
    let relayed = status(&csp.dir).unwrap()["stats"]["frames_relayed"]
        .as_u64()
        .unwrap();
    assert!(relayed > 0, "nothing went through the relay");
}

/// The peer database: a peer stopped with SIGTERM (graceful leave) and started again from
/// the same node directory comes back with its contact cache warm (its next call to the
/// same callee skips the CSP) and its call history in `peer.db`.
/// Does a peer's status list `id` among its cached contacts?
fn caches(status: &Value, id: u128) -> bool {
    status["cached_contacts"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(id.to_string()))
}

#[test]
fn a_restarted_peer_comes_back_with_its_cache_warm() {
    let mut o = overlay();
    let (a_dir, b_id) = (o.peers[1].dir.clone(), o.peers[2].id);
    let (success, v) = call(&a_dir, b_id);
    assert!(success, "{v}");
    assert_eq!(v["cached"], false, "{v}");
    let st = status(&a_dir).unwrap();
    assert!(caches(&st, b_id), "{st}");
    // SIGTERM: graceful leave, the database flushed, exit 0.
    let exit = o.peers[1].terminate();
    assert!(exit.success(), "{exit:?}");
    assert!(a_dir.join("peer.db").exists());
    // Started again: the cache and the history come back from peer.db.
    o.peers[1] = start_peer(&a_dir, &[]);
    let peers: Vec<&PeerProc> = o.peers.iter().collect();
    wait_converged(&peers);
    let st = status(&a_dir).unwrap();
    let warm = &st["store"]["warm_start"];
    assert!(warm["contacts"].as_u64().unwrap() >= 1, "{st}");
    assert!(warm["calls_in_history"].as_u64().unwrap() >= 1, "{st}");
    assert!(caches(&st, b_id), "{st}");
    let (success, v) = call(&a_dir, b_id);
    assert!(success, "{v}");
    assert_eq!(
        v["cached"], true,
        "the cache did not survive the restart: {v}"
    );
}

/// Issue 7 on real peer processes: `--sip-listen` runs the SIP front-end on peers A and B.
/// A SIPp UAS registers as bob at B's front-end (a signed registration stored at the peer
/// responsible for hash(bob's AoR)); a SIPp UAC at A's front-end calls bob through the
/// secure overlay, over UDP and over TCP; every call completes INVITE/180/200/ACK/BYE.
/// `p2psip call --to sip:carol@…` from peer A rings a SIPp UAS registered as carol at B.
/// Then the registration's owner is killed with SIGKILL and started again: the record comes
/// back from its `peer.db`.
#[test]
fn sipp_calls_between_front_ends_on_two_peer_processes() {
    if !sipp::have_sipp() {
        return;
    }
    let mut o = overlay_with(&["--sip-listen", "127.0.0.1:0"]);
    let (fa, fb) = (o.peers[1].sip.unwrap(), o.peers[2].sip.unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(sipp::sipp_calls("u1", fa, fb, 5));
    rt.block_on(sipp::sipp_calls("t1", fa, fb, 5));
    // `p2psip call --to AOR`: peer A fetches carol's registration from the overlay and
    // calls her phone (a SIPp UAS behind B's front-end) through the secure call flow.
    let a_dir = o.peers[1].dir.clone();
    let out = rt.block_on(async move {
        let (uas, uas_port) = sipp::spawn_uas("u1", 1);
        sipp::register_uas("u1", fb, "carol", uas_port).await;
        let v = tokio::task::spawn_blocking(move || call_to(&a_dir, "sip:carol@p2psip.test"))
            .await
            .unwrap();
        (v, sipp::finish_uas(uas).await)
    });
    let ((success, v), uas) = out;
    assert!(success, "{v}");
    assert_eq!(v["result"], "completed", "{v}");
    assert_eq!(v["aor"], "sip:carol@p2psip.test", "{v}");
    assert_eq!(v["to"], o.peers[2].id.to_string(), "{v}");
    assert!(
        uas.status.success(),
        "the phone did not see a full call: {}",
        String::from_utf8_lossy(&uas.stdout)
    );

    // bob's registration lives at the peer responsible for its key.
    let space = overlay::IdSpace::new(16).unwrap();
    let key = sip::aor_key(space, "sip:bob@p2psip.test").0;
    let mut ids: Vec<u128> = o.peers.iter().map(|p| p.id).collect();
    ids.sort();
    let owner = owner_of(&ids, key);
    let idx = o.peers.iter().position(|p| p.id == owner).unwrap();
    let has_key = |dir: &Path| {
        status(dir).unwrap()["record_keys"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(key.to_string()))
    };
    assert!(
        has_key(&o.peers[idx].dir),
        "the owner {owner} lacks key {key}"
    );
    // Past one database sync, then SIGKILL: no graceful leave, no hand-over.
    std::thread::sleep(Duration::from_millis(2500));
    let dir = o.peers[idx].dir.clone();
    o.peers[idx].proc.child.kill().unwrap();
    o.peers[idx].proc.child.wait().unwrap();
    let _ = std::fs::remove_file(dir.join("control.addr"));
    // Join through another member (the CSP's node.json has no bootstrap of its layer).
    let boot = o.peers[(idx + 1) % o.peers.len()].bootstrap();
    o.peers[idx] = start_peer(&dir, &["--bootstrap", &boot]);
    let st = status(&dir).unwrap();
    assert!(
        st["store"]["warm_start"]["records"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert!(has_key(&dir), "the record did not survive kill -9: {st}");
    let peers: Vec<&PeerProc> = o.peers.iter().collect();
    wait_converged(&peers);

    // SIGTERM: graceful leave, the records go to the successor, and peer.db forgets them
    // (a restart must not resurrect records someone else now owns).
    assert!(o.peers[idx].terminate().success());
    let pos = ids.iter().position(|&i| i == owner).unwrap();
    let succ = ids[(pos + 1) % ids.len()];
    let succ_dir = o.peers.iter().find(|p| p.id == succ).unwrap().dir.clone();
    assert!(has_key(&succ_dir), "the successor {succ} lacks key {key}");
    let boot = o.peers[(idx + 1) % o.peers.len()].bootstrap();
    o.peers[idx] = start_peer(&dir, &["--bootstrap", &boot]);
    let st = status(&dir).unwrap();
    assert_eq!(st["store"]["warm_start"]["records"], 0, "{st}");
}

/// Across layers (paper Figure 3): a CSPG, a CSP and two peers in layer 1 and the same in
/// layer 2, each layer its own ring. A layer-1 peer calls a layer-2 peer (its CSPG → the
/// layer-2 CSPG → the layer-2 CSP → PingRequest multicast) and the other way round; both
/// complete the SIP dialog. The SOS takes its reporter keys from E&A's directory.
#[test]
fn calls_cross_layers_through_the_cspgs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ea");
    let (_ea, url) = start_ea(&mut ea_command(&data, 16));
    let tls = sos_tls(&data, &tmp.path().join("sos-tls"));
    // This SOS follows E&A's directory for reporter keys (started before anyone enrolled).
    let (_sos, sos_url) = start_sos(
        "127.0.0.1:0",
        &tls,
        tmp.path().join("sos.db").to_str().unwrap(),
        &["--enroll-server", &url, "--directory-refresh-s", "1"],
    );
    let specs = [
        ("cspg", "1"),
        ("cspg", "2"),
        ("csp", "1"),
        ("csp", "2"),
        ("peer", "1"),
        ("peer", "2"),
        ("peer", "1"),
        ("peer", "2"),
    ];
    let mut dirs = Vec::new();
    for (i, (role, layer)) in specs.iter().enumerate() {
        let tok = create_token(&data, &["--role", role, "--layer", layer]);
        let d = tmp.path().join(format!("n{i}"));
        let listen = testkit::ports::free_addr().to_string();
        enroll(&url, &tok, &d, &["--listen", &listen]);
        dirs.push(d);
    }
    // The CSPGs start their layers' rings; everyone else joins its own layer's.
    let peers: Vec<PeerProc> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut extra = vec!["--sos", sos_url.as_str()];
            if i < 2 {
                extra.push("--create");
            }
            start_peer(d, &extra)
        })
        .collect();
    let layer1: Vec<&PeerProc> = peers.iter().step_by(2).collect();
    let layer2: Vec<&PeerProc> = peers.iter().skip(1).step_by(2).collect();
    wait_converged(&layer1);
    wait_converged(&layer2);
    let st = status(&peers[4].dir).unwrap();
    assert_eq!(st["layer"], 1, "{st}");
    assert_eq!(
        st["directory"]["cspgs"],
        serde_json::json!([1, 1, 0]),
        "{st}"
    );
    assert_eq!(
        st["directory"]["csps"],
        serde_json::json!([1, 1, 0]),
        "{st}"
    );
    for (from, to) in [(4, 5), (7, 6)] {
        let (success, v) = call(&peers[from].dir, peers[to].id);
        assert!(success, "{v}");
        assert_eq!(v["result"], "completed", "{v}");
        assert_eq!(v["cached"], false, "{v}");
        let route = v["route"].as_array().unwrap();
        assert_eq!(
            route.last().unwrap().as_str().unwrap(),
            peers[to].id.to_string(),
            "{v}"
        );
    }
    // Evidence signed with a peer's certificate key is accepted with the keys the SOS
    // learned from E&A after it started (`sos --enroll-server`); a key E&A never saw is not.
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let report = |key_pem: &Path, reporter: u128| {
        let der = PrivatePkcs8KeyDer::from_pem_file(key_pem).unwrap();
        let der_file = tmp.path().join(format!("key-{reporter}.der"));
        std::fs::write(&der_file, der.secret_pkcs8_der()).unwrap();
        // Ed25519 PKCS#8 documents are short; `enroll` makes P-256 keys otherwise.
        let alg = if der.secret_pkcs8_der().len() < 100 {
            "ed25519"
        } else {
            "ecdsa-p256-sha256"
        };
        run(&[
            "sos",
            "report",
            "--server",
            &sos_url,
            "--ca",
            data.join("ca.pem").to_str().unwrap(),
            "--key",
            der_file.to_str().unwrap(),
            "--peer",
            &reporter.to_string(),
            "--subject",
            &peers[4].id.to_string(),
            "--outcome",
            "delivered",
            "--algorithm",
            alg,
        ])
    };
    let key_of = |i: usize| {
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dirs[i].join("node.json")).unwrap())
                .unwrap();
        dirs[i].join(cfg["key_file"].as_str().unwrap())
    };
    // The SOS refreshes its reporter keys every second: the peers may have enrolled, joined
    // and called inside one refresh, so give it a few refreshes to learn the newest key.
    let t0 = Instant::now();
    let accepted = loop {
        let out = report(&key_of(5), peers[5].id);
        if out.status.success() || t0.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let forged = report(&key_of(6), peers[5].id);
    assert!(
        !forged.status.success(),
        "a report signed with another peer's key was accepted"
    );
}
