//! The privileged helper: a small process forked before the daemon drops its capabilities,
//! which keeps only what reading other users' processes takes (`CAP_SYS_PTRACE`,
//! `CAP_DAC_READ_SEARCH`) and, while the HTTPS capture runs, attaching uprobes (`CAP_PERFMON` or
//! `CAP_SYS_ADMIN`), and answers requests over a socket pair, nothing else:
//!
//! - the `OTEL_*` variables of a process's environment (`/proc/<pid>/environ`, only the
//!   entries whose name starts with `OTEL_`: the rest of the environment, secrets included,
//!   never leaves the helper);
//! - the container and compose names in a Docker container's `config.v2.json` (only those
//!   three names: the file also holds the container's environment);
//! - the HTTPS capture's steps ([`crate::tls::privileged`]: processes' executable mappings,
//!   descriptors of TLS library files, their probes and watches).
//!
//! Each request is one message of a fixed shape (a pid; a 64-digit hexadecimal container id;
//! the capture's) and anything else is refused; each answer is bounded. The helper has no
//! network socket, no other file descriptor or eBPF object of the daemon but the capture's
//! uprobe programs (it closes and unmaps them all), `no_new_privs`, and runs until the
//! daemon exits (`PR_SET_PDEATHSIG`, or the end of the socket). If it dies, the daemon logs it,
//! exports `collector_helper_up 0` and reads what it can itself (its own user's processes).
use std::{
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::net::UnixDatagram,
    },
    path::{Path, PathBuf},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ::caps::{CapSet, Capability, CapsHashSet};

/// A request: its kind, then its argument.
const ENVIRON: u8 = 1;
const DOCKER: u8 = 2;

/// Answers: the first byte.
pub(crate) const OK: u8 = 0;
/// Nothing to answer (no such process or container, not readable, nothing declared).
pub(crate) const NONE: u8 = 1;
/// The request was malformed, or names what the helper may not touch.
pub(crate) const REFUSED: u8 = 2;
/// No such file.
pub(crate) const MISSING: u8 = 3;
/// More of the answer follows in the next message (the HTTPS capture's list of mappings).
const MORE: u8 = 4;

/// The largest request (a path of up to `PATH_MAX` and its arguments) and answer message; an
/// answer of several messages is at most `MAX_TOTAL` bytes.
const MAX_REQUEST: usize = 4200;
pub const MAX_ANSWER: usize = 16 * 1024;
const MAX_TOTAL: usize = 16 << 20;
/// The most of a file the helper reads: environments (the kernel allows far more, but the
/// variables wanted are among the first of real processes) and Docker configurations.
const MAX_ENVIRON: u64 = 1 << 20;
const MAX_DOCKER_CONFIG: u64 = 4 << 20;

/// What the helper reads, fixed when it is forked.
#[derive(Clone, Debug)]
pub struct Scope {
    pub procfs: PathBuf,
    pub docker_dir: PathBuf,
    /// The HTTPS capture's uprobe programs (their descriptors, kept in the helper), when it
    /// attaches them (see [`crate::tls::privileged`]).
    pub tls_programs: Vec<std::os::fd::RawFd>,
}

/// An answer: its first byte, its payload (split into messages by [`send_answer`]), and a
/// descriptor passed with it.
pub struct Reply {
    pub code: u8,
    pub payload: Vec<u8>,
    pub fd: Option<std::os::fd::OwnedFd>,
}

impl Reply {
    pub fn code(code: u8) -> Self {
        Self { code, payload: Vec::new(), fd: None }
    }

    pub fn ok(payload: Vec<u8>) -> Self {
        Self { code: OK, payload, fd: None }
    }
}

/// The answer to one request (the helper's side, a pure function of the request and the files
/// it names: tested and fuzzed as such).
pub fn answer(scope: &Scope, request: &[u8]) -> Vec<u8> {
    match request {
        [ENVIRON, pid @ ..] if pid.len() == 4 => {
            let pid = u32::from_le_bytes(pid.try_into().unwrap());
            if pid == 0 || pid > 1 << 22 {
                return vec![REFUSED];
            }
            match read_bounded(&scope.procfs.join(pid.to_string()).join("environ"), MAX_ENVIRON, false) {
                Some(raw) => {
                    let otel = otel_variables(&raw);
                    if otel.is_empty() { vec![NONE] } else { [&[OK][..], &otel].concat() }
                }
                None => vec![NONE],
            }
        }
        [DOCKER, id @ ..] if id.len() == 64 && id.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            let id = std::str::from_utf8(id).unwrap();
            let file = scope.docker_dir.join(id).join("config.v2.json");
            let Some(raw) = read_bounded(&file, MAX_DOCKER_CONFIG, true) else { return vec![NONE] };
            match crate::identity::parse_docker_config(&raw) {
                Some(w) => {
                    let mut out = vec![OK];
                    for s in [&w.container_name, &w.compose_service, &w.compose_project] {
                        out.extend(s.bytes().filter(|b| *b != 0).take(1024));
                        out.push(0);
                    }
                    out
                }
                None => vec![NONE],
            }
        }
        _ => vec![REFUSED],
    }
}

