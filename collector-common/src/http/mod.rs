//! Socket-level HTTP/1.x, the part shared by the kernel programs (collector-ebpf/src/http.rs)
//! and the daemon:
//! - `framer`: follows both byte streams of a connection by TCP sequence number and turns them
//!   into request/response exchanges; pure code, compiled into the kernel programs.
//! - `tls`: the keys of the TLS capture's maps (plaintext at the TLS library, fed to the same
//!   framer).
//! - `stash`: the reorder stash, blocks of received bytes that arrived out of order while the
//!   framer waits for a missing one (the kernel's `HTTP_STASH` map, swept by the daemon).
//! - `sim` (tests, and the `sim` feature for the fuzz target): a host-side driver that feeds
//!   the framer segments the way the kernel programs do.
//! - here: the keys and values of the maps the programs write and the daemon reads (the
//!   aggregated histograms `HttpKey`/`HttpHist`, with the daemon's duration bounds and the
//!   fixed size bounds, and the server-side in-flight gauge `ActiveKey`), and the method table.

mod bytes;
pub mod framer;
mod parse;
mod stream;

pub use bytes::{byte_at, le, window8};
pub use parse::known_method;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests_framer;
#[cfg(test)]
mod tests_httparse;
pub mod tls;

/// Upper bounds (ns) of the duration histogram come from userspace (`DURATION_BOUNDS_NS`);
/// at most this many, plus the +Inf bucket.
pub const MAX_DURATION_BOUNDS: usize = 32;

/// Values the kernel compares arithmetically stay below this (2^62): unused bound slots hold it,
/// durations and sizes are capped just under it.
pub const BOUND_CAP: u64 = 1 << 62;

/// Body size buckets: bucket `i` counts bodies of at most `SIZE_BOUNDS[i]` bytes; the last
/// bucket is +Inf.
pub const SIZE_BOUNDS: [u64; 13] =
    [0, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20];
pub const SIZE_BUCKETS: usize = SIZE_BOUNDS.len() + 1;

/// Request methods (OpenTelemetry's known methods; everything else is `_OTHER`).
pub mod method {
    pub const OTHER: u8 = 0;
    pub const GET: u8 = 1;
    pub const HEAD: u8 = 2;
    pub const POST: u8 = 3;
    pub const PUT: u8 = 4;
    pub const DELETE: u8 = 5;
    pub const CONNECT: u8 = 6;
    pub const OPTIONS: u8 = 7;
    pub const TRACE: u8 = 8;
    pub const PATCH: u8 = 9;
    pub const COUNT: usize = 10;
    pub const NAMES: [&str; COUNT] =
        ["_OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

    /// Method id from the first bytes of the request line, packed big-endian into a u64
    /// (first byte in the top byte), up to the space that ends the method.
    #[inline(always)]
    pub fn from_word(w: u64, len: u32) -> u8 {
        const fn pack(s: &[u8]) -> u64 {
            let mut v = 0u64;
            let mut i = 0;
            while i < s.len() {
                v = (v << 8) | s[i] as u64;
                i += 1;
            }
            v
        }
        match (len, w) {
            (3, x) if x == pack(b"GET") => GET,
            (4, x) if x == pack(b"HEAD") => HEAD,
            (4, x) if x == pack(b"POST") => POST,
            (3, x) if x == pack(b"PUT") => PUT,
            (6, x) if x == pack(b"DELETE") => DELETE,
            (7, x) if x == pack(b"CONNECT") => CONNECT,
            (7, x) if x == pack(b"OPTIONS") => OPTIONS,
            (5, x) if x == pack(b"TRACE") => TRACE,
            (5, x) if x == pack(b"PATCH") => PATCH,
            _ => OTHER,
        }
    }
}

/// Which side of the exchange a histogram entry describes.
pub const SIDE_SERVER: u8 = 0;
pub const SIDE_CLIENT: u8 = 1;
/// `HttpKey::scheme` and `ActiveKey::scheme`: how the exchange travelled (the `url_scheme`
/// label).
pub const SCHEME_HTTP: u8 = 0;
pub const SCHEME_HTTPS: u8 = 1;
pub const SCHEME_NAMES: [&str; 2] = ["http", "https"];

/// The protocol version rides in the high nibble of `HttpKey::scheme` (the scheme is the low
/// one): `network_protocol_version`, from the request line for HTTP/1.x.
pub const VERSION_SHIFT: u8 = 4;
pub const SCHEME_MASK: u8 = 0x0f;
pub const VERSION_1_0: u8 = 1;
pub const VERSION_1_1: u8 = 2;
pub const VERSION_2: u8 = 3;
/// `network_protocol_version` values by version (0: not known).
pub const VERSION_NAMES: [&str; 4] = ["", "1.0", "1.1", "2"];

/// `method` value of the overflow entry that takes requests whose own entry found the map full.
pub const OVERFLOW_METHOD: u8 = 0xff;

/// Key of one aggregated histogram: who served or made the request and what it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct HttpKey {
    /// Cgroup of the socket.
    pub cgroup_id: u64,
    /// The name (`comm`, NUL-padded) recorded with the socket when it was created
    /// (`http_sock_create`; an accepted connection carries its listening socket's); all zero
    /// for a socket created before the collector started, and in the overflow entries.
    pub comm: [u8; 16],
    /// Status code of the final response (100..=599), 0 when it was not a valid code.
    pub status: u16,
    /// Server side: the local port. Client side: the peer's port.
    pub port: u16,
    pub method: u8,
    /// `SIDE_SERVER` or `SIDE_CLIENT`.
    pub side: u8,
    /// Client side: 4 or 6, with the peer address in `addr`; server side 0.
    pub family: u8,
    /// `SCHEME_HTTP` (read from TCP segments) or `SCHEME_HTTPS` (plaintext at the TLS library).
    pub scheme: u8,
    pub addr: [u8; 16],
}

