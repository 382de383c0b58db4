#![no_main]
//! The extractor on arbitrary bytes (as .tar.gz, and as a plain tar wrapped
//! in gzip): it may refuse, never panic, and never write beside its
//! destination.
use libfuzzer_sys::fuzz_target;
use switchyard::testing::UnpackLimits;

fuzz_target!(|data: &[u8]| {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 1000, strip_top_dir: Some(true), ..UnpackLimits::default() };
    let _ = switchyard::testing::unpack_tar_gz(data, &dest, &limits);
    let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("dest")], "wrote beside the destination");
});
