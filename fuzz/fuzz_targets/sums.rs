#![no_main]
//! The SHA256SUMS parser (GNU and BSD forms) never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(s) = switchyard::testing::Sha256Sums::parse(&text, "SHA256SUMS") {
        // What it accepted renders and parses back the same.
        let again = switchyard::testing::Sha256Sums::parse(&s.render(), "SHA256SUMS").unwrap();
        assert_eq!(again, s);
    }
});
