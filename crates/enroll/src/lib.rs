//! Enrollment & Authentication (E&A) for p2psip: the trust anchor of the overlay.
#![warn(missing_docs, unreachable_pub)]

pub mod cert;
pub mod cities;
pub mod hilbert;
pub mod ids;
pub mod layer;
pub mod locality;
pub mod token;
