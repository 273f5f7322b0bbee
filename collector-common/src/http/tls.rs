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
    /// When the socket last received TLS bytes (`bpf_ktime_get_ns`, from `TLS_ARRIVALS`), 0
    /// when not known: the start of a server's request (see `ArrivalKey`).
    pub arrived: u64,
}

/// A server socket that received a TLS handshake at the start of its stream, as the cleartext
/// ingress program sees it (ports in host order, the peer address IPv4-mapped for IPv4), the
/// key of `TLS_ARRIVALS`: when its last segment with payload arrived. A TLS server's request
/// starts then, as a cleartext one starts when its first segment arrives, rather than when the
/// server's thread has woken up, read and decrypted it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ArrivalKey {
    pub peer_addr: [u8; 16],
    pub local_port: u16,
    pub peer_port: u16,
    pub _pad: u32,
}

/// The IPv4-mapped IPv6 form of an IPv4 address (as `tcp:tcp_rcv_space_adjust` shows an IPv4
/// socket's addresses).
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
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

/// Size of a library call's value in `TLS_CALLS` (asserted by the kernel crate): its
/// connection, buffer, count address, direction and padding, and the socket it received from.
/// The daemon deletes the entries of exited processes there, in `TLS_RECV` (a thread's
/// socket, a `Peer`) and in `TLS_PROCS` (a process, one byte).
pub const TLS_CALL_SIZE: usize = 32 + core::mem::size_of::<Peer>();

/// How many TLS connections are followed at once.
pub const MAX_TLS_CONNS: u32 = 16384;