/// Aggregated histograms of one key. Updated with atomic adds (the map is shared by CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpHist {
    pub duration: [u64; MAX_DURATION_BOUNDS + 1],
    pub duration_sum_ns: u64,
    pub req_size: [u64; SIZE_BUCKETS],
    pub req_size_sum: u64,
    pub resp_size: [u64; SIZE_BUCKETS],
    pub resp_size_sum: u64,
}

impl HttpHist {
    pub const ZERO: HttpHist = HttpHist {
        duration: [0; MAX_DURATION_BOUNDS + 1],
        duration_sum_ns: 0,
        req_size: [0; SIZE_BUCKETS],
        req_size_sum: 0,
        resp_size: [0; SIZE_BUCKETS],
        resp_size_sum: 0,
    };
}

/// Key of the in-flight request gauge (server side).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ActiveKey {
    pub cgroup_id: u64,
    pub port: u16,
    /// As `HttpKey::scheme`.
    pub scheme: u8,
    pub _pad: [u8; 5],
}

/// `SIZE_BOUNDS` padded to a power of two with `BOUND_CAP` (above every value), for
/// `bucket_search`; the kernel programs read their copy of it (`SIZE_BOUNDS_B`).
pub const SIZE_BOUNDS_PADDED: [u64; 16] = {
    let mut b = [BOUND_CAP; 16];
    let mut i = 0;
    while i < SIZE_BOUNDS.len() {
        b[i] = SIZE_BOUNDS[i];
        i += 1;
    }
    b
};

