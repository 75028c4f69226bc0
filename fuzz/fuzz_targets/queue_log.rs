#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgfleet_fuzz::checks::queue_log(data));
