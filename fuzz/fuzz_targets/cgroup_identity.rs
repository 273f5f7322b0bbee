//! Cgroup paths → identities (container id, systemd unit).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let id = collector::cgroup::identify(path);
    // Whatever the path, a container id is 64 hex characters or nothing, and the labels the
    // pollers derive from it never panic.
    assert!(id.container_id.is_empty() || id.container_id.len() == 64);
    let _ = collector::cgroup::labels(Some(&id));
    let _ = collector::http::service_name(None, Some(&id));
});
