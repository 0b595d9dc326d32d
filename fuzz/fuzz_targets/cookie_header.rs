//! libFuzzer entry for `tollgate::fuzz_targets`'s `cookie_header` target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = tollgate::fuzz_targets::TARGETS
        .iter()
        .find(|(name, _)| *name == "cookie_header")
        .expect("a known target");
    target(data);
});
