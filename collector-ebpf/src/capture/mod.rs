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
