//! TLS capture (collector-ebpf/src/tls.rs): plaintext read from the TLS library's buffers by
//! uprobes on `SSL_read`/`SSL_write` and their `_ex` variants, fed to the same framer as
//! cleartext, one byte stream per direction of each TLS connection. Shared here: the keys of
//! its maps, which the daemon sweeps, and the socket a thread last received from, which names
//! the connection (ports and peer address).

/// A TLS connection: the process and the library's connection object (`SSL *`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TlsKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// A TCP socket as the `tcp:tcp_rcv_space_adjust` tracepoint shows it when a thread receives
/// from it (ports in host order, addresses IPv4-mapped for IPv4 sockets).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Peer {
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
    pub local_port: u16,
    pub peer_port: u16,
    /// Nonzero once set.
    pub set: u32,
}

/// Offsets of the fields of `tcp:tcp_rcv_space_adjust` the program reads (from its tracefs
/// format file; they differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvOffsets {
    pub sport: u32,
    pub dport: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

/// Size of the kernel's per-connection TLS state (a `TLS_CONNS` value): the daemon deletes
/// the entries of processes that exited without freeing their connections.
pub const TLS_CONN_SIZE: usize = 1096;

/// How many TLS connections are followed at once.
pub const MAX_TLS_CONNS: u32 = 16384;
