//! Requests to the privileged helper: whatever the bytes, the answer is bounded, and only a
//! request of one of the two shapes (a pid; a 64-digit lower-case hexadecimal container id) is
//! ever answered with data. The files read are this machine's `/proc` and an empty Docker
//! directory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|request: &[u8]| {
    let scope = collector::helper::Scope { procfs: "/proc".into(), docker_dir: "/nonexistent".into() };
    let answer = collector::helper::answer(&scope, request);
    assert!(!answer.is_empty() && answer.len() <= collector::helper::MAX_ANSWER);
    if answer[0] == 0 {
        let pid = request.len() == 5 && request[0] == 1;
        let docker = request.len() == 65 && request[0] == 2;
        assert!(pid || docker, "{request:?} answered");
        if pid {
            // Only OTEL_ variables leave the helper.
            assert!(answer[1..].split(|b| *b == 0).filter(|v| !v.is_empty()).all(|v| v.starts_with(b"OTEL_")));
        }
    }
});
