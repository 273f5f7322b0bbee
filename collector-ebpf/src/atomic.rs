//! Atomic adds on map memory. Per-CPU values are written by one CPU, but programs nest on a
//! CPU (a softirq's `cgroup_skb` ingress run can interrupt a process-context egress run, or a
//! uprobe's), and a plain `+=` (a load and a store) would then lose the nested add. An atomic
//! add on a line no other CPU writes costs a few nanoseconds more than the plain one.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

/// Adds `v` to the `u64` at `p`, atomically.
#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // SAFETY: callers pass a pointer to a `u64` in a map value they looked up in this run (a
    // slot of a per-CPU map, or a value shared by CPUs): 8-byte aligned, and valid until the
    // program returns (map memory lives as long as the map; an entry the daemon deletes
    // meanwhile only loses the add). The add is atomic, so other CPUs, or a program nesting on
    // this one, adding to the same word lose nothing.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}
