//! Kernel programs of the collector, one module per signal. Built by `cargo xtask build-ebpf`
//! for `bpfel-unknown-none`; the daemon embeds the object and loads it.
#![no_std]
#![no_main]
// Atomic adds on shared map values (see http.rs); the build enables it via RUSTC_BOOTSTRAP.
#![feature(core_intrinsics)]
// Constant-offset loads from tracepoint records (see disk.rs).
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod disk;
mod drops;
mod http;
mod network;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
