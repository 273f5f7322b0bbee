//! Kernel programs of the collector, one module per signal. Built by `cargo xtask build-ebpf`
//! for `bpfel-unknown-none`; the daemon embeds the object and loads it.
#![no_std]
#![no_main]
// Atomic adds on shared map values (see capture/record.rs); the build enables it via
// RUSTC_BOOTSTRAP.
#![feature(core_intrinsics)]
// Constant-offset loads from tracepoint records (see disk.rs).
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod atomic;
mod capture;
mod disk;
mod drops;
mod http1;
mod http2;
mod network;
mod process;
mod skb;
mod tls;

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
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
