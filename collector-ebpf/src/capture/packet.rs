//! Packet access at the `cgroup_skb` hooks: the IP and TCP headers (by direct packet access,
//! else through `bpf_skb_load_bytes`), bytes of the packet, the packet's full socket and its
//! TCP state, and where a segment lies in its stream.
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, bpf_sock, bpf_tcp_sock},
    helpers::generated::{bpf_sk_fullsock, bpf_skb_load_bytes, bpf_tcp_sock},
    programs::SkBuffContext,
};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

#[inline(always)]
pub fn load<T>(skb: *mut __sk_buff, off: u32) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `skb` is the program's `__sk_buff` context (the verifier checks the argument),
    // and the destination is the local `v`, exactly the size_of::<T>() bytes the helper is told
    // to write; the helper checks `off` and the length against the packet and fails rather
    // than read past it.
    let r = unsafe {
        bpf_skb_load_bytes(skb as *const c_void, off, v.as_mut_ptr() as *mut c_void, core::mem::size_of::<T>() as u32)
    };
    // SAFETY: success means the helper wrote all size_of::<T>() bytes of `v`, and every `T`
    // loaded here (`u8` and byte arrays) is valid for any bytes.
    if r == 0 { Some(unsafe { v.assume_init() }) } else { None }
}

/// A 16-byte array (8-byte aligned, asserted above) as two words.
#[inline(always)]
pub fn words16(b: &[u8; 16]) -> [u64; 2] {
    let p = b.as_ptr() as *const u64;
    // SAFETY: callers pass `id.comm` or `id.addr` of the `Ident` of a connection in socket
    // storage or in a TLS connection map (conn.rs): 16 readable bytes at 8-byte aligned offsets
    // of `Ident`, itself at an 8-byte aligned offset of both (asserted in conn.rs), in a value the
    // kernel aligns to 8 bytes, so both u64 reads are in bounds and aligned; any bytes are a valid
    // u64.
    unsafe { [*p, *p.add(1)] }
}

/// The TCP state of a full socket.
#[inline(always)]
pub fn tcp_sock(sk: *mut bpf_sock) -> Option<&'static bpf_tcp_sock> {
    // SAFETY: `sk` is a full socket (from `bpf_sk_fullsock`; the verifier refuses anything
    // else). The helper returns null or a pointer to the socket's TCP fields, valid until the
    // program returns, which are read only at offsets the verifier checks. The `'static`
    // lifetime is nominal: callers use the reference within this run.
    unsafe { bpf_tcp_sock(sk).as_ref() }
}

/// The full socket of a packet.
#[inline(always)]
pub fn socket_of(skb: *mut __sk_buff) -> Option<*mut bpf_sock> {
    if skb.is_null() {
        return None;
    }
    // SAFETY: `skb` is non-null and is the program's `__sk_buff` context, valid for the whole
    // run: a global function's `__sk_buff *` argument is typed as the context, and the verifier
    // refuses a call passing anything else. Reading `sk` is a context load that the verifier
    // rewrites into the packet's socket pointer, or null.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: `sk` is the packet's socket from the context, non-null (checked above), the
    // argument the helper takes; it returns the socket as a full one, valid for this run, or
    // null.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    (!sk.is_null()).then_some(sk)
}

/// Whether a segment starting at `seq` carries the first payload byte of its direction of the
/// connection: the next expected sequence number minus the bytes the socket has received
/// (ingress), or the oldest unacknowledged one minus the bytes acknowledged (egress). The
/// kernel counts the acknowledged SYN in `bytes_acked` (measured here: the first payload byte
/// sent is one past that difference), so either of the two counts as the start.
#[inline(always)]
pub fn at_stream_start(tp: &bpf_tcp_sock, egress: bool, seq: u32) -> bool {
    if egress {
        seq.wrapping_sub(tp.snd_una.wrapping_sub(tp.bytes_acked as u32)) <= 1
    } else {
        seq == tp.rcv_nxt.wrapping_sub(tp.bytes_received as u32)
    }
}

/// IP header length, family and the first 14 bytes of the TCP header, read by direct packet
/// access: at these hooks the headers sit in the skb's linear part, so most packets (pure ACKs
/// above all) cost no helper call. `Ok(None)`: not TCP. `Err(())`: the linear part is too
/// short to tell; the caller then uses `headers_loaded`.
#[inline(always)]
pub fn headers_direct(ctx: &SkBuffContext) -> Result<Option<(u32, u8, [u8; 14])>, ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + 40 > data_end {
        return Err(());
    }
    // SAFETY: `data..data_end` is the linear part of this program's packet, readable for the
    // whole run (a cgroup_skb program cannot write or move it). The check above makes bytes
    // 0..40 readable, which covers this read and those of bytes 9 and 6 below; the verifier
    // refuses any packet read that a check against `data_end` does not cover.
    let v = unsafe { *(data as *const u8) };
    let (ip_len, family) = match v >> 4 {
        4 => {
            // SAFETY: as above: byte 9, within the 40 bytes checked.
            if unsafe { *((data + 9) as *const u8) } != 6 {
                return Ok(None);
            }
            (((v & 0x0f) as usize) * 4, 4u8)
        }
        6 => {
            // SAFETY: as above: byte 6, within the 40 bytes checked.
            if unsafe { *((data + 6) as *const u8) } != 6 {
                return Ok(None);
            }
            (40usize, 6u8)
        }
        _ => return Ok(None),
    };
    if ip_len < 20 {
        return Ok(None);
    }
    if data + ip_len + 14 > data_end {
        return Err(());
    }
    // SAFETY: as above: the 14 bytes at `ip_len` end before `data_end` (checked just above),
    // and the read is unaligned, so the header's position does not matter.
    let tcp = unsafe { core::ptr::read_unaligned((data + ip_len) as *const [u8; 14]) };
    Ok(Some((ip_len as u32, family, tcp)))
}

/// The same through `bpf_skb_load_bytes`, for packets whose headers are not all linear.
#[inline(always)]
pub fn headers_loaded(skb: *mut __sk_buff) -> Option<(u32, u8, [u8; 14])> {
    let v = load::<u8>(skb, 0)?;
    let (ip_len, family) = match v >> 4 {
        4 => {
            if load::<u8>(skb, 9)? != 6 {
                return None;
            }
            (((v & 0x0f) as u32) * 4, 4u8)
        }
        // TCP directly after the fixed header; extension headers are not followed.
        6 => {
            if load::<u8>(skb, 6)? != 6 {
                return None;
            }
            (40u32, 6u8)
        }
        _ => return None,
    };
    Some((ip_len, family, load::<[u8; 14]>(skb, ip_len)?))
}

/// Writes the peer's address of a packet's socket into `addr`: IPv4 in the first 4 bytes, or
/// IPv6 (`egress`: the packet leaves, so the peer is its destination).
#[inline(always)]
pub fn peer_addr(skb: *mut __sk_buff, family: u8, egress: bool, addr: &mut [u8; 16]) {
    if family == 4 {
        if let Some(a) = load::<[u8; 4]>(skb, if egress { 16 } else { 12 }) {
            addr[..4].copy_from_slice(&a);
        }
    } else if let Some(a) = load::<[u8; 16]>(skb, if egress { 24 } else { 8 }) {
        *addr = a;
    }
}

/// The entry programs' context as the helpers take it.
#[inline(always)]
pub fn skb_of(ctx: &SkBuffContext) -> *mut __sk_buff {
    ctx.as_ptr() as *mut __sk_buff
}
