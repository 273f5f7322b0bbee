//! Tracepoint `format` files from tracefs (field offsets for the disk programs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = collector::bpf::parse_format(text);
});
