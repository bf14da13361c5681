//! What the one demo process costs its host: resident memory, CPU time and file
//! descriptors, and the open-file limit every peer's listener and links count against.

use std::time::Duration;

/// Descriptors the demo process keeps for everything but its peers' listeners and links:
/// the E&A, SOS and STUN servers, the SOS client, the runtime and stdio.
const FDS_RESERVED: u64 = 256;

/// Descriptors a peer holds besides its links: its listener, and room for a dial and an
/// accept in flight before their links count against the budget.
const FDS_BESIDES_LINKS: u64 = 3;

/// Fewest links a peer runs with: its successor and predecessor, a few fingers, its CSP and
/// CSPG, and a callee or two. Below this the process is too small for that many peers.
pub(crate) const MIN_PEER_LINKS: usize = 12;

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

/// Links an ordinary peer may hold when `peers` share this process's descriptors: its share
/// of the limit less [`FDS_RESERVED`], less its listener and dials in flight, at most
/// [`MAX_PEER_LINKS`]. The peers' shares together then fit the limit, so a full budget
/// makes a peer close a link rather than fail to open one.
pub(crate) fn peer_links(peers: usize) -> usize {
    links_within(nofile_limit(), peers)
}

/// [`peer_links`] under an open-file limit of `nofile`.
fn links_within(nofile: u64, peers: usize) -> usize {
    let share = nofile.saturating_sub(FDS_RESERVED) / (peers.max(1) as u64);
    usize::try_from(share.saturating_sub(FDS_BESIDES_LINKS))
        .unwrap_or(MAX_PEER_LINKS)
        .min(MAX_PEER_LINKS)
}

/// Most peers this process holds when each keeps `links` links (at least
/// [`MIN_PEER_LINKS`]) within the open-file limit.
pub(crate) fn max_peers(links: usize) -> usize {
    peers_within(nofile_limit(), links)
}

/// [`max_peers`] under an open-file limit of `nofile`.
fn peers_within(nofile: u64, links: usize) -> usize {
    let per_peer = (links.max(MIN_PEER_LINKS) as u64).saturating_add(FDS_BESIDES_LINKS);
    usize::try_from(nofile.saturating_sub(FDS_RESERVED) / per_peer).unwrap_or(usize::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_shares_fit_the_open_file_limit() {
        // This machine's hard limit: 512 peers keep about their old share (33), 1 024 run
        // with 16 links each, 2 048 do not fit at all.
        assert_eq!(links_within(20_000, 128), MAX_PEER_LINKS);
        assert_eq!(links_within(20_000, 512), 35);
        assert_eq!(links_within(20_000, 1024), 16);
        assert_eq!(peers_within(20_000, MIN_PEER_LINKS), 1316);
        assert!(peers_within(20_000, MIN_PEER_LINKS) < 2048);
        for nofile in [1_024u64, 20_000, 65_536] {
            let most = peers_within(nofile, MIN_PEER_LINKS);
            for peers in [24, 128, 512, 1024, most] {
                if peers > most {
                    continue;
                }
                let links = links_within(nofile, peers) as u64;
                assert!(links >= MIN_PEER_LINKS as u64, "{nofile} {peers}");
                let fds = peers as u64 * (links + FDS_BESIDES_LINKS) + FDS_RESERVED;
                assert!(fds <= nofile, "{nofile} {peers}: {fds}");
            }
        }
    }
}
