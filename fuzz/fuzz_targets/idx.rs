#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    (ferrograd_fuzz::target("idx").expect("a target").run)(bytes);
});
