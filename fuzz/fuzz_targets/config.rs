#![no_main]
//! The configuration parser never panics, and locates what it refuses.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = switchyard::testing::Config::parse(&text, std::path::Path::new("fuzz.toml"));
});
