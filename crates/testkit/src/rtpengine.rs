//! A real rtpengine (Debian `rtpengine-daemon`) on loopback for the tests that hand media to
//! it: started in userspace (`--table=-1`) on a free ng control port and a port range the
//! test chooses (tests running at once must not share one), ready once it answers an ng
//! `ping`, killed when dropped. It opens no other port (no CLI, no HTTP). Its log goes to a file the test may print when it fails.
//!
//! A test helper: a failure to start is the test's failure, so it panics with what
//! rtpengine said.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long rtpengine may take to answer its first ping.
const READY: Duration = Duration::from_secs(10);

/// An rtpengine process on loopback, ended with the value.
pub struct Rtpengine {
    child: Child,
    ng: SocketAddr,
    log: PathBuf,
}

impl Rtpengine {
    /// Start rtpengine relaying on 127.0.0.1 from ports `first..=last`, and wait until its
    /// ng port answers a ping. `None` (a loud skip, a failure under CI) when it is not
    /// installed.
    pub fn start(first: u16, last: u16) -> Option<Rtpengine> {
        if !crate::have_tool("rtpengine", "rtpengine-daemon") {
            return None;
        }
        let ng = crate::ports::free_addr();
        let log = std::env::temp_dir().join(format!(
            "rtpengine-{}-{}.log",
            std::process::id(),
            ng.port()
        ));
        let file = std::fs::File::create(&log).expect("create rtpengine's log file");
        let child = Command::new("rtpengine")
            .args([
                // Not the system's /etc/rtpengine/rtpengine.conf: its fixed CLI and HTTP
                // ports would clash between two tests' rtpengines.
                "--config-file=none",
                "--foreground",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={ng}"),
                &format!("--port-min={first}"),
                &format!("--port-max={last}"),
                "--delete-delay=0",
                "--log-stderr",
                "--log-level=6",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn rtpengine");
        let mut engine = Rtpengine { child, ng, log };
        engine.wait_ready();
        Some(engine)
    }

    /// Its ng control address (`--listen-ng`).
    pub fn ng(&self) -> SocketAddr {
        self.ng
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One ng command (`d…e`, bencoded) and its answer without the cookie. Each command has
    /// a cookie of its own: rtpengine answers a cookie it has seen with its earlier answer.
    pub fn command(&self, bencoded: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let cookie = format!(
            "t{}.{} ",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("set a read timeout");
        let mut buf = vec![0u8; 65_536];
        for _ in 0..4 {
            sock.send_to(format!("{cookie}{bencoded}").as_bytes(), self.ng)
                .expect("send to rtpengine");
            if let Ok(n) = sock.recv(&mut buf) {
                let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(rest) = answer.strip_prefix(&cookie) {
                    return rest.to_owned();
                }
            }
        }
        panic!("rtpengine does not answer {bencoded}:\n{}", self.log());
    }

    /// The Call-IDs of the calls it holds (the ng `list` command), sorted.
    pub fn calls(&self) -> Vec<String> {
        let answer = self.command("d7:command4:liste");
        let (_, list) = answer
            .split_once("5:callsl")
            .unwrap_or_else(|| panic!("no call list in {answer}"));
        let mut ids = Vec::new();
        let mut rest = list;
        // Byte strings (`len:bytes`) until the list's `e`.
        while let Some((len, tail)) = rest.split_once(':') {
            let Ok(len) = len.parse::<usize>() else { break };
            ids.push(tail[..len].to_owned());
            rest = &tail[len..];
        }
        ids.sort();
        ids
    }

    fn wait_ready(&mut self) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let mut buf = [0u8; 256];
        let t0 = Instant::now();
        while t0.elapsed() < READY {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rtpengine exited ({status}):\n{}", self.log());
            }
            // A cookie of its own each time (see `command`).
            let cookie = format!("r{}.{}", std::process::id(), t0.elapsed().as_nanos());
            let _ = sock.send_to(format!("{cookie} d7:command4:pinge").as_bytes(), self.ng);
            if let Ok(n) = sock.recv(&mut buf)
                && buf[..n].starts_with(format!("{cookie} d6:result4:pong").as_bytes())
            {
                return;
            }
        }
        panic!(
            "rtpengine did not answer a ping in {READY:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
