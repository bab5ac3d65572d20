#![no_main]
//! Fuzzes atoms_auth::input::device: the input is split at NUL bytes into the user agent,
//! the device name, the platform and the device id.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let mut next = || fields.next().unwrap_or_default().to_owned();
    let (agent, name, platform, id) = (next(), next(), next(), next());
    let _ = atoms_auth::input::device(&agent, &name, &platform, &id);
});
