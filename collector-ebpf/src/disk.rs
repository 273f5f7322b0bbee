//! Disk: block-layer tracepoints.
//! - `block_rq_issue` → `block_rq_complete`: device service time per (device, operation),
//!   as a log2 histogram (`LATENCY`).
//! - `block_bio_queue`: bytes each cgroup submits per (device, operation) (`CGROUP_IO`),
//!   attributed to the task submitting the bio (see docs/metrics.md on writeback).
//! Field offsets come from the tracepoints' format files through the `*_OFFSETS` globals.
use aya_ebpf::{
    EbpfContext as _, Global,
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

// SAFETY: unmangled so that the daemon can set the offsets by this name before load; no other
// symbol in the object has the name, so nothing else is bound to it.
#[unsafe(no_mangle)]
static RQ_ISSUE_OFFSETS: Global<BlockTpOffsets> =
    Global::new(BlockTpOffsets { dev: 0, sector: 0, nr_sector: 0, rwbs: 0 });
// SAFETY: unmangled so that the daemon can set the offsets by this name before load; the name
// is unique in the object.
#[unsafe(no_mangle)]
static RQ_COMPLETE_OFFSETS: Global<BlockTpOffsets> =
    Global::new(BlockTpOffsets { dev: 0, sector: 0, nr_sector: 0, rwbs: 0 });
// SAFETY: unmangled so that the daemon can set the offsets by this name before load; the name
// is unique in the object.
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

/// Loads a `T` at byte `off` of the tracepoint record. The offsets come from read-only globals
/// whose values the verifier knows, so direct context access works: each arm is a load at a
/// constant offset (the only kind the verifier allows on a context) and the verifier keeps
/// just the arm the offset selects. The loads are inline assembly because LLVM would merge
/// plain arms back into one load at `ctx + off`, which the verifier rejects. An offset outside
/// the arms (a kernel whose record is laid out otherwise) falls back to
/// `bpf_probe_read_kernel`, one helper call per field.
macro_rules! tp_field {
    ($ctx:expr, $off:expr, $t:ty, $w:literal, [$($o:literal)*]) => {{
        let p = $ctx.as_ptr();
        match $off {
            $($o => {
                let v: u64;
                // SAFETY: `p` is this program's tracepoint record, readable for the whole run.
                // `$o` is a constant of the arm list, aligned to the width `$w` and at least 8,
                // which is what the verifier demands of a tracepoint context load (it refuses
                // an unaligned one or one outside the record buffer before the program can
                // run), so the load stays inside the record buffer. The asm only reads: no
                // store, no stack, flags kept. Which arm runs is the offset the daemon took from
                // the tracepoint's format file at start-up, so the load reads that field.
                unsafe {
                    core::arch::asm!(
                        concat!("{v} = *(", $w, " *)({p} + ", stringify!($o), ")"),
                        v = out(reg) v,
                        p = in(reg) p,
                        options(readonly, nostack, preserves_flags),
                    )
                };
                Some(v as $t)
            })*
            // SAFETY: `read_at` copies size_of::<$t>() bytes at `off` of the record through
            // `bpf_probe_read_kernel`, which checks the address and fails instead of faulting;
            // the value is returned only when all bytes were copied, and any bytes are a valid
            // integer. `off` is the field's offset from the tracepoint's format file.
            off => unsafe { $ctx.read_at::<$t>(off as usize) }.ok(),
        }
    }};
}

#[inline(always)]
fn tp_u32(ctx: &TracePointContext, off: u32) -> Option<u32> {
    tp_field!(ctx, off, u32, "u32", [8 12 16 20 24 28 32 36 40 44 48])
}

#[inline(always)]
fn tp_u64(ctx: &TracePointContext, off: u32) -> Option<u64> {
    tp_field!(ctx, off, u64, "u64", [8 16 24 32 40 48])
}

#[inline(always)]
fn tp_u16(ctx: &TracePointContext, off: u32) -> Option<u16> {
    tp_field!(ctx, off, u16, "u16", [20 22 24 26 28 30 32 34 36 38 40 42 44 46 48 50 52 54 56])
}

#[inline(always)]
fn read_op(ctx: &TracePointContext, off: &BlockTpOffsets) -> u32 {
    let [r0, r1] = tp_u16(ctx, off.rwbs).unwrap_or(0).to_le_bytes();
    classify_rwbs(r0, r1)
}

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let off = RQ_ISSUE_OFFSETS.load();
    let (Some(dev), Some(sector)) = (tp_u32(&ctx, off.dev), tp_u64(&ctx, off.sector)) else {
        return 0;
    };
    let key = InflightKey { dev, _pad: 0, sector };
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program (it is
    // a helper call, hence the block); any program type may call it.
    let val = InflightVal { issued_ns: unsafe { bpf_ktime_get_ns() }, op: read_op(&ctx, &off), _pad: 0 };
    // LRU insert only fails on an invalid map; eviction of the oldest entry is what bounds it.
    let _ = INFLIGHT.insert(&key, &val, 0);
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    // SAFETY: `bpf_ktime_get_ns` takes no argument and touches no memory of the program.
    let now = unsafe { bpf_ktime_get_ns() };
    let off = RQ_COMPLETE_OFFSETS.load();
    let (Some(dev), Some(sector)) = (tp_u32(&ctx, off.dev), tp_u64(&ctx, off.sector)) else {
        return 0;
    };
    let key = InflightKey { dev, _pad: 0, sector };
    let Some(start) = INFLIGHT.get_ptr(&key) else {
        drops::count(drop::DISK_UNMATCHED_COMPLETION);
        return 0;
    };
    // SAFETY: `start` is this run's lookup result for `key`: a pointer into the preallocated
    // value memory of the LRU map, aligned and valid until the program returns (the map outlives
    // the run). Another CPU may evict and reuse the entry meanwhile; the copy then reads another
    // request's plain integers (any bits are a valid `InflightVal`): a wrong latency at worst,
    // never a read outside the map. It is copied before the `remove` below.
    let start = unsafe { *start };
    let _ = INFLIGHT.remove(&key);
    let ns = now.saturating_sub(start.issued_ns);
    let hkey = DevOp { dev, op: start.op };
    // Read back through memory so the verifier sees the bound check on the index itself
    // (LLVM would otherwise move the clamp onto the input and leave the index unbounded).
    let bucket = latency_bucket(ns);
    // SAFETY: reads the local `bucket` through a reference (valid, aligned, initialised, not
    // shared); volatile only so LLVM keeps the load the bound check below applies to.
    let bucket = unsafe { core::ptr::read_volatile(&bucket) };
    if bucket >= LATENCY_BUCKETS {
        return 0;
    }
    let Some(h) = lookup_or_init(&LATENCY, &hkey, &ZERO_HIST, drop::DISK_HIST_FULL) else {
        return 0;
    };
    // SAFETY: `h` is this CPU's slot of the `LATENCY` value for `hkey`, looked up in this run:
    // preallocated map memory, aligned and valid until the program returns. `bucket` was checked
    // against LATENCY_BUCKETS above. Only this CPU writes its slot, only this program writes the
    // map, and tracing programs do not nest on a CPU (the kernel skips one that would start while
    // another runs there), so no other write interleaves with these read-modify-writes.
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
    let (Some(dev), Some(nr_sector)) = (tp_u32(&ctx, off.dev), tp_u32(&ctx, off.nr_sector)) else {
        return 0;
    };
    let op = read_op(&ctx, &off);
    // SAFETY: `bpf_get_current_cgroup_id` takes no argument and only reads the current task's
    // cgroup; a tracepoint program may call it in any context.
    let key = CgroupIoKey { cgroup_id: unsafe { bpf_get_current_cgroup_id() }, dev, op };
    let bytes = (nr_sector as u64) << 9;
    if let Some(v) = lookup_or_init(&CGROUP_IO, &key, &ZERO_IO, drop::CGROUP_IO_FULL) {
        // SAFETY: `v` is this CPU's slot of the `CGROUP_IO` value for `key`, looked up in this
        // run: preallocated map memory, aligned and valid until the program returns, even if the
        // daemon deletes the expired entry meanwhile (these bytes are then lost with it). Only
        // this program writes the map, only this CPU its slot, and tracing programs do not nest
        // on a CPU, so no other write interleaves with the adds.
        unsafe {
            (*v).bytes += bytes;
            (*v).bios += 1;
        }
    }
    0
}
