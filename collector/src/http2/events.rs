//! The kernel's HTTP/2 frames (`HTTP2_EVENTS`, a ring buffer) read by a thread of their own:
//! each event goes to the assembler at once (its header bytes are decoded and dropped there),
//! and the streams it finishes into the aggregated records the scrape reads.
use std::{
    os::fd::{AsFd, AsRawFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{Map, MapData, RingBuf};
use collector_common::http2::{CHUNK, Event};

use super::{
    assemble::{Assembler, Limits, Stats},
    records::Records,
};

/// What the reader thread shares with the scrape.
pub struct Shared {
    pub records: Mutex<Records>,
    /// The assembler's counters, as of its last batch of events.
    pub stats: Mutex<Stats>,
    /// Connections the assembler follows now.
    pub connections: Mutex<usize>,
    /// Expiry of the RPC histograms' entries.
    pub expiry: super::families::RpcExpiry,
}

/// The reader set up by [`start`], waiting for its thread ([`spawn_reader`]).
type Pending = (RingBuf<MapData>, Arc<Shared>);
static PENDING: Mutex<Option<Pending>> = Mutex::new(None);

/// Sets up the reader of the `HTTP2_EVENTS` ring buffer `map`; its thread starts with
/// [`spawn_reader`], once the capabilities are dropped (a thread keeps the capabilities of the
/// moment it was created: README, Security).
pub fn start(map: Map, records: Records, expiry: super::families::RpcExpiry) -> anyhow::Result<Arc<Shared>> {
    let ring: RingBuf<MapData> = RingBuf::try_from(map).context("opening the HTTP2_EVENTS ring buffer")?;
    let shared = Arc::new(Shared {
        records: Mutex::new(records),
        stats: Mutex::new(Stats::default()),
        connections: Mutex::new(0),
        expiry,
    });
    *PENDING.lock().unwrap() = Some((ring, shared.clone()));
    Ok(shared)
}

/// Starts the thread of the reader [`start`] set up, if any.
pub fn spawn_reader() -> anyhow::Result<()> {
    let Some((ring, shared)) = PENDING.lock().unwrap().take() else { return Ok(()) };
    std::thread::Builder::new()
        .name("http2-events".into())
        .spawn(move || read(ring, &shared))
        .context("starting the HTTP/2 event reader")?;
    Ok(())
}

/// Exchanges recorded at a time (one lock of the records).
const FLUSH: usize = 256;

/// Records the exchanges finished so far.
fn flush(shared: &Shared, done: &mut Vec<super::assemble::Done>) {
    if done.is_empty() {
        return;
    }
    let mut r = shared.records.lock().unwrap();
    for d in done.drain(..) {
        r.add(&d);
    }
}

/// Waits for events (20 ms at a time: the programs wake the reader only once a quarter of the
/// buffer waits, see collector-ebpf/src/http2.rs), and hands each batch to the assembler.
fn read(mut ring: RingBuf<MapData>, shared: &Shared) {
    let mut asm = Assembler::new(Limits::default());
    let mut done = Vec::new();
    loop {
        let mut pfd = libc::pollfd { fd: ring.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, 20) };
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            tracing::error!(error = %std::io::Error::last_os_error(), "http2: polling the event ring buffer failed");
            std::thread::sleep(Duration::from_secs(1));
        }
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the record holds at least `size_of::<Event>()` bytes (checked), written
            // whole by the kernel program (collector-ebpf/src/http2.rs); `Event` is plain data
            // for which any bytes are a valid value; read unaligned into a local.
            let mut ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            drop(item);
            asm.event(&ev, &mut |d| done.push(d));
            // Header bytes are not kept (README, Security).
            ev.data = [0; CHUNK];
            std::hint::black_box(&ev);
            // A buffer that stays full is still seen by the scrapes, batch by batch.
            if done.len() >= FLUSH {
                flush(shared, &mut done);
            }
        }
        flush(shared, &mut done);
        *shared.stats.lock().unwrap() = *asm.stats();
        *shared.connections.lock().unwrap() = asm.connections();
    }
}
