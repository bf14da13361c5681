//! The SOS report body: `POST /v1/reports` JSON (`sos::parse_report`), its signature check
//! against a registry, the canonical signed bytes (`sos::decode_canonical`) and the key
//! registry file format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sos::{
    Algorithm, KeyRegistry, PeerId, ReportSigner, ReporterVerifier, decode_canonical, parse_report,
};
use std::sync::OnceLock;

fn registry() -> &'static (ReportSigner, KeyRegistry) {
    static R: OnceLock<(ReportSigner, KeyRegistry)> = OnceLock::new();
    R.get_or_init(|| {
        let (signer, _) = ReportSigner::generate(PeerId(7), Algorithm::Ed25519).expect("keygen");
        let reg = KeyRegistry::from_entries(vec![signer.registry_entry()]).expect("registry");
        (signer, reg)
    })
}

fuzz_target!(|data: &[u8]| {
    let (signer, reg) = registry();
    if let Ok(report) = parse_report(data) {
        let canon = report.body.canonical_bytes();
        let back = decode_canonical(&canon).expect("a parsed report's canonical bytes decode");
        assert_eq!(back, report.body);
        let _ = reg.verify(report.body.reporter, &canon, &report.signature);
        // Re-signed by the registered key (when it is the reporter) it must verify.
        if report.body.reporter == signer.peer() {
            let signed = signer.sign(report.body.clone()).expect("sign");
            let again = parse_report(signed.to_json().as_bytes()).expect("own json parses");
            reg.verify(
                again.body.reporter,
                &again.body.canonical_bytes(),
                &again.signature,
            )
            .expect("own signature verifies");
        }
    }
    let _ = decode_canonical(data);
    let _ = KeyRegistry::from_json(data);
});
