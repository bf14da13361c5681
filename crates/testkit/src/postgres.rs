//! A throwaway PostgreSQL cluster for tests of the services that share one database.
//!
//! [`Cluster::start`] runs Debian's `initdb` and `pg_ctl` (from `/usr/lib/postgresql/*/bin`,
//! else `PATH`) on a fresh temporary directory, listening on 127.0.0.1 at a free port with
//! its Unix socket in that directory, and `trust` authentication for the `p2psip` user.
//! `initdb` refuses to run as root, so as root the cluster runs as `nobody`. Dropping the
//! cluster stops it (`-m immediate`) and removes the directory.
//!
//! When the binaries are missing or the cluster does not start, `start` says
//! `SKIPPED: …` on stderr and returns `None` — except under `CI=true` with the binaries
//! missing, where it panics, since `scripts/test` installs them there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Server settings added at every start (`-c name=value …`).
    extra: std::sync::Mutex<String>,
}

/// Where `initdb` and `pg_ctl` are, if anywhere.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    if let Some(b) = versions.pop() {
        return Some(b);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    /// Start a cluster, or say why not (`SKIPPED: …`) and return `None`.
    ///
    /// # Panics
    /// Under `CI=true` when the PostgreSQL binaries are missing.
    pub fn start(test: &str) -> Option<Cluster> {
        let Some(bin) = find_bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: PostgreSQL (initdb, pg_ctl) is missing under CI=true");
            }
            eprintln!("SKIPPED: {test}: PostgreSQL (initdb, pg_ctl) not installed");
            return None;
        };
        match Self::try_start(bin) {
            Ok(c) => Some(c),
            Err(why) => {
                eprintln!("SKIPPED: {test}: cannot start a PostgreSQL cluster: {why}");
                None
            }
        }
    }

    fn try_start(bin: PathBuf) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("p2psip-pg")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = crate::ports::free_port();
        let c = Cluster {
            dir,
            bin,
            port,
            extra: std::sync::Mutex::new(String::new()),
        };
        if is_root() {
            let out = Command::new("chown")
                .arg("nobody")
                .arg(c.dir.path())
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            check("chown", &out)?;
        }
        let data = c.data();
        let out = c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "p2psip",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        check("initdb", &out)?;
        c.start_again()?;
        c.create_db("p2psip")?;
        Ok(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("pg").display().to_string()
    }

    /// Run one PostgreSQL program (as `nobody` when root).
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let path = self.bin.join(program);
        let out = if is_root() {
            let mut line = shell_quote(&path.display().to_string());
            for a in args {
                line.push(' ');
                line.push_str(&shell_quote(a));
            }
            Command::new("su")
                .args(["nobody", "-s", "/bin/sh", "-c", &line])
                .current_dir(self.dir.path())
                .output()
        } else {
            Command::new(&path)
                .args(args)
                .current_dir(self.dir.path())
                .output()
        };
        out.map_err(|e| format!("{program}: {e}"))
    }

    /// `postgres://p2psip@127.0.0.1:PORT/p2psip` (the database made at start).
    pub fn url(&self) -> String {
        self.url_of("p2psip")
    }

    /// The URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://p2psip@127.0.0.1:{}/{name}", self.port)
    }

    /// Make another database.
    pub fn create_db(&self, name: &str) -> Result<(), String> {
        let out = self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "p2psip",
                name,
            ],
        )?;
        check("createdb", &out)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop like a crash: `pg_ctl stop -m immediate` (no checkpoint; recovery replays the
    /// WAL at the next start).
    pub fn stop_immediate(&self) -> Result<(), String> {
        let out = self.run("pg_ctl", &["-D", &self.data(), "stop", "-m", "immediate"])?;
        check("pg_ctl stop", &out)
    }

    /// Start (again) on the same port and wait until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let sock = self.dir.path().display().to_string();
        let extra = self.extra.lock().map(|e| e.clone()).unwrap_or_default();
        let opts = format!(
            "-p {} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200 {extra}",
            self.port
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        )?;
        if let Err(e) = check("pg_ctl start", &out) {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            return Err(format!("{e}\n{log}"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err("PostgreSQL did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Cluster {
    /// Write `contents` to `name` in the cluster's directory, readable by the server's
    /// user only (what PostgreSQL demands of a TLS key); returns the path.
    pub fn write_private(&self, name: &str, contents: &[u8]) -> Result<PathBuf, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).map_err(|e| format!("{name}: {e}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{name}: {e}"))?;
        if is_root() {
            let out = Command::new("chown")
                .arg("nobody")
                .arg(&path)
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            check("chown", &out)?;
        }
        Ok(path)
    }

    /// Restart (fast shutdown) with `settings` (`-c name=value …`) added now and at every
    /// later start.
    pub fn restart_with(&self, settings: &str) -> Result<(), String> {
        let out = self.run("pg_ctl", &["-D", &self.data(), "stop", "-m", "fast"])?;
        check("pg_ctl stop", &out)?;
        if let Ok(mut e) = self.extra.lock() {
            *e = settings.to_string();
        }
        self.start_again()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

fn check(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