/// The `OTEL_*` entries of a NUL-separated environment, NUL-separated, at most
/// [`MAX_ANSWER`] - 1 bytes (whole entries).
pub fn otel_variables(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for var in raw.split(|b| *b == 0).filter(|v| v.starts_with(b"OTEL_")) {
        if out.len() + var.len() + 1 > MAX_ANSWER - 1 {
            break;
        }
        out.extend_from_slice(var);
        out.push(0);
    }
    out
}

/// A regular file's first `max` bytes; with `no_symlinks`, none of the path's last two
/// components may be a symbolic link (a container's directory or its file pointing elsewhere).
fn read_bounded(path: &Path, max: u64, no_symlinks: bool) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if no_symlinks && std::fs::symlink_metadata(path.parent()?).ok()?.file_type().is_symlink() {
        return None;
    }
    let flags = if no_symlinks { libc::O_NOFOLLOW } else { 0 } | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut raw = Vec::new();
    f.take(max).read_to_end(&mut raw).ok()?;
    Some(raw)
}

/// The daemon's end: the socket, with the buffer answers are received into.
pub struct Helper {
    sock: Mutex<(UnixDatagram, Vec<u8>)>,
    pid: libc::pid_t,
    up: AtomicBool,
    /// Held while the pid is waited for or signalled, and set once it is reaped: a reaped
    /// pid may be another process's, never to be signalled.
    reaped: Mutex<bool>,
}

static HELPER: OnceLock<Helper> = OnceLock::new();

/// Forks the helper with `scope`, keeping `keep` (of what this process holds) in it. Call it
/// while this process has a single thread, before it drops the capabilities. The helper's pid.
pub fn spawn(scope: Scope, keep: &CapsHashSet) -> anyhow::Result<libc::pid_t> {
    // Threads joined just before (the capability probes') can still be leaving the task list.
    let threads = || std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    for _ in 0..100 {
        if threads() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = threads();
    anyhow::ensure!(n == 1, "the helper is forked from a single thread ({n} running)");
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array it is given.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    let (ours, theirs) = unsafe { (UnixDatagram::from_raw_fd(fds[0]), UnixDatagram::from_raw_fd(fds[1])) };
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: this process has one thread (checked above), so the child may do anything the
    // parent could; it never returns from `serve`.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error().into()),
        0 => {
            drop(ours);
            serve(theirs, &scope, keep, parent)
        }
        pid => {
            drop(theirs);
            // Attaching a large binary's probes takes the longest (a second, or several under
            // emulation); a helper that takes longer than this is taken for hung.
            ours.set_read_timeout(Some(Duration::from_secs(20)))?;
            ours.set_write_timeout(Some(Duration::from_secs(20)))?;
            // The helper says when it has shed the daemon's descriptors and capabilities: from
            // then on it is what the documentation says it is.
            let mut ready = [0u8; 1];
            if !matches!(ours.recv(&mut ready), Ok(1) if ready[0] == OK) {
                kill_and_reap(pid);
                anyhow::bail!("the helper did not start");
            }
            let answers = vec![0u8; MAX_ANSWER];
            let _ = HELPER.set(Helper {
                sock: Mutex::new((ours, answers)),
                pid,
                up: AtomicBool::new(true),
                reaped: Mutex::new(false),
            });
            Ok(pid)
        }
    }
}

