#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    (ferrograd_fuzz::target("tokenizer_json").expect("a target").run)(bytes);
});
