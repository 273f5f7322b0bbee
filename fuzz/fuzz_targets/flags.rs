//! Flag values with parsers of their own: listen address, HTTP duration buckets, capabilities.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = collector::cli::parse_listen_address(s);
    if let Ok(b) = collector::http::parse_buckets(s) {
        // Accepted buckets always make a well-formed kernel global.
        assert_eq!(collector::http::bounds_global(&b).len(), 8 * collector_common::http::MAX_DURATION_BOUNDS);
    }
    let _ = collector::caps::parse_keep(s);
});
