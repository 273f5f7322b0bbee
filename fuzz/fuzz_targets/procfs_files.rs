//! Every procfs file the collectors read, through the same parsers: the first byte picks the
//! file, the rest is its content.
#![no_main]
use libfuzzer_sys::fuzz_target;
use procfs::{FromRead as _, FromReadSI as _};

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else { return };
    match which % 6 {
        0 => {
            let si = procfs::ExplicitSystemInfo {
                boot_time_secs: 0,
                ticks_per_second: 100,
                page_size: 4096,
                is_little_endian: true,
            };
            if let Ok(s) = procfs::KernelStats::from_read(body, &si) {
                let _ = collector::host::busy_total(&s.total);
            }
        }
        1 => {
            let _ = collector::host::parse_meminfo(body);
        }
        2 => {
            let _ = procfs::LoadAverage::from_read(body);
        }
        3 => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = collector::host::parse_psi(text);
            }
        }
        4 => {
            let _ = procfs::DiskStats::from_read(body);
        }
        _ => {
            let _ = procfs::net::InterfaceDeviceStatus::from_read(body);
        }
    }
});