/// The helper's life: it sheds everything of the daemon's but its socket and the capabilities
/// in `keep`, then answers until the daemon is gone.
fn serve(sock: UnixDatagram, scope: &Scope, keep: &CapsHashSet, parent: libc::pid_t) -> ! {
    // SAFETY: prctl, getppid, signal and _exit take plain values.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        // The daemon handles ^C and SIGTERM; the helper goes when it does.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::prctl(libc::PR_SET_NAME, c"collector-help".as_ptr() as libc::c_ulong, 0, 0, 0);
    }
    // Every descriptor of the daemon's (the listening socket, the eBPF objects and links, the
    // maps) but the standard ones and the socket: closed, not dropped (no destructor of the
    // daemon's runs here: a link's would detach the daemon's program).
    // The HTTPS capture's uprobe programs stay where the helper attaches them: the descriptors
    // of those programs, not of their maps.
    let own = sock.as_raw_fd();
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|fd| *fd > 2 && *fd != own && !scope.tls_programs.contains(fd)) {
        // SAFETY: the descriptor belongs to this process, and nothing here uses it again.
        unsafe { libc::close(fd) };
    }
    // The daemon's memory mappings of its maps (the HTTP/2 ring buffer) hold those maps too.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for range in maps.lines().filter(|l| l.ends_with("anon_inode:bpf-map")).filter_map(|l| l.split(' ').next()) {
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else { continue };
        // SAFETY: the range is a mapping of this process that nothing here touches again (the
        // ring buffer's reader is the daemon's, and no thread of it runs here).
        unsafe { libc::munmap(start as *mut libc::c_void, end - start) };
    }
    let Ok(kept) = crate::caps::drop_all_except(keep) else {
        // SAFETY: as below: never serve with more than `keep`.
        unsafe { libc::_exit(1) }
    };
    // It executes nothing: nothing to pass on.
    let _ = ::caps::clear(None, CapSet::Inheritable);
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    tracing::debug!(capabilities = ?kept, "helper: serving");
    if sock.send(&[OK]).is_err() {
        // SAFETY: as below.
        unsafe { libc::_exit(0) }
    }
    let mut tls = (!scope.tls_programs.is_empty()).then(|| crate::tls::privileged::Privileged::new(&scope.procfs));
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let (n, fd) = match recv_message(&sock, &mut buf) {
            Ok((0, _)) | Err(_) => break,
            Ok(got) => got,
        };
        let request = &buf[..n.min(buf.len())];
        let reply = if n > MAX_REQUEST {
            Reply::code(REFUSED)
        } else if crate::tls::privileged::is_request(request) {
            match tls.as_mut() {
                Some(t) => t.answer(request, fd),
                None => Reply::code(REFUSED),
            }
        } else {
            let a = answer(scope, request);
            Reply { code: a[0], payload: a[1..].to_vec(), fd: None }
        };
        if send_answer(&sock, &reply).is_err() {
            break;
        }
    }
    // SAFETY: ends the process without running the daemon's destructors (see above).
    unsafe { libc::_exit(0) }
}

/// One message and the first descriptor passed with it (others are closed). A message longer
/// than `buf` gives `buf.len() + 1`.
fn recv_message(sock: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<(usize, Option<std::os::fd::OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(sock, &mut [std::io::IoSliceMut::new(buf)], &mut cmsg, RecvFlags::CMSG_CLOEXEC)?;
    let mut fd = None;
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                fd.get_or_insert(f);
            }
        }
    }
    let n = if got.flags.contains(ReturnFlags::TRUNC) { buf.len() + 1 } else { got.bytes };
    Ok((n, fd))
}

/// Sends one message, with `fd` when given.
fn send_message(sock: &UnixDatagram, msg: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let Some(fd) = fd else {
        sock.send(msg)?;
        return Ok(());
    };
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(sock, &[std::io::IoSlice::new(msg)], &mut cmsg, SendFlags::empty())?;
    Ok(())
}

/// Sends an answer: its payload in messages of at most [`MAX_ANSWER`] bytes, all but the last
/// marked [`MORE`], the descriptor with the last.
fn send_answer(sock: &UnixDatagram, reply: &Reply) -> std::io::Result<()> {
    use std::os::fd::AsFd as _;
    let mut rest = &reply.payload[..];
    let mut msg = Vec::with_capacity(MAX_ANSWER);
    loop {
        let take = rest.len().min(MAX_ANSWER - 1);
        let last = take == rest.len();
        msg.clear();
        msg.push(if last { reply.code } else { MORE });
        msg.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if last {
            return send_message(sock, &msg, reply.fd.as_ref().map(|f| f.as_fd()));
        }
        send_message(sock, &msg, None)?;
    }
}

/// Whether the helper runs (a scrape asks).
pub fn up() -> Option<bool> {
    let h = HELPER.get()?;
    if h.up.load(Ordering::Relaxed) {
        let mut reaped = h.reaped.lock().unwrap();
        let mut status = 0;
        // SAFETY: waitpid on the helper's pid (not reaped yet: checked under the lock), without
        // blocking.
        if !*reaped && unsafe { libc::waitpid(h.pid, &mut status, libc::WNOHANG) } == h.pid {
            *reaped = true;
            if h.up.swap(false, Ordering::Relaxed) {
                h.report(&format!("exit status {status:#x}"));
            }
        }
    }
    Some(h.up.load(Ordering::Relaxed))
}

