//! Test fixture, not part of the collector: a `tc` ingress program that impairs the TCP data
//! segments arriving on a veth, deterministically, so that the loss tests
//! (collector/tests/loss.rs) can check exact counts under loss, reordering and duplication.
//! `CONFIG[0]` is the mode, `CONFIG[1]` the period N: every Nth data segment (a TCP segment with
//! payload, retransmissions included) is dropped, duplicated, or held back and delivered after
//! the next data segment of its connection (two adjacent segments swapped). `STATS` counts what
//! was done, so a test can tell that faults were injected.
//!
//! Ingress, not egress: the sending stack hands `tc` egress whole GSO super-packets (up to
//! 64 KiB), which the device segments afterwards; the receiving end of a veth without
//! segmentation offloads gets the segments one by one, as from a real network.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map},
    maps::Array,
    programs::TcContext,
};

const MODE_OFF: u32 = 0;
const MODE_DROP: u32 = 1;
const MODE_DUP: u32 = 2;
const MODE_SWAP: u32 = 3;

/// Index into STATS.
const DATA_SEGMENTS: u32 = 0;
const DROPPED: u32 = 1;
const DUPLICATED: u32 = 2;
const SWAPPED: u32 = 3;

/// Marks the copies this program sends itself (they pass through it again).
const OWN_MARK: u32 = 0x5eed_f417;
/// Largest packet that can be held back (an Ethernet frame of a 1500-byte MTU fits).
const HOLD_MAX: usize = 2048;

#[map]
static CONFIG: Array<u32> = Array::with_max_entries(2, 0);
#[map]
static STATS: Array<u64> = Array::with_max_entries(4, 0);

#[repr(C)]
pub struct Held {
    /// Length of the held frame; 0 when none is held.
    len: u32,
    _pad: u32,
    /// Source and destination port of its connection.
    ports: u32,
    _pad2: u32,
    frame: [u8; HOLD_MAX],
}

#[map]
static HELD: Array<Held> = Array::with_max_entries(1, 0);

/// A copy length in 1..=HOLD_MAX (the caller checked) in a form the verifier of 5.10 can
/// bound: it learns nothing from `len != 0`, and checks on a 32-bit copy of a register do not
/// bound the register. `len - 1` goes through memory (so LLVM cannot drop the mask) and is
/// masked, then 1 is added back: 1..=HOLD_MAX in one 64-bit register.
#[inline(always)]
fn copy_len(len: usize) -> u64 {
    // SAFETY: reads a temporary local through a reference (valid, aligned, initialised, not
    // shared); volatile only so LLVM keeps the mask the verifier needs.
    (unsafe { core::ptr::read_volatile(&(len as u64 - 1)) } & (HOLD_MAX as u64 - 1)) + 1
}

fn bump(i: u32) {
    if let Some(p) = STATS.get_ptr_mut(i) {
        // SAFETY: `p` is entry `i` of `STATS`, from a lookup that returns Some only for an index
        // below the array's size: array memory, aligned and valid as long as the map, which the
        // program holds. `STATS` is shared by the CPUs and this add is not atomic, so two runs at
        // once can lose a count, never write outside the entry; the counts only tell a test
        // that faults were injected.
        unsafe { *p += 1 };
    }
}

fn config(i: u32) -> u32 {
    CONFIG.get(i).copied().unwrap_or(0)
}

/// (ports, payload length) of a TCP segment in an Ethernet frame (IPv4 or IPv6 without
/// extension headers); None for anything else.
fn tcp_payload(ctx: &TcContext) -> Option<(u32, u32)> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    let (ip_len, proto, total) = match ethertype {
        0x0800 => {
            let vihl: u8 = ctx.load(14).ok()?;
            let total = u16::from_be(ctx.load::<u16>(16).ok()?) as u32;
            (((vihl & 0x0f) as u32) * 4, ctx.load::<u8>(23).ok()?, total)
        }
        0x86dd => (40, ctx.load::<u8>(20).ok()?, 40 + u16::from_be(ctx.load::<u16>(18).ok()?) as u32),
        _ => return None,
    };
    if proto != 6 {
        return None;
    }
    let tcp = 14 + ip_len as usize;
    let ports = ctx.load::<u32>(tcp).ok()?;
    let doff = ((ctx.load::<u8>(tcp + 12).ok()? >> 4) as u32) * 4;
    Some((ports, total.saturating_sub(ip_len + doff)))
}

