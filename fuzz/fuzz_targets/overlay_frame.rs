//! The overlay frame decoder (`overlay::wire::decode_frame`) on any bytes, as a connection
//! reader sees them: frames are decoded one after another until an error or the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay::wire::{DEFAULT_MAX_FRAME, decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((msg, used)) = decode_frame(rest, DEFAULT_MAX_FRAME) {
        assert!(used > 0 && used <= rest.len());
        // Whatever decodes re-encodes (canonically, so never longer: postcard also accepts
        // overlong varints) to bytes that decode to the same message.
        let mut again = Vec::new();
        encode_frame(&msg, DEFAULT_MAX_FRAME, &mut again).expect("a decoded frame re-encodes");
        assert!(again.len() <= used, "re-encoding grew the frame");
        let (back, n) = decode_frame(&again, DEFAULT_MAX_FRAME).expect("re-encoded frame decodes");
        assert_eq!(n, again.len());
        assert_eq!(back, msg, "decode/encode round trip differs");
        rest = &rest[used..];
    }
    // A small cap must refuse long frames without reading them.
    let _ = decode_frame(data, 64);
});
