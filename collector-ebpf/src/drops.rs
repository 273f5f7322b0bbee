//! Per-CPU counters of events the programs could not record (see `collector_common::drop`),
//! and the bounded-map insert that counts them.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use collector_common::drop;

#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop::COUNT, 0);

#[inline(always)]
pub fn count(reason: u32) {
    add(reason, 1);
}

#[inline(always)]
pub fn add(reason: u32, n: u64) {
    if let Some(p) = DROPS.get_ptr_mut(reason) {
        // This CPU's slot of entry `reason` of `DROPS` (array memory, valid as long as the map):
        // atomic, as a program nesting on this CPU may count the same reason meanwhile.
        crate::atomic::add(p, n);
    }
}

/// The value for `key`, inserting `zero` first if absent; counts a drop when the map is full.
#[inline(always)]
pub fn lookup_or_init<K, V>(map: &PerCpuHashMap<K, V>, key: &K, zero: &V, full: u32) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(key) {
        return Some(v);
    }
    // BPF_NOEXIST: another CPU may have inserted it meanwhile; that is fine.
    let _ = map.insert(key, zero, BPF_NOEXIST as u64);
    let v = map.get_ptr_mut(key);
    if v.is_none() {
        count(full);
    }
    v
}
