//! What the one demo process costs its host: resident memory, CPU time and file
//! descriptors, and the open-file limit every peer's listener and links count against.

use std::time::Duration;

/// Descriptors budgeted per demo peer: 512 peers peaked at about 13 600 descriptors
/// (≈ 27 per peer, one overlay at a time); 38 keeps headroom for the join burst.
pub(crate) const FDS_PER_PEER: u64 = 38;

/// The open-file limit the demo asks for when it may raise the hard limit (root, or
/// `CAP_SYS_RESOURCE`): enough for every peer to keep each link its ring needs.
const WANT_NOFILE: u64 = 1 << 16;

/// Raise the open-file limit: both limits to [`WANT_NOFILE`] where the process may raise
/// the hard limit, else the soft limit to the hard one (every peer holds a listener and a
/// few connections, both ends of which live in this process).
pub(crate) fn raise_nofile() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let r = getrlimit(Resource::Nofile);
    if r.maximum.is_some_and(|max| max < WANT_NOFILE) {
        let want = Rlimit {
            current: Some(WANT_NOFILE),
            maximum: Some(WANT_NOFILE),
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return;
        }
    }
    let mut r = getrlimit(Resource::Nofile);
    if r.current < r.maximum {
        r.current = r.maximum;
        let _ = setrlimit(Resource::Nofile, r);
    }
}

/// Links an ordinary peer may hold when `peers` share this process's descriptors: its
/// share of the limit less its listener and some headroom, at least what
/// [`FDS_PER_PEER`] leaves and at most [`MAX_PEER_LINKS`].
pub(crate) fn peer_links(peers: usize) -> usize {
    let share = nofile_limit() / (peers.max(1) as u64);
    let links = share.saturating_sub(6).max(FDS_PER_PEER - 6);
    usize::try_from(links)
        .unwrap_or(MAX_PEER_LINKS)
        .min(MAX_PEER_LINKS)
}

/// More links than an ordinary peer of a 2 048-peer layer ring needs (successors,
/// predecessor, fingers, the peers whose fingers point at it, CSP and CSPG).
pub(crate) const MAX_PEER_LINKS: usize = 96;

pub(crate) fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// CPU time this process has used so far (all threads).
pub(crate) fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Resident set size of this process, bytes.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Open file descriptors of this process.
pub(crate) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}
