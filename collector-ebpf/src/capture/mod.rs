//! The protocol-neutral capture, below the protocols (`collector_common::capture` is its pure
//! half: the `Stream` seam, the reorder stash's blocks). Layers, one way: the entry programs
//! (`skb.rs`, `tls.rs`) use the protocols (`http1.rs`), which use this; nothing here names a
//! protocol.
//! - `packet`: the IP/TCP headers, the packet's bytes and socket, where a segment lies;
//! - `conn`: who a connection is counted for, a TCP connection's state in its socket's local
//!   storage, marks of sockets not followed, the sockets' creating processes, the claim;
//! - `detect`: what a stream's first bytes are (HTTP/1 request or status line, the HTTP/2
//!   preface, a TLS handshake), in one place;
//! - `segment`: the packet driver (segments in arrival order, by stream position);
//! - `plain`: the plaintext driver (TLS library calls, in order);
//! - `stash`: bytes received beyond a gap, kept until it is filled;
//! - `backlog`: bytes that arrived before their connection's socket existed (a full accept
//!   queue, TCP Fast Open);
//! - `arrivals`: when TLS server sockets received, for the TLS capture's request start;
//! - `record`: the histograms and the in-flight gauge.
pub mod arrivals;
pub mod backlog;
pub mod conn;
pub mod detect;
pub mod packet;
pub mod plain;
pub mod record;
pub mod segment;
pub mod stash;

/// Stores `value` as `key`'s in an LRU hash map: in place when the key has an entry (an update
/// takes a new element from the map's free lists and frees the old one, on every call), else
/// inserted. For entries that one program at a time writes (a thread's, a socket's), which a
/// reader copies out whole or a word at a time.
#[inline(always)]
pub fn put<K, V: Copy>(map: &aya_ebpf::maps::LruHashMap<K, V>, key: &K, value: &V) {
    match map.get_ptr_mut(key) {
        // SAFETY: `key`'s value in `map` (map memory, aligned, valid until the program returns),
        // written by one program at a time (the caller's entries are).
        Some(p) => unsafe { *p = *value },
        None => {
            let _ = map.insert(key, value, 0);
        }
    }
}