impl Helper {
    /// Marks the helper gone (once): a helper that failed to answer is killed, so that no late
    /// answer is taken for the next request's, and reaped.
    fn gone(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            let mut reaped = self.reaped.lock().unwrap();
            if !*reaped {
                kill_and_reap(self.pid);
                *reaped = true;
            }
            self.report(why);
        }
    }

    fn report(&self, why: &str) {
        tracing::error!(
            why,
            "helper: the privileged helper is gone (collector_helper_up 0): declared service names and \
             Docker container names are read only where this process can itself, and HTTPS is no longer \
             captured (its uprobes were the helper's); restart the collector"
        );
    }

    /// One request and its answer: Some(payload) when answered OK, None otherwise.
    fn ask(&self, request: &[u8]) -> Option<Vec<u8>> {
        self.exchange(request, None).filter(|r| r.code == OK).map(|r| r.payload)
    }

    /// One request (with `fd` passed along) and its whole answer; None when the helper is gone
    /// or failed to answer (it is then killed).
    fn exchange(&self, request: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>) -> Option<Reply> {
        if !self.up.load(Ordering::Relaxed) {
            return None;
        }
        let mut guard = self.sock.lock().unwrap();
        let (sock, buf) = &mut *guard;
        if let Err(e) = send_message(sock, request, fd) {
            self.gone(&e.to_string());
            return None;
        }
        let mut payload = Vec::new();
        loop {
            match recv_message(sock, buf) {
                Ok((0, _)) => {
                    self.gone("end of the socket");
                    return None;
                }
                Ok((n, _)) if n > buf.len() || payload.len() + n > MAX_TOTAL => {
                    self.gone("an answer over the bound");
                    return None;
                }
                Ok((n, fd)) => {
                    payload.extend_from_slice(&buf[1..n]);
                    if buf[0] != MORE {
                        return Some(Reply { code: buf[0], payload, fd });
                    }
                }
                Err(e) => {
                    self.gone(&e.to_string());
                    return None;
                }
            }
        }
    }
}

/// Kills the helper and waits for it (a child of this process until reaped here, so the pid
/// cannot be another process's).
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: kill and waitpid take plain values.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Whether the helper was started and has not failed (its requests then replace the daemon's
/// own reads).
pub fn usable() -> bool {
    HELPER.get().is_some_and(|h| h.up.load(Ordering::Relaxed))
}

/// A request of the HTTPS capture (see [`crate::tls::privileged`]) and its answer, with `fd`
/// passed along; None when there is no helper, or it is gone.
pub fn exchange(request: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>) -> Option<Reply> {
    HELPER.get()?.exchange(request, fd)
}

/// The `OTEL_*` variables of process `pid` (NUL-separated), through the helper.
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    HELPER.get()?.ask(&[&[ENVIRON][..], &pid.to_le_bytes()].concat())
}

/// Container name, compose service and compose project of Docker container `id`, through the
/// helper.
pub fn docker_names(id: &str) -> Option<[String; 3]> {
    let answer = HELPER.get()?.ask(&[&[DOCKER][..], id.as_bytes()].concat())?;
    let mut parts = answer.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
    Some([parts.next()?, parts.next()?, parts.next()?])
}

/// The capabilities the helper keeps: reading other users' processes, where this process has
/// both (one is of no use without the other).
pub fn capabilities() -> Option<CapsHashSet> {
    let permitted = ::caps::read(None, CapSet::Permitted).ok()?;
    let want = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];
    want.iter().all(|c| permitted.contains(c)).then(|| want.into_iter().collect())
}

/// `collector_helper_up`, a source of the registry.
pub struct Metrics;

