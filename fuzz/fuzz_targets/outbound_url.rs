#![no_main]
//! Fuzzes atoms_auth::input::outbound_url with text (bytes that are not UTF-8 cannot reach it).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = atoms_auth::input::outbound_url(text);
    }
});
