//! Process names. A socket is named after its process (`service_name`), not after the thread
//! that created it: thread names are often a pool's (`tokio-rt-worker`, `http-nio-8080-e`,
//! `worker-3`). The process's name is its main thread's `comm` (the executable's basename, up
//! to 15 bytes, until the main thread renames itself). Programs that create sockets cannot
//! read another thread's `comm` on the kernels supported, so the kernel keeps the names by
//! process id in `PROCESS_NAMES`: the daemon fills it from `/proc/<pid>/comm` at start-up,
//! `sched:sched_process_exec` records the name a process gets from its new executable and
//! `task:task_rename` a rename of a main thread.

/// Entries of `PROCESS_NAMES` (an LRU map: the least recently named process goes first).
pub const MAX_PROCESSES: u32 = 32768;

/// A field the tracepoint record does not have on this kernel.
pub const NO_FIELD: u32 = u32::MAX;

/// Field offsets of the `task:task_rename` record, from its tracefs format file at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenameOffsets {
    /// `pid`: the renamed task. [`NO_FIELD`] where the record has none (the current task is
    /// the renamed one).
    pub pid: u32,
    /// `newcomm` (16 bytes); [`NO_FIELD`] when the format was not read (nothing is recorded).
    pub newcomm: u32,
}

impl Default for RenameOffsets {
    fn default() -> Self {
        Self { pid: NO_FIELD, newcomm: NO_FIELD }
    }
}

crate::impl_pod!(RenameOffsets);