impl crate::metrics::Collector for Metrics {
    fn name(&self) -> &'static str {
        "helper"
    }

    fn collect(&self, out: &mut crate::metrics::Out) -> anyhow::Result<()> {
        if let Some(up) = up() {
            let mut f = crate::metrics::Family::gauge(
                "collector_helper_up",
                "1 while the privileged helper (other users' declared service names, Docker container \
                 names, the HTTPS capture's file reads and uprobes) runs, 0 once it is gone.",
            );
            f.add(&[], if up { 1.0 } else { 0.0 });
            out.push(f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(dir: &Path) -> Scope {
        Scope { procfs: dir.join("proc"), docker_dir: dir.join("docker"), tls_programs: Vec::new() }
    }

    #[test]
    fn environments_give_only_otel_variables() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/42")).unwrap();
        std::fs::write(
            d.path().join("proc/42/environ"),
            b"PATH=/bin\0OTEL_SERVICE_NAME=cart\0DB_PASSWORD=secret\0OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop\0",
        )
        .unwrap();
        let s = scope(d.path());
        let a = answer(&s, &[&[ENVIRON][..], &42u32.to_le_bytes()].concat());
        assert_eq!(a, b"\0OTEL_SERVICE_NAME=cart\0OTEL_RESOURCE_ATTRIBUTES=service.namespace=shop\0");
        // No such process; nothing declared.
        assert_eq!(answer(&s, &[&[ENVIRON][..], &43u32.to_le_bytes()].concat()), [NONE]);
        std::fs::write(d.path().join("proc/42/environ"), b"PATH=/bin\0").unwrap();
        assert_eq!(answer(&s, &[&[ENVIRON][..], &42u32.to_le_bytes()].concat()), [NONE]);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = scope(d.path());
        for bad in [
            &b""[..],
            &[ENVIRON],
            &[ENVIRON, 1, 0, 0],
            &[ENVIRON, 1, 0, 0, 0, 0],
            &[ENVIRON, 0, 0, 0, 0],
            &[ENVIRON, 0xff, 0xff, 0xff, 0xff],
            &[DOCKER],
            b"\x02../../../../etc/shadow",
            b"\x020123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde/",
            b"\x020123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            &[3, 0, 0, 0, 0],
            &[0xff; 200],
        ] {
            assert_eq!(answer(&s, bad), [REFUSED], "{bad:?}");
        }
    }

    #[test]
    fn docker_configs_give_names_only_and_no_links() {
        let d = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef".repeat(4);
        let dir = d.path().join("docker").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.v2.json"),
            br#"{"Name":"/shop-web-1","Config":{"Env":["SECRET=x"],"Labels":{"com.docker.compose.service":"web","com.docker.compose.project":"shop"}}}"#,
        )
        .unwrap();
        let s = scope(d.path());
        let req = [&[DOCKER][..], id.as_bytes()].concat();
        assert_eq!(answer(&s, &req), b"\0shop-web-1\0web\0shop\0");
        // A container directory that links elsewhere, a config that is a link: refused to read.
        let other = "fedcba9876543210".repeat(4);
        std::os::unix::fs::symlink(&dir, d.path().join("docker").join(&other)).unwrap();
        assert_eq!(answer(&s, &[&[DOCKER][..], other.as_bytes()].concat()), [NONE]);
        std::fs::rename(dir.join("config.v2.json"), dir.join("real.json")).unwrap();
        std::os::unix::fs::symlink(dir.join("real.json"), dir.join("config.v2.json")).unwrap();
        assert_eq!(answer(&s, &req), [NONE]);
    }

    /// The transport: an oversized request is seen as such (the helper refuses it), an answer
    /// over one message arrives whole, and a descriptor passed with it arrives with it.
    #[test]
    fn messages_over_the_bounds_and_descriptors() {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the array it is given.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here alone.
        let (a, b) = unsafe { (UnixDatagram::from_raw_fd(fds[0]), UnixDatagram::from_raw_fd(fds[1])) };
        let mut buf = vec![0u8; MAX_REQUEST + 1];
        a.send(&vec![ENVIRON; MAX_REQUEST + 100]).unwrap();
        assert_eq!(recv_message(&b, &mut buf).unwrap().0, MAX_REQUEST + 2);
        a.send(&vec![ENVIRON; MAX_REQUEST]).unwrap();
        assert_eq!(recv_message(&b, &mut buf).unwrap().0, MAX_REQUEST);
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let payload: Vec<u8> = (0..3 * MAX_ANSWER + 7).map(|i| i as u8).collect();
        let reply = Reply { code: OK, payload: payload.clone(), fd: Some(file.into()) };
        send_answer(&a, &reply).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; MAX_ANSWER];
        loop {
            let (n, fd) = recv_message(&b, &mut buf).unwrap();
            assert!(n <= MAX_ANSWER);
            got.extend_from_slice(&buf[1..n]);
            if buf[0] != MORE {
                assert_eq!(buf[0], OK);
                assert!(fd.is_some());
                break;
            }
            assert!(fd.is_none());
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn answers_are_bounded() {
        let mut raw = Vec::new();
        for i in 0..10_000 {
            raw.extend(format!("OTEL_X{i}=value\0").bytes());
        }
        let out = otel_variables(&raw);
        assert!(out.len() < MAX_ANSWER && out.ends_with(b"\0") && out.starts_with(b"OTEL_X0=value\0"));
    }
}
