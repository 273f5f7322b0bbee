//! Block-layer data: per-(device, operation) latency histograms and per-cgroup I/O bytes.

/// Histogram buckets: bucket `i` counts requests that took at most 2^i microseconds
/// (1 µs, 2 µs, 4 µs … 2^26 µs ≈ 67 s); the last bucket counts everything slower (+Inf).
pub const LATENCY_BUCKETS: usize = 28;

/// Operation classes, from the tracepoint's `rwbs` string.
pub mod op {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const DISCARD: u32 = 2;
    pub const FLUSH: u32 = 3;
    pub const OTHER: u32 = 4;
    pub const COUNT: u32 = 5;
    pub const NAMES: [&str; COUNT as usize] = ["read", "write", "discard", "flush", "other"];
}

/// Kernel-encoded `dev_t` (major << 20 | minor) and operation class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DevOp {
    pub dev: u32,
    pub op: u32,
}

/// One request in flight, keyed by where it starts on the device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InflightKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InflightVal {
    pub issued_ns: u64,
    pub op: u32,
    pub _pad: u32,
}

/// Per-CPU latency histogram of one (device, operation). The count is the sum of buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LatencyHist {
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self { buckets: [0; LATENCY_BUCKETS], sum_ns: 0 }
    }
}

/// Bytes submitted by one cgroup to one device, per operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CgroupIoKey {
    pub cgroup_id: u64,
    pub dev: u32,
    pub op: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupIoVal {
    pub bytes: u64,
    pub bios: u64,
}

/// Byte offsets of the fields the programs read, taken from the tracepoints' format files at
/// start-up (the layout changes between kernels: `rwbs` grew from 8 to 10 bytes in 6.x).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockTpOffsets {
    pub dev: u32,
    pub sector: u32,
    pub nr_sector: u32,
    pub rwbs: u32,
}

/// Index of the bucket for a latency in nanoseconds: the smallest `i` with
/// `ns <= 2^i µs`, capped at the +Inf bucket. Branch-light so it verifies without loops.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> usize {
    let us_ceil = ns.div_ceil(1000);
    if us_ceil <= 1 {
        return 0;
    }
    let idx = (64 - (us_ceil - 1).leading_zeros()) as usize;
    if idx >= LATENCY_BUCKETS - 1 { LATENCY_BUCKETS - 1 } else { idx }
}

/// Upper bound (seconds) of bucket `i`; `None` for the +Inf bucket.
pub fn bucket_upper_seconds(i: usize) -> Option<f64> {
    if i >= LATENCY_BUCKETS - 1 { None } else { Some((1u64 << i) as f64 * 1e-6) }
}

/// Operation class from the tracepoint's `rwbs` characters (see the kernel's `blk_fill_rwbs`:
/// an optional leading `F` for a preflush, then the operation letter).
#[inline(always)]
pub fn classify_rwbs(c0: u8, c1: u8) -> u32 {
    let c = if c0 == b'F' { c1 } else { c0 };
    match c {
        b'R' => op::READ,
        b'W' => op::WRITE,
        b'D' => op::DISCARD,
        // "FF": a flush request; a lone "F" (preflush with no other letters) is a flush too.
        b'F' | 0 if c0 == b'F' => op::FLUSH,
        _ => op::OTHER,
    }
}

crate::impl_pod!(DevOp, InflightKey, InflightVal, LatencyHist, CgroupIoKey, CgroupIoVal, BlockTpOffsets);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_le_powers_of_two_microseconds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1000), 0);
        assert_eq!(latency_bucket(1001), 1);
        assert_eq!(latency_bucket(2000), 1);
        assert_eq!(latency_bucket(2001), 2);
        assert_eq!(latency_bucket(4000), 2);
        assert_eq!(latency_bucket(1_000_000), 10); // 1 ms <= 1024 µs
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for i in 0..LATENCY_BUCKETS - 1 {
            let ub_ns = (1u64 << i) * 1000;
            assert_eq!(latency_bucket(ub_ns), i, "upper bound of {i} belongs to it");
            assert_eq!(latency_bucket(ub_ns + 1), i + 1);
        }
    }

    #[test]
    fn rwbs_classes() {
        assert_eq!(classify_rwbs(b'R', 0), op::READ);
        assert_eq!(classify_rwbs(b'W', b'S'), op::WRITE);
        assert_eq!(classify_rwbs(b'F', b'W'), op::WRITE);
        assert_eq!(classify_rwbs(b'F', b'F'), op::FLUSH);
        assert_eq!(classify_rwbs(b'F', 0), op::FLUSH);
        assert_eq!(classify_rwbs(b'D', b'E'), op::DISCARD);
        assert_eq!(classify_rwbs(b'N', 0), op::OTHER);
    }
}
