//! Requests to the privileged helper: whatever the bytes, the answer is bounded, and only a
//! request of one of the two shapes (a pid; a 64-digit lower-case hexadecimal container id) is
//! ever answered with data. The files read are this machine's `/proc` and an empty Docker
//! directory. The HTTPS capture's requests (no capture loaded here: nothing is attached) pass
//! on a descriptor only of a regular ELF file, and never of one that is not readable as such.
#![no_main]
use std::{io::Read as _, sync::Mutex};

use collector::tls::privileged::{OPEN, Privileged, is_request};
use libfuzzer_sys::fuzz_target;

static TLS: Mutex<Option<Privileged>> = Mutex::new(None);

fuzz_target!(|request: &[u8]| {
    if is_request(request) {
        let mut tls = TLS.lock().unwrap();
        let p = tls.get_or_insert_with(|| Privileged::new(std::path::Path::new("/proc")));
        let reply = p.answer(request, None);
        if let Some(fd) = reply.fd {
            assert_eq!(reply.code, 0);
            assert_eq!(request[0], OPEN, "{request:?} passed a descriptor");
            let mut f = std::fs::File::from(fd);
            assert!(f.metadata().unwrap().is_file());
            let mut magic = [0u8; 4];
            f.read_exact(&mut magic).unwrap();
            assert_eq!(&magic, b"\x7fELF");
        }
        return;
    }
    let scope =
        collector::helper::Scope { procfs: "/proc".into(), docker_dir: "/nonexistent".into(), tls_programs: Vec::new() };
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
