//! HTTP/2: exchanges (streams) of every HTTP/2 server and client on the host, from the frame
//! events the kernel programs send (`collector_common::http2::Event`). The kernel frames each
//! direction and sends the header blocks' bytes; the daemon follows each connection's HPACK
//! tables, pairs each request with its response and keeps only the few values it labels with
//! ([`assemble`]).
pub mod assemble;
mod conn;
pub mod events;
pub mod families;
pub mod hpack;
pub mod records;
