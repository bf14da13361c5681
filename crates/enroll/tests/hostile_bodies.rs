//! "Decode anything, never panic" for the E&A request bodies (the CI mirror of the
//! `enroll_body` fuzz target in `fuzz/`): arbitrary bytes and JSON-shaped text as
//! `POST /v1/enroll` and `POST /v1/renew` bodies, decoded and handed to the real server logic
//! (token, capabilities, location, CSR, ID assignment, issuance, SQLite). Anything accepted
//! must come back as a certificate that binds the Node-ID announced.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use testkit::enroll_bodies::{decode_renew, live_ea};

/// Returns true when the body was accepted and a certificate issued.
fn enroll_json(body: &[u8]) -> bool {
    live_ea().enroll_json(body)
}

fn with_capabilities(caps: &str) -> Vec<u8> {
    live_ea().with_capabilities(caps.as_bytes())
}

/// JSON-ish capability objects: right and wrong field names, types, extreme numbers.
fn capabilities_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("nat"),
        Just("cpu_cores"),
        Just("bandwidth_kbps"),
        Just("uptime_hours"),
        Just("device"),
        Just("wireless"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("\"none\"".to_string()),
        Just("\"symmetric\"".to_string()),
        Just("\"server\"".to_string()),
        Just("1e308".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        Just("18446744073709551616".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        "[a-z]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ];
    prop::collection::vec((key, value), 0..8).prop_map(|kv| {
        let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_an_enroll_body_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(!enroll_json(&body));
    }

    #[test]
    fn any_bytes_as_a_renew_body_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_renew(&body);
    }

    #[test]
    fn fuzzed_capabilities_with_a_live_token_never_panic(caps in capabilities_text()) {
        let _ = enroll_json(&with_capabilities(&caps));
    }

    #[test]
    fn fuzzed_locations_never_panic(lat in any::<f64>(), lon in any::<f64>()) {
        let f = live_ea();
        let body = format!(
            r#"{{"token":"{}","csr":{},"capabilities":{{"cpu_cores":4,"bandwidth_kbps":20000,"uptime_hours":24}},"location":{{"lat":{lat:?},"lon":{lon:?}}}}}"#,
            f.token, f.csr_json
        );
        let ok = enroll_json(body.as_bytes());
        if ok {
            prop_assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
        }
    }

    #[test]
    fn mangled_csr_text_with_a_live_token_never_panics(
        cut in any::<prop::sample::Index>(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)
    ) {
        let f = live_ea();
        let csr: String = serde_json::from_str(&f.csr_json).unwrap();
        let mut bytes = csr.into_bytes();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        f.enroll_csr(String::from_utf8_lossy(&bytes).into_owned());
    }
}

#[test]
fn a_valid_body_is_accepted() {
    // The mirror is not vacuous: the template it mangles enrolls when left intact.
    assert!(enroll_json(&with_capabilities(
        r#"{"cpu_cores":4,"bandwidth_kbps":20000,"uptime_hours":24}"#
    )));
}
