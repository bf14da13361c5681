//! Wall-clock readings in the units the databases and wire formats use.
//!
//! Protocol logic never reads the clock (it is handed `now`); the services do, to stamp
//! rows, sign reports and date certificates. A clock before 1970 reads as 0 and one past
//! the range of the result saturates, so no caller has to handle an error that cannot
//! happen on a working machine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_agree_and_advance() {
        let s = unix_secs();
        let ms = unix_ms();
        // 2020-01-01 is long past; seconds and milliseconds read the same clock.
        assert!(s > 1_577_836_800, "{s}");
        assert!(ms / 1000 >= s && ms / 1000 <= s + 1, "{ms} vs {s}");
        std::thread::sleep(Duration::from_millis(3));
        assert!(unix_ms() > ms);
    }
}
