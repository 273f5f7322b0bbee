//! Cgroup paths → identities (container id, systemd unit, pod uid); pod names → owners;
//! environments and Docker configs → declared names.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let id = collector::cgroup::identify(path);
    // Whatever the path, a container id is 64 hex characters or nothing, and the labels the
    // pollers derive from it never panic.
    assert!(id.container_id.is_empty() || id.container_id.len() == 64);
    let _ = collector::cgroup::Labels::of(Some(&id));
    let _ = collector::http::service_name(None, Some(&id));
    assert!(id.pod_uid.as_ref().is_none_or(|u| u.len() == 32 || u.len() == 36));
    if let Some(owner) = collector::identity::owner_of_pod(path) {
        assert!(!owner.is_empty() && path.starts_with(owner));
    }
    let _ = collector::identity::parse_environ(path.as_bytes());
    let _ = collector::identity::parse_docker_config(path.as_bytes());
});
