/*
 * The BPF verifier's full log of one program, as it loads in the collector (an LD_PRELOAD
 * shim; aya hands the kernel a log buffer only when a load fails, so a program that loads
 * leaves no log to read). With the program's name in VERIFIER_LOG_PROG, the shim loads it with
 * log level 2 and statistics (every instruction the verifier processes, with its state) into
 * a 1 GiB buffer and writes the log to VERIFIER_LOG_DIR/NAME.log (default /tmp); every other
 * bpf() call passes through. The level-2 log of a program near the verifier's limit of 1M
 * instructions is about 1 GB of text and takes several times the usual load time.
 *
 *   gcc -shared -fPIC -O2 -o /tmp/verifier-log.so benches/verifier-log.c -ldl
 *   VERIFIER_LOG_PROG=http_ingress LD_PRELOAD=/tmp/verifier-log.so target/release/collector
 *   benches/verifier-lines.py /tmp/http_ingress.log
 *
 * x86-64 only (the bpf syscall's number; the offsets below are those of union bpf_attr's
 * BPF_PROG_LOAD fields in include/uapi/linux/bpf.h).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

enum { BPF_PROG_LOAD = 5, OFF_LOG_LEVEL = 24, OFF_LOG_SIZE = 28, OFF_LOG_BUF = 32, OFF_NAME = 48 };

long syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    const char *want = getenv("VERIFIER_LOG_PROG");
    if (n != SYS_bpf || a[0] != BPF_PROG_LOAD || !want) return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    char *attr = (char *)a[1], name[17] = {0};
    memcpy(name, attr + OFF_NAME, 16);
    if (strcmp(name, want) != 0) return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    size_t size = (size_t)1 << 30;
    char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (buf == MAP_FAILED) return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    buf[0] = 0;
    uint32_t level, log_size;
    uint64_t log_buf;
    memcpy(&level, attr + OFF_LOG_LEVEL, 4);
    memcpy(&log_size, attr + OFF_LOG_SIZE, 4);
    memcpy(&log_buf, attr + OFF_LOG_BUF, 8);
    uint32_t new_level = 2 | 4, new_size = (uint32_t)(size - 1);
    uint64_t new_buf = (uint64_t)(uintptr_t)buf;
    memcpy(attr + OFF_LOG_LEVEL, &new_level, 4);
    memcpy(attr + OFF_LOG_SIZE, &new_size, 4);
    memcpy(attr + OFF_LOG_BUF, &new_buf, 8);
    long r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    const char *dir = getenv("VERIFIER_LOG_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.log", dir ? dir : "/tmp", name);
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(buf, 1, strnlen(buf, size), f);
        fclose(f);
    }
    memcpy(attr + OFF_LOG_LEVEL, &level, 4);
    memcpy(attr + OFF_LOG_SIZE, &log_size, 4);
    memcpy(attr + OFF_LOG_BUF, &log_buf, 8);
    munmap(buf, size);
    return r;
}
