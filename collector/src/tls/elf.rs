//! What a file holds, for the TLS capture: an OpenSSL-compatible library or executable (the file
//! offsets of the functions the uprobes go on), Go's crypto/tls (its functions, decoded for their
//! return instructions and the end of their stack check), another TLS library (skipped, with the
//! reason), or nothing. ELF symbols through `object`, x86-64 machine code through `iced-x86`.
use std::{collections::HashMap, path::Path};

use aya::programs::uprobe::UProbeAttachLocation;
use collector_common::names::program;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The probes of an OpenSSL-compatible library: (program, function, required).
pub const ENTRY_PROBES: [(&str, &str, bool); 6] = [
    (program::TLS_READ, "SSL_read", true),
    (program::TLS_WRITE, "SSL_write", true),
    (program::TLS_READ_EX, "SSL_read_ex", false),
    (program::TLS_WRITE_EX, "SSL_write_ex", false),
    (program::TLS_FREE, "SSL_free", true),
    (program::TLS_HANDSHAKE, "SSL_do_handshake", false),
];

/// What a file is, for the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// OpenSSL's API: the file offsets of the probed functions (absent `_ex` ones: None).
    OpenSsl(Vec<(&'static str, u64)>),
    /// Go's crypto/tls: entry probes (program, file offset) on `(*Conn).Read`, `Write` and
    /// `Close`, and `go_tls_ret` on each return instruction of Read and Write.
    Go(Vec<(&'static str, u64)>),
    /// A TLS implementation the capture does not follow (the reason).
    Skipped(&'static str),
    /// No TLS library.
    None,
}

/// The file offset of the first writable loadable segment of an ELF file with file content.
pub fn writable_segment_offset(file: &Path) -> Option<u64> {
    use object::ObjectSegment as _;
    let f = std::fs::File::open(file).ok()?;
    // SAFETY: a read-only private mapping of this process's own executable, only parsed.
    let data = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    let obj = object::File::parse(&*data).ok()?;
    obj.segments().find_map(|seg| match seg.flags() {
        object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_W.0 != 0 => {
            seg.file_range().1.gt(&0).then_some(seg.file_range().0)
        }
        _ => None,
    })
}

/// Names of TLS libraries the capture does not follow.
const OTHER_LIBRARIES: [(&str, &str); 5] = [
    ("libgnutls.so", "GnuTLS is not captured"),
    ("libssl3.so", "NSS is not captured"),
    ("libnss3.so", "NSS is not captured"),
    ("libwolfssl.so", "wolfSSL is not captured"),
    ("libmbedtls.so", "mbed TLS is not captured"),
];

/// Opens `file` for reading if it is still inode `inode` (not replaced since it was mapped).
pub fn open_checked(file: &Path, inode: u64) -> Option<std::fs::File> {
    use std::os::unix::fs::MetadataExt as _;
    let f = std::fs::File::open(file).ok()?;
    (f.metadata().ok()?.ino() == inode).then_some(f)
}

/// Looks at one file, named `path` by processes, which `open` opens (None: not readable, or
/// not the file that was mapped): an OpenSSL-compatible library or binary, a skipped TLS
/// library, or nothing of interest.
pub fn examine(path: &str, open: impl FnOnce() -> Option<std::fs::File>) -> Kind {
    let name = path.rsplit('/').next().unwrap_or(path);
    if let Some((_, reason)) = OTHER_LIBRARIES.iter().find(|(prefix, _)| name.starts_with(prefix)) {
        return Kind::Skipped(reason);
    }
    let Some(f) = open() else { return Kind::None };
    // SAFETY: a read-only private mapping of a file opened for reading; the bytes are only
    // parsed. A file truncated meanwhile by another process could fault on access: libraries and
    // executables a process maps are not rewritten in place (installers replace them), and this
    // is the unprivileged daemon (the helper reads its copy instead: [`examine_copy`]).
    let Ok(data) = (unsafe { memmap2::Mmap::map(&f) }) else { return Kind::None };
    examine_bytes(name, &data)
}

/// The most of a file the privileged helper reads to find the offsets it attaches at.
pub const MAX_COPY: u64 = 1 << 30;

/// [`examine`] on a copy of the file read into memory (the privileged helper's way: a file
/// truncated meanwhile gives a short copy, not a fault that would end the helper).
pub fn examine_copy(path: &str, f: &std::fs::File) -> Kind {
    use std::io::Read as _;
    let name = path.rsplit('/').next().unwrap_or(path);
    if OTHER_LIBRARIES.iter().any(|(prefix, _)| name.starts_with(prefix)) {
        return Kind::None;
    }
    let mut data = Vec::new();
    if f.take(MAX_COPY).read_to_end(&mut data).is_err() {
        return Kind::None;
    }
    examine_bytes(name, &data)
}

/// [`examine`] on a file's bytes (`name`: its file name).
fn examine_bytes(name: &str, data: &[u8]) -> Kind {
    let Ok(obj) = object::File::parse(data) else { return Kind::None };
    let libssl = name.starts_with("libssl.so");
    let mut found: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut go: HashMap<&str, (u64, u64)> = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        let Ok(n) = sym.name() else { continue };
        if !sym.is_definition() {
            continue;
        }
        if let Some((_, f)) = GO_FUNCTIONS.iter().find(|(_, f)| *f == n)
            && let Some(off) = file_offset(&obj, &sym)
        {
            go.insert(f, (off, sym.size()));
        }
        if let Some((_, f, _)) = ENTRY_PROBES.iter().find(|(_, f, _)| *f == n)
            && !found.contains_key(f)
            && let Some(off) = file_offset(&obj, &sym)
        {
            found.insert(f, (off, sym.size()));
        }
    }
    let complete = ENTRY_PROBES.iter().all(|(_, f, required)| !required || found.contains_key(f));
    if complete {
        let mut offsets: Vec<(&'static str, u64)> =
            ENTRY_PROBES.iter().filter_map(|(prog, f, _)| found.get(f).map(|o| (*prog, o.0))).collect();
        if obj.architecture() == object::Architecture::X86_64
            && let Some((text_off, text_len)) = obj.section_by_name(".text").and_then(|s| s.file_range())
        {
            let text = text_off..text_off + text_len;
            // A function's file offset and first bytes.
            let code = |f: &str| {
                let &(off, size) = found.get(f)?;
                Some((off, data.get(off as usize..(off + size.min(128)) as usize)?))
            };
            for (plain, plain_prog, ex, ex_prog) in SHARED_BODIES {
                if let (Some(p), Some(e)) = (code(plain), code(ex))
                    && let Some(body) = shared_body(p, e, data, &text)
                {
                    offsets.retain(|(prog, _)| *prog != plain_prog && *prog != ex_prog);
                    offsets.push((ex_prog, body));
                }
            }
        }
        return Kind::OpenSsl(offsets);
    }
    if !go.is_empty() {
        return go_probes(&obj, data, &go);
    }
    if obj.section_by_name(".go.buildinfo").is_some() && obj.symbols().next().is_none() {
        return Kind::Skipped("stripped Go binary (no symbols to find crypto/tls in)");
    }
    if libssl {
        return Kind::Skipped("no SSL_read/SSL_write/SSL_free symbols");
    }
    Kind::None
}

/// OpenSSL's read and write functions, each with its `_ex` variant: (function, its program, the
/// variant, its program). Where both call one function that does the work (OpenSSL's
/// `ssl_read_internal`/`ssl_write_internal`, with `_ex`'s arguments and result), that function
/// is probed instead of the two, with the variant's program (see [`shared_body`]).
const SHARED_BODIES: [(&str, &str, &str, &str); 2] = [
    ("SSL_read", program::TLS_READ, "SSL_read_ex", program::TLS_READ_EX),
    ("SSL_write", program::TLS_WRITE, "SSL_write_ex", program::TLS_WRITE_EX),
];

/// The file offset of the function an OpenSSL function (`plain`: its file offset and first
/// bytes) and its `_ex` variant (`ex`) both call to do their work, where a probe costs a trap
/// less than on either: the kernel emulates a probed `push` of a register (and a branch) but
/// steps any other instruction out of line, which takes a second trap, a debug exception, on
/// every call (Debian's `SSL_read`, `SSL_read_ex`, `SSL_write` and `SSL_write_ex` all start with
/// a `sub` from `rsp`; the functions they call, with a `push`). Only where nothing is lost and
/// nothing changes meaning: `ex` runs nothing before its first call but `endbr64`, `push` and
/// a `sub` from `rsp`, so its four argument registers (connection, buffer, length, where the
/// count goes) reach the callee as they came, which returns above 0 with the count stored as
/// `ex` does; `plain`'s first call goes to the same function (its way to read or write); the
/// callee lies in `text` (file offsets of `.text`) and starts with a `push` of a register. The
/// return probe goes on the callee's entry as well. None otherwise, and on every doubt.
fn shared_body(plain: (u64, &[u8]), ex: (u64, &[u8]), data: &[u8], text: &std::ops::Range<u64>) -> Option<u64> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    // Decoded at file offsets: a near call's target is then a file offset too (one segment).
    let first_call = |(off, code): (u64, &[u8]), prologue_only: bool| -> Option<u64> {
        let mut d = Decoder::with_ip(64, code, off, DecoderOptions::NONE);
        for _ in 0..32 {
            if !d.can_decode() {
                return None;
            }
            let ins = d.decode();
            match ins.mnemonic() {
                _ if ins.is_invalid() => return None,
                Mnemonic::Call => return (ins.op0_kind() == OpKind::NearBranch64).then(|| ins.near_branch_target()),
                Mnemonic::Endbr64 | Mnemonic::Push => {}
                Mnemonic::Sub
                    if ins.op0_register() == Register::RSP
                        && matches!(ins.op1_kind(), OpKind::Immediate8to64 | OpKind::Immediate32to64) => {}
                _ if prologue_only => return None,
                _ => {}
            }
        }
        None
    };
    let body = first_call(ex, true)?;
    if !text.contains(&body) || first_call(plain, false)? != body {
        return None;
    }
    let ins = Decoder::new(64, data.get(body as usize..)?.get(..16)?, DecoderOptions::NONE).decode();
    (ins.mnemonic() == Mnemonic::Push && ins.op0_kind() == OpKind::Register).then_some(body)
}

/// The functions of Go's crypto/tls that are probed: (program, symbol).
pub const GO_FUNCTIONS: [(&str, &str); 4] = [
    (program::GO_TLS_READ, "crypto/tls.(*Conn).Read"),
    (program::GO_TLS_WRITE, "crypto/tls.(*Conn).Write"),
    (program::GO_TLS_CLOSE, "crypto/tls.(*Conn).Close"),
    (program::TLS_HANDSHAKE, "crypto/tls.(*Conn).handshakeContext"),
];

/// The file offset of a symbol's address.
fn file_offset(obj: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u64> {
    let sec = obj.section_by_index(sym.section_index()?).ok()?;
    let (sec_off, _) = sec.file_range()?;
    match UProbeAttachLocation::from_virtual_address(sym.address(), sec.address(), sec_off) {
        Ok(UProbeAttachLocation::AbsoluteOffset(off)) => Some(off),
        _ => None,
    }
}

/// The Go toolchain version a binary was built with (its minor version: 21 for go1.21.5), from
/// the build information Go 1.18 and later embed inline (`.go.buildinfo`).
fn go_minor(obj: &object::File<'_>) -> Option<u32> {
    let data = obj.section_by_name(".go.buildinfo")?.data().ok()?;
    // A 14-byte magic, pointer size, flags (bit 1: inline strings), then at 32 the version as
    // a varint-prefixed string.
    if data.len() < 33 || !data.starts_with(b"\xff Go buildinf:") || data[15] & 2 == 0 {
        return None;
    }
    let len = data[32] as usize;
    let v = std::str::from_utf8(data.get(33..33 + len)?).ok()?;
    v.strip_prefix("go1.")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The probes of a Go binary that uses crypto/tls (`funcs`: file offset and size of each
/// function found), or why it is skipped.
fn go_probes(obj: &object::File<'_>, data: &[u8], funcs: &HashMap<&str, (u64, u64)>) -> Kind {
    if obj.architecture() != object::Architecture::X86_64 {
        return Kind::Skipped("Go crypto/tls is captured on x86-64 only");
    }
    // The register ABI (arguments and results in registers, g in R14) from Go 1.17; the build
    // information that tells the version is inline from 1.18.
    if !go_minor(obj).is_some_and(|m| m >= 18) {
        return Kind::Skipped("Go before 1.18 is not captured");
    }
    let mut out = Vec::new();
    for (prog, name) in GO_FUNCTIONS {
        let Some(&(off, size)) = funcs.get(name) else {
            if prog == program::TLS_HANDSHAKE {
                continue;
            }
            return Kind::Skipped("crypto/tls functions not found");
        };
        let Some(code) = data.get(off as usize..(off + size) as usize).filter(|c| !c.is_empty()) else {
            return Kind::Skipped("crypto/tls function outside the file");
        };
        match prog {
            // On the stack check's jump, as Read below; its program leaves a Write whose jump
            // is taken to the function's next pass, so there must be one.
            program::GO_TLS_WRITE => match stack_check(code) {
                Some(jump) => out.push((prog, off + jump)),
                None => return Kind::Skipped("crypto/tls Write without a stack check"),
            },
            program::GO_TLS_READ => {
                // On the stack check's conditional jump, which the kernel emulates (the entry's
                // first instruction, a `cmp`, it steps out of line: a second trap per call). A
                // goroutine whose stack grows passes it twice; the second entry note replaces
                // the first with the same values.
                out.push((prog, off + stack_check(code).unwrap_or(0)));
                let rets = return_offsets(code);
                if rets.is_empty() {
                    return Kind::Skipped("no return instruction found in crypto/tls");
                }
                out.extend(rets.into_iter().map(|r| (program::GO_TLS_RET, off + r)));
            }
            _ => out.push((prog, off)),
        }
    }
    Kind::Go(out)
}

/// The offset of the conditional jump (`jbe`) that ends the stack check of a Go function's
/// prologue (`cmp rsp, [r14+16]` or, for a large frame, a `lea` and a `cmp` on it; the jump goes
/// to the stack growth at the end, which re-enters the function from its first instruction);
/// None for a function without one. Nothing before it touches the argument registers.
fn stack_check(code: &[u8]) -> Option<u64> {
    let mut d = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let mut ins = iced_x86::Instruction::default();
    let mut compared = false;
    for _ in 0..4 {
        if !d.can_decode() {
            break;
        }
        let at = d.position() as u64;
        d.decode_out(&mut ins);
        match ins.mnemonic() {
            iced_x86::Mnemonic::Cmp if ins.memory_base() == iced_x86::Register::R14 => compared = true,
            iced_x86::Mnemonic::Jbe if compared => return Some(at),
            iced_x86::Mnemonic::Lea | iced_x86::Mnemonic::Cmp => {}
            _ => break,
        }
    }
    None
}

/// Offsets of the return instructions in a function's machine code (x86-64).
fn return_offsets(code: &[u8]) -> Vec<u64> {
    let mut d = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut ins = iced_x86::Instruction::default();
    while d.can_decode() {
        let at = d.position() as u64;
        d.decode_out(&mut ins);
        if ins.is_invalid() {
            break;
        }
        if ins.mnemonic() == iced_x86::Mnemonic::Ret {
            out.push(at);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_instructions() {
        // push rbp; mov rbp,rsp; test eax,eax; je +2; pop rbp; ret; xor eax,eax; pop rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x85, 0xc0, 0x74, 0x02, 0x5d, 0xc3, 0x31, 0xc0, 0x5d, 0xc3];
        assert_eq!(return_offsets(&code), vec![9, 13]);
        // 0xc3 inside an instruction is not a return: mov eax, 0xc3c3c3c3; ret
        assert_eq!(return_offsets(&[0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3]), vec![5]);
    }

    /// `call` from `at` to `to`, as a near call with a 32-bit displacement.
    fn call(at: usize, to: usize) -> Vec<u8> {
        let mut c = vec![0xe8];
        c.extend_from_slice(&((to as i64 - (at as i64 + 5)) as i32).to_le_bytes());
        c
    }

    #[test]
    fn shared_bodies() {
        // A file: SSL_read at 0x10 (sub rsp,0x18; mov rcx,rsp; call), SSL_read_ex at 0x40
        // (sub rsp,8; call), their shared body at 0x80 (push r13; push rbp), all in `.text`.
        let text = 0..0x100u64;
        let file = |ex_prologue: &[u8], body: &[u8], plain_to: usize| {
            let mut data = vec![0xccu8; 0x100];
            let mut plain = vec![0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0xe1];
            plain.extend(call(0x10 + plain.len(), plain_to));
            data[0x10..0x10 + plain.len()].copy_from_slice(&plain);
            let mut ex = ex_prologue.to_vec();
            ex.extend(call(0x40 + ex.len(), 0x80));
            data[0x40..0x40 + ex.len()].copy_from_slice(&ex);
            data[0x80..0x80 + body.len()].copy_from_slice(body);
            data
        };
        let find = |data: &[u8], text: &std::ops::Range<u64>| {
            shared_body((0x10, &data[0x10..0x30]), (0x40, &data[0x40..0x60]), data, text)
        };
        let sub8 = [0x48, 0x83, 0xec, 0x08];
        let push = [0x41, 0x55, 0x55];
        assert_eq!(find(&file(&sub8, &push, 0x80), &text), Some(0x80));
        // endbr64 and pushes before the call keep the arguments too.
        let endbr_push = [0xf3, 0x0f, 0x1e, 0xfa, 0x53, 0x48, 0x83, 0xec, 0x10];
        assert_eq!(find(&file(&endbr_push, &push, 0x80), &text), Some(0x80));
        // The variant moves an argument (mov rdx,rsi) before its call: the arguments may differ.
        assert_eq!(find(&file(&[0x48, 0x89, 0xf2], &push, 0x80), &text), None);
        // A body that starts with a sub would be stepped out of line as well: nothing gained.
        assert_eq!(find(&file(&sub8, &[0x48, 0x83, 0xec, 0x38], 0x80), &text), None);
        // The other function calls something else first.
        assert_eq!(find(&file(&sub8, &push, 0xc0), &text), None);
        // The body outside `.text` (a PLT stub, say).
        assert_eq!(find(&file(&sub8, &push, 0x80), &(0..0x80)), None);
    }

    #[test]
    fn this_executable_has_a_writable_segment() {
        let off = writable_segment_offset(Path::new("/proc/self/exe")).unwrap();
        assert!(off > 0);
    }

    #[test]
    fn go_prologue() {
        // cmp rsp,[r14+0x10]; jbe +0x40; push rbp
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(stack_check(&code), Some(4));
        // lea r12,[rsp-0x100]; cmp r12,[r14+0x10]; jbe +0x40; push rbp
        let code = [0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x40, 0x55];
        assert_eq!(stack_check(&code), Some(12));
        // No stack check: push rbp; ...
        assert_eq!(stack_check(&[0x55, 0x48, 0x89, 0xe5]), None);
        // A compare not on g's stack bound: cmp rsp,[rax+0x10]; jbe
        assert_eq!(stack_check(&[0x48, 0x3b, 0x60, 0x10, 0x76, 0x40]), None);
    }

    #[test]
    fn examines_this_hosts_libssl_and_others() {
        // Debian's libssl3 (a dependency of the test machine's curl and nginx).
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        use std::os::unix::fs::MetadataExt as _;
        let ino = std::fs::metadata(lib).unwrap().ino();
        match examine("/usr/lib/x86_64-linux-gnu/libssl.so.3", || open_checked(lib, ino)) {
            Kind::OpenSsl(offsets) => {
                // Its read and write functions and their `_ex` variants each call a function that
                // starts with a push: that one is probed, with the variant's program.
                let progs: Vec<&str> = offsets.iter().map(|(p, _)| *p).collect();
                assert_eq!(
                    progs,
                    [program::TLS_FREE, program::TLS_HANDSHAKE, program::TLS_READ_EX, program::TLS_WRITE_EX]
                );
                assert!(offsets.iter().all(|(_, o)| *o > 0));
                let data = std::fs::read(lib).unwrap();
                for (_, o) in &offsets[2..] {
                    let b = &data[*o as usize..];
                    assert!(matches!(b[0], 0x50..=0x57) || (b[0] == 0x41 && matches!(b[1], 0x50..=0x57)), "{b:02x?}");
                }
            }
            k => panic!("{k:?}"),
        }
        // A binary without TLS, and a wrong inode.
        let sh = Path::new("/bin/sh");
        let ino = std::fs::metadata(sh).unwrap().ino();
        assert_eq!(examine("/bin/sh", || open_checked(sh, ino)), Kind::None);
        assert_eq!(examine("/usr/lib/x86_64-linux-gnu/libssl.so.3", || open_checked(lib, ino)), Kind::None);
        assert_eq!(
            examine("/usr/lib/libgnutls.so.30", || open_checked(sh, ino)),
            Kind::Skipped("GnuTLS is not captured")
        );
    }
}
