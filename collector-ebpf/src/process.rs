//! Process names by process id (`PROCESS_NAMES`, see `collector_common::process`), for
//! `http_sock_create` to name sockets after their process rather than their thread.
//! - `sched:sched_process_exec`: the name a process takes from its new executable (the
//!   current task's `comm`, set before the tracepoint fires; the task is the process's main
//!   thread from then on).
//! - `task:task_rename`: a task renamed (prctl `PR_SET_NAME`, `/proc/<pid>/comm`). Only a main
//!   thread's name is its process's: recorded when the renamed task's id is the current
//!   process's id, or is already a key (another process's main thread); other threads' renames
//!   change nothing.
use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::BPF_EXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use collector_common::process::{MAX_PROCESSES, NO_FIELD, RenameOffsets};

// SAFETY: unmangled so that the daemon can set the offsets by this name before load; the name
// is unique in the object.
#[unsafe(no_mangle)]
static RENAME_OFFSETS: Global<RenameOffsets> = Global::new(RenameOffsets { pid: NO_FIELD, newcomm: NO_FIELD });

/// Process id → name (NUL-padded `comm`).
#[map]
pub static PROCESS_NAMES: LruHashMap<u32, [u8; 16]> = LruHashMap::with_max_entries(MAX_PROCESSES, 0);

/// The name of the current task's process, when known.
#[inline(always)]
pub fn current_process_name() -> Option<[u8; 16]> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once; the map's values are plain bytes.
    unsafe { PROCESS_NAMES.get(&tgid) }.copied()
}

#[tracepoint]
pub fn http_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Ok(comm) = bpf_get_current_comm() {
        let _ = PROCESS_NAMES.insert(&tgid, &comm, 0);
    }
    0
}

#[tracepoint]
pub fn http_process_rename(ctx: TracePointContext) -> u32 {
    let off = RENAME_OFFSETS.load();
    if off.newcomm == NO_FIELD {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let renamed = if off.pid == NO_FIELD {
        id as u32
    } else {
        // SAFETY: a kernel read of 4 bytes of the tracepoint record at the offset its format
        // file gives; the helper checks the access and fails instead of faulting.
        match unsafe { bpf_probe_read_kernel((ctx.as_ptr() as *const u8).wrapping_add(off.pid as usize) as *const i32) }
        {
            Ok(p) => p as u32,
            Err(_) => return 0,
        }
    };
    // SAFETY: as above, the 16 bytes of `newcomm`.
    let Ok(name) = (unsafe {
        bpf_probe_read_kernel((ctx.as_ptr() as *const u8).wrapping_add(off.newcomm as usize) as *const [u8; 16])
    }) else {
        return 0;
    };
    // The current process's main thread: recorded. Another task: only updates a process
    // already known (its id is a key only if it is a main thread).
    let flags = if renamed == tgid { 0 } else { BPF_EXIST as u64 };
    let _ = PROCESS_NAMES.insert(&renamed, &name, flags);
    0
}
