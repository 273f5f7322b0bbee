#!/usr/bin/env python3
"""Per-source-line profile of loaded BPF programs, from `perf record -a` samples.

Usage (as root, while the programs are loaded):
    perf record -a -o perf.data -- <load>
    benches/bpf-line-profile.py perf.data PROG_ID [PROG_ID ...]

Debian's perf and bpftool are built without libbfd, so neither annotates JIT-compiled BPF
code. This does it from what the kernel reports itself: `BPF_OBJ_GET_INFO_BY_FD` gives each
function's JIT address and length and the JIT address of every BTF line-info record;
`bpftool prog dump xlated linum` gives the source line of each record. Every sample whose
address falls in one of the programs' functions is charged to the record at or before it.
Helpers (bpf_sk_storage_get, ...) are kernel functions: `perf report` shows them by name.
"""
import bisect
import collections
import ctypes
import re
import subprocess
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def bpf(cmd, attr):
    r = libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if r < 0:
        raise OSError(ctypes.get_errno(), f"bpf({cmd})")
    return r


class Info(ctypes.Structure):
    """The head of `struct bpf_prog_info` (include/uapi/linux/bpf.h), up to the fields used."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 64),
    ]


class FdById(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class InfoByFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def prog_info(prog_id):
    """(functions as (address, length), line records as (jited address, insn offset))."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, FdById(prog_id, 0, 0))
    info = Info()
    bpf(BPF_OBJ_GET_INFO_BY_FD, InfoByFd(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    n_funcs, n_lines, n_jlines = info.nr_jited_ksyms, info.nr_line_info, info.nr_jited_line_info
    lrec, jrec = info.line_info_rec_size, info.jited_line_info_rec_size
    ksyms = (ctypes.c_uint64 * n_funcs)()
    lens = (ctypes.c_uint32 * n_funcs)()
    lines = (ctypes.c_uint8 * (n_lines * lrec))()
    jlines = (ctypes.c_uint8 * (n_jlines * jrec))()
    info2 = Info()
    info2.nr_jited_ksyms, info2.nr_jited_func_lens = n_funcs, n_funcs
    info2.jited_ksyms, info2.jited_func_lens = ctypes.addressof(ksyms), ctypes.addressof(lens)
    info2.nr_line_info, info2.line_info_rec_size, info2.line_info = n_lines, lrec, ctypes.addressof(lines)
    info2.nr_jited_line_info, info2.jited_line_info_rec_size = n_jlines, jrec
    info2.jited_line_info = ctypes.addressof(jlines)
    bpf(BPF_OBJ_GET_INFO_BY_FD, InfoByFd(fd, ctypes.sizeof(info2), ctypes.addressof(info2)))
    raw = bytes(lines)
    recs = []
    for i in range(n_lines):
        insn_off = int.from_bytes(raw[i * lrec:i * lrec + 4], "little")
        addr = int.from_bytes(bytes(jlines)[i * jrec:i * jrec + 8], "little")
        recs.append((addr, insn_off))
    return [(ksyms[i], lens[i]) for i in range(n_funcs)], recs


def source_lines(prog_id):
    """xlated insn offset -> 'file:line  source text' from bpftool's linum dump."""
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id), "linum"],
                         check=True, capture_output=True, text=True).stdout
    at, pending = {}, None
    for line in out.splitlines():
        m = re.match(r"; (.*) \[file:(\S+) line_num:(\d+)", line)
        if m:
            pending = f"{m.group(2).rsplit('/', 1)[-1]}:{m.group(3)}  {m.group(1).strip()[:70]}"
            continue
        m = re.match(r"\s*(\d+): ", line)
        if m and pending is not None:
            at[int(m.group(1))] = pending
            pending = None
    return at


def main():
    data, ids = sys.argv[1], [int(a) for a in sys.argv[2:]]
    funcs, recs = [], []
    for pid in ids:
        f, r = prog_info(pid)
        s = source_lines(pid)
        funcs += f
        recs += [(addr, s.get(off, f"prog {pid} insn {off}")) for addr, off in r]
    recs.sort()
    addrs = [a for a, _ in recs]
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
    per_line, per_func, total = collections.Counter(), collections.Counter(), 0
    for line in script.splitlines():
        parts = line.split()
        if not parts:
            continue
        total += 1
        try:
            ip = int(parts[0], 16)
        except ValueError:
            continue
        if not any(a <= ip < a + n for a, n in funcs):
            continue
        per_func[parts[1] if len(parts) > 1 else "?"] += 1
        i = bisect.bisect_right(addrs, ip) - 1
        per_line[recs[i][1] if i >= 0 else "?"] += 1
    ours = sum(per_func.values())
    print(f"{total} samples, {ours} in the programs' own code ({100 * ours / max(total, 1):.2f}%)")
    for name, n in per_func.most_common():
        print(f"{100 * n / total:6.2f}%  {name}")
    print()
    for where, n in per_line.most_common(60):
        print(f"{100 * n / total:6.2f}%  {where}")


if __name__ == "__main__":
    main()
