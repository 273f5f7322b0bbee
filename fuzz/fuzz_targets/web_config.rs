//! `--web.config.file` text, and the Authorization header the endpoint decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Relative file names point into a directory that does not exist: only the parser runs.
        let _ = collector::webconfig::parse(text, std::path::Path::new("/nonexistent-fuzz-dir"));
    }
    let _ = collector::webconfig::decode_basic(data);
});