/// Bucket of `v` among `N` increasing bounds (`N` a power of two; unused slots `BOUND_CAP`),
/// the number of bounds below `v`: a binary search without branches, `log2(N) + 1` reads of
/// `bound(i)` (always `i < N`) instead of `N` — the kernel programs use it for every recorded
/// exchange (three histograms), reading the bounds volatile. Each read's sign bit of
/// `bound - v` says `v > bound` (bounds and values stay below 2^62).
#[inline(always)]
pub fn bucket_search<const N: usize>(bound: impl Fn(usize) -> u64, v: u64) -> u64 {
    const { assert!(N.is_power_of_two()) };
    let v = if v >= BOUND_CAP { BOUND_CAP - 1 } else { v };
    // Invariant: every bound before `idx` is below `v`; `idx + step - 1 < N` at each step.
    let mut idx = 0u64;
    let mut step = N as u64 / 2;
    while step > 0 {
        idx += (bound((idx + step - 1) as usize & (N - 1)).wrapping_sub(v) >> 63) * step;
        step /= 2;
    }
    idx + (bound(idx as usize & (N - 1)).wrapping_sub(v) >> 63)
}

/// Index of the size bucket for `n` bytes: the number of `SIZE_BOUNDS` below `n`. The
/// host-side statement of the bucketing (the daemon's HTTP/2 records use it); the kernel
/// programs search their copy of `SIZE_BOUNDS_PADDED` the same way.
#[inline(always)]
pub fn size_bucket(n: u64) -> usize {
    bucket_search::<16>(|i| SIZE_BOUNDS_PADDED[i], n) as usize
}

crate::impl_pod!(
    HttpKey,
    HttpHist,
    ActiveKey,
    crate::capture::stash::BlockKey,
    crate::capture::stash::Block,
    tls::TlsKey,
    tls::Peer
);

#[cfg(test)]
mod tests {
    use super::*;

    fn word(s: &[u8]) -> u64 {
        s.iter().fold(0u64, |w, b| (w << 8) | *b as u64)
    }

    #[test]
    fn methods() {
        assert_eq!(method::from_word(word(b"GET"), 3), method::GET);
        assert_eq!(method::from_word(word(b"OPTIONS"), 7), method::OPTIONS);
        assert_eq!(method::from_word(word(b"PROPFIND"), 8), method::OTHER);
        assert_eq!(method::from_word(word(b"GE"), 2), method::OTHER);
        assert_eq!(method::NAMES[method::PATCH as usize], "PATCH");
    }

    #[test]
    fn size_buckets() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(1), 1);
        assert_eq!(size_bucket(64), 1);
        assert_eq!(size_bucket(65), 2);
        assert_eq!(size_bucket(10 << 20), 10);
        assert_eq!(size_bucket(u64::MAX), SIZE_BUCKETS - 1);
    }

    /// The search against the count it stands for, the number of bounds below the value, for
    /// bound sets of every length up to 32 (unused slots `BOUND_CAP`), values at, around and
    /// between each bound, and the edges.
    #[test]
    fn bucket_search_counts_the_bounds_below() {
        fn check<const N: usize>(bounds: &[u64; N], v: u64) {
            let linear = bounds.iter().filter(|b| **b < v.min(BOUND_CAP - 1)).count() as u64;
            assert_eq!(bucket_search::<N>(|i| bounds[i], v), linear, "bounds {bounds:?}, v {v}");
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for used in 0..=32usize {
            for _ in 0..20 {
                let mut b = [BOUND_CAP; 32];
                let mut at = next() % 4;
                for slot in b.iter_mut().take(used) {
                    *slot = at;
                    at += 1 + next() % 1_000_000;
                }
                let mut values = vec![0, 1, BOUND_CAP - 1, BOUND_CAP, u64::MAX];
                for x in b.iter().take(used) {
                    values.extend([x.saturating_sub(1), *x, x + 1]);
                }
                values.extend((0..8).map(|_| next() % (at + 2)));
                for v in values {
                    check(&b, v);
                    if used <= 16 {
                        check::<16>(b[..16].try_into().unwrap(), v);
                    }
                }
            }
        }
        for n in [0, 1, 63, 64, 65, 255, 256, 257, 1 << 20, (1 << 20) + 1, 256 << 20, (256 << 20) + 1, u64::MAX] {
            check(&SIZE_BOUNDS_PADDED, n);
            assert_eq!(size_bucket(n), SIZE_BOUNDS.iter().filter(|b| **b < n).count());
        }
    }
}
