#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    (ferrograd_fuzz::target("gpt2_config").expect("a target").run)(bytes);
});
