#![no_main]
//! Fuzzes atoms_auth::input::basic_credentials with raw bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = atoms_auth::input::basic_credentials(data);
});