#[classifier]
pub fn fault_injector(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr() as *const aya_ebpf::bindings::__sk_buff;
    // SAFETY: `skb` is this program's own `__sk_buff` context, valid for the whole run; `mark`
    // and `ifindex` are context fields a tc program may read (the verifier checks the offsets
    // and rewrites the loads).
    let (mark, ifindex) = unsafe { ((*skb).mark, (*skb).ifindex) };
    if mark == OWN_MARK {
        ctx.set_mark(0);
        return TC_ACT_OK;
    }
    let mode = config(0);
    let Some((ports, payload)) = tcp_payload(&ctx) else { return TC_ACT_OK };
    if mode == MODE_OFF || payload == 0 {
        return TC_ACT_OK;
    }
    let Some(count) = STATS.get_ptr_mut(DATA_SEGMENTS) else { return TC_ACT_OK };
    // SAFETY: `count` is entry DATA_SEGMENTS of `STATS`: array memory, aligned and valid as long
    // as the map, which the program holds. The add is not atomic: a run on another CPU at the
    // same moment can make two segments share a number, which only shifts which segment is
    // impaired.
    let n = unsafe {
        *count += 1;
        *count
    };
    let Some(held) = HELD.get_ptr_mut(0) else { return TC_ACT_OK };
    // SAFETY: `held` is entry 0 of `HELD`: array memory, aligned and valid as long as the map.
    // Nothing else in the object touches `HELD`, and this program runs on the tc ingress of one
    // device; two runs overlap only when two CPUs deliver to that device at once (a veth
    // delivers on the sending CPU). Exclusive in practice rather than guaranteed: overlapping
    // runs could tear or misplace the held test frame, but every access stays inside the
    // value, whose bounds the verifier checks.
    let held = unsafe { &mut *held };
    if mode == MODE_SWAP && held.len != 0 && held.ports == ports {
        // The segment after the held one: a copy of it is queued for delivery (the backlog of
        // this CPU), then the held one takes its place and is queued after it.
        ctx.set_mark(OWN_MARK);
        let sent = ctx.clone_redirect(ifindex, BPF_F_INGRESS as u64).is_ok();
        let len = held.len as usize;
        held.len = 0;
        if !sent || len == 0 || len > HOLD_MAX {
            return TC_ACT_OK;
        }
        if ctx.change_tail(len as u32, 0).is_err() {
            return TC_ACT_SHOT;
        }
        let n = copy_len(len);
        // SAFETY: the source is the held frame, HOLD_MAX bytes of the `HELD` value, and
        // 1 <= n <= HOLD_MAX, so the helper reads within it; the packet was resized to len == n
        // bytes just above, and the helper checks offset and length against the packet and
        // fails rather than write past it. No packet pointer is kept across the call.
        let ok = unsafe {
            aya_ebpf::helpers::generated::bpf_skb_store_bytes(
                ctx.as_ptr() as *mut _,
                0,
                held.frame.as_ptr() as *const _,
                n as u32,
                0,
            )
        } == 0;
        if !ok {
            return TC_ACT_SHOT;
        }
        bump(SWAPPED);
        // SAFETY: `bpf_redirect` takes only scalars (an interface index and flags) and touches
        // no memory of the program; it records where the packet goes once the program returns.
        return unsafe { aya_ebpf::helpers::generated::bpf_redirect(ifindex, BPF_F_INGRESS as u64) } as i32;
    }
    let period = config(1) as u64;
    if period == 0 || n % period != 0 {
        return TC_ACT_OK;
    }
    match mode {
        MODE_DROP => {
            bump(DROPPED);
            TC_ACT_SHOT
        }
        MODE_DUP => {
            ctx.set_mark(OWN_MARK);
            if ctx.clone_redirect(ifindex, BPF_F_INGRESS as u64).is_ok() {
                bump(DUPLICATED);
            }
            ctx.set_mark(mark);
            TC_ACT_OK
        }
        MODE_SWAP if held.len == 0 => {
            let len = ctx.len() as usize;
            if len == 0 || len > HOLD_MAX {
                return TC_ACT_OK;
            }
            let n = copy_len(len);
            // SAFETY: the context is this program's `__sk_buff`; the destination is the held
            // frame, HOLD_MAX bytes of the `HELD` value, and 1 <= n <= HOLD_MAX, so the helper
            // writes within it; it checks the length against the packet and fails rather than
            // read past it.
            let r = unsafe {
                aya_ebpf::helpers::generated::bpf_skb_load_bytes(
                    ctx.as_ptr() as *const _,
                    0,
                    held.frame.as_mut_ptr() as *mut _,
                    n as u32,
                )
            };
            if r != 0 {
                return TC_ACT_OK;
            }
            held.len = len as u32;
            held.ports = ports;
            TC_ACT_SHOT
        }
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: `license` is the section the loader reads the program's license string from; it
// holds only this NUL-terminated byte array, which nothing executes or writes.
#[unsafe(link_section = "license")]
// SAFETY: an unmangled name that no other symbol in the object has, so nothing else is bound
// to it (the loader finds the license by its section, not by this name).
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
