//! libFuzzer entry for `tollgate::fuzz_targets`'s `path_readings` target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = tollgate::fuzz_targets::TARGETS
        .iter()
        .find(|(name, _)| *name == "path_readings")
        .expect("a known target");
    target(data);
});
