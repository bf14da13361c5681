//! The E&A request bodies: `POST /v1/enroll` JSON decoded and handed to the real server
//! logic (`EnrollServer::enroll`: token, capabilities, location, CSR, ID assignment,
//! issuance, SQLite), and the `POST /v1/renew` body's PEM/CSR/certificate parsing.
//!
//! The first byte picks the mode; modes 2 and 3 splice the fuzz bytes into an otherwise
//! valid request (live token, real CSR) so the fuzzer reaches past the token check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testkit::enroll_bodies::{decode_renew, live_ea};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ea = live_ea();
    match mode % 4 {
        0 => {
            ea.enroll_json(rest);
        }
        1 => decode_renew(rest),
        // Fuzzed capabilities / location / listen / role around a valid token and CSR.
        2 => {
            ea.enroll_json(&ea.with_capabilities(rest));
        }
        // A fuzzed CSR text with a valid token.
        _ => ea.enroll_csr(String::from_utf8_lossy(rest).into_owned()),
    }
});
