//! Bytes read from the kernel maps, decoded as the pollers decode them: HTTP keys (process
//! name, peer address) and the labels made from them.
#![no_main]
use collector_common::http::HttpKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < std::mem::size_of::<HttpKey>() {
        return;
    }
    // SAFETY: HttpKey is #[repr(C)] plain data (integers and byte arrays): every bit pattern
    // is a valid value, as for the bytes the kernel writes into the map.
    let k: HttpKey = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let comm = collector::http::comm(&k.comm);
    let _ = collector::http::service_name(comm, None);
    let _ = collector::http::peer_address(&k);
});
