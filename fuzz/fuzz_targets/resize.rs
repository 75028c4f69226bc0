#![no_main]
libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys aborts on any panic, even one the code catches; imgfleet catches a
    // decoder's panic on purpose (see codec.rs), so only a panic that escapes counts.
    init: std::panic::set_hook(Box::new(|info| eprintln!("{info}"))),
    |data: &[u8]| {
        imgfleet_fuzz::checks::resize(data);
    }
);
