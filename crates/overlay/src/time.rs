//! Time as the core sees it: a monotonic instant handed in by the driver.
//!
//! The simulator drives it from a virtual clock, the runtime from `std::time::Instant`; the
//! core only compares and adds. Microsecond resolution, 64 bits: 584 000 years of range.

use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in microseconds since an epoch chosen by the driver.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    /// The driver's epoch.
    pub const ZERO: Time = Time(0);

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// A time `millis` milliseconds after the epoch.
    pub fn from_millis(millis: u64) -> Time {
        Time(millis.saturating_mul(1000))
    }

    /// A time `secs` seconds after the epoch (fractional allowed, negative clamps to zero).
    pub fn from_secs_f64(secs: f64) -> Time {
        Time((secs.max(0.0) * 1e6) as u64)
    }

    /// Seconds since the epoch, for reports.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}
