//! libFuzzer entry for `tollgate::fuzz_targets`'s `compact_session` target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = tollgate::fuzz_targets::TARGETS
        .iter()
        .find(|(name, _)| *name == "compact_session")
        .expect("a known target");
    target(data);
});
