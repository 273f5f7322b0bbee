//! Disk: block-layer tracepoints.
//! - `block_rq_issue` → `block_rq_complete`: device service time per (device, operation),
//!   as a log2 histogram (`LATENCY`).
//! - `block_bio_queue`: bytes each cgroup submits per (device, operation) (`CGROUP_IO`),
//!   attributed to the task submitting the bio (see docs/metrics.md on writeback).
//! Field offsets come from the tracepoints' format files through the `*_OFFSETS` globals.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuHashMap},
    programs::TracePointContext,
};
use collector_common::{
    disk::{
        BlockTpOffsets, CgroupIoKey, CgroupIoVal, DevOp, InflightKey, InflightVal, LATENCY_BUCKETS, LatencyHist,
        classify_rwbs, latency_bucket,
    },
    drop,
};

use crate::drops::{self, lookup_or_init};

#[unsafe(no_mangle)]
static RQ_ISSUE_OFFSETS: Global<BlockTpOffsets> =
    Global::new(BlockTpOffsets { dev: 0, sector: 0, nr_sector: 0, rwbs: 0 });
#[unsafe(no_mangle)]
static RQ_COMPLETE_OFFSETS: Global<BlockTpOffsets> =
    Global::new(BlockTpOffsets { dev: 0, sector: 0, nr_sector: 0, rwbs: 0 });
#[unsafe(no_mangle)]
static BIO_QUEUE_OFFSETS: Global<BlockTpOffsets> =
    Global::new(BlockTpOffsets { dev: 0, sector: 0, nr_sector: 0, rwbs: 0 });

/// Requests issued and not yet completed. LRU so a lost completion cannot fill it for good;
/// a completion that finds no entry is counted as unmatched.
#[map]
static INFLIGHT: LruHashMap<InflightKey, InflightVal> = LruHashMap::with_max_entries(16384, 0);

#[map]
static LATENCY: PerCpuHashMap<DevOp, LatencyHist> = PerCpuHashMap::with_max_entries(1024, 0);

#[map]
static CGROUP_IO: PerCpuHashMap<CgroupIoKey, CgroupIoVal> = PerCpuHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn read_op(ctx: &TracePointContext, off: &BlockTpOffsets) -> u32 {
    let rwbs: [u8; 2] = unsafe { ctx.read_at(off.rwbs as usize) }.unwrap_or([0; 2]);
    classify_rwbs(rwbs[0], rwbs[1])
}

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let off = RQ_ISSUE_OFFSETS.load();
    let (Ok(dev), Ok(sector)) =
        (unsafe { ctx.read_at::<u32>(off.dev as usize) }, unsafe { ctx.read_at::<u64>(off.sector as usize) })
    else {
        return 0;
    };
    let key = InflightKey { dev, _pad: 0, sector };
    let val = InflightVal { issued_ns: unsafe { bpf_ktime_get_ns() }, op: read_op(&ctx, &off), _pad: 0 };
    // LRU insert only fails on an invalid map; eviction of the oldest entry is what bounds it.
    let _ = INFLIGHT.insert(&key, &val, 0);
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let off = RQ_COMPLETE_OFFSETS.load();
    let (Ok(dev), Ok(sector)) =
        (unsafe { ctx.read_at::<u32>(off.dev as usize) }, unsafe { ctx.read_at::<u64>(off.sector as usize) })
    else {
        return 0;
    };
    let key = InflightKey { dev, _pad: 0, sector };
    let Some(start) = INFLIGHT.get_ptr(&key) else {
        drops::count(drop::DISK_UNMATCHED_COMPLETION);
        return 0;
    };
    let start = unsafe { *start };
    let _ = INFLIGHT.remove(&key);
    let ns = now.saturating_sub(start.issued_ns);
    let hkey = DevOp { dev, op: start.op };
    // Read back through memory so the verifier sees the bound check on the index itself
    // (LLVM would otherwise move the clamp onto the input and leave the index unbounded).
    let bucket = latency_bucket(ns);
    let bucket = unsafe { core::ptr::read_volatile(&bucket) };
    if bucket >= LATENCY_BUCKETS {
        return 0;
    }
    let Some(h) = lookup_or_init(&LATENCY, &hkey, &ZERO_HIST, drop::DISK_HIST_FULL) else {
        return 0;
    };
    unsafe {
        (*h).buckets[bucket] += 1;
        (*h).sum_ns += ns;
    }
    0
}

static ZERO_HIST: LatencyHist = LatencyHist { buckets: [0; LATENCY_BUCKETS], sum_ns: 0 };
static ZERO_IO: CgroupIoVal = CgroupIoVal { bytes: 0, bios: 0 };

#[tracepoint(category = "block", name = "block_bio_queue")]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    let off = BIO_QUEUE_OFFSETS.load();
    let (Ok(dev), Ok(nr_sector)) =
        (unsafe { ctx.read_at::<u32>(off.dev as usize) }, unsafe { ctx.read_at::<u32>(off.nr_sector as usize) })
    else {
        return 0;
    };
    let op = read_op(&ctx, &off);
    let key = CgroupIoKey { cgroup_id: unsafe { bpf_get_current_cgroup_id() }, dev, op };
    let bytes = (nr_sector as u64) << 9;
    if let Some(v) = lookup_or_init(&CGROUP_IO, &key, &ZERO_IO, drop::CGROUP_IO_FULL) {
        unsafe {
            (*v).bytes += bytes;
            (*v).bios += 1;
        }
    }
    0
}
