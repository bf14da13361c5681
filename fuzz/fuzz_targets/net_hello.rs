//! net's hello decoder, compiled from the runtime's own source file (`crates/net/src/hello.rs`
//! is crate-private), fed exactly as the connection reader does: the fixed head, then the
//! length it announces.
#![no_main]
#![allow(dead_code)]

#[path = "../../crates/net/src/hello.rs"]
mod hello;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(hello::HEAD_LEN)];
    if let Ok(len) = hello::total_len(head) {
        assert!(len <= hello::MAX_LEN);
    }
    if let Ok((h, used)) = hello::decode(data) {
        assert!(used <= hello::MAX_LEN);
        let again = h.encode();
        assert_eq!(&again[..], &data[..used], "hello round trip differs");
    }
});
