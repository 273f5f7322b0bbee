//! HPACK header block decoding (RFC 7541): the decoder half only, for the HTTP/2 assembler.
//!
//! Why not a crate: loona-hpack (and hpack, fluke-hpack, which share its code) builds a map of
//! maps of the whole Huffman code for every Huffman-coded string (about 19 µs a string, most of
//! a typical gRPC request's first block's 170 µs); httlib-hpack panics on truncated input and
//! is quadratic; h2's decoder is private. This one decodes Huffman strings with a state machine
//! built at compile time (huffman.rs), never panics, and allocates nothing per field once its
//! buffers have grown.
//!
//! Bounds: the dynamic table's size as HPACK counts it (§4.1: name, value and 32 bytes an
//! entry) never exceeds the maximum the decoder allows ([`Decoder::set_max_allowed`], the
//! SETTINGS_HEADER_TABLE_SIZE its endpoint sent); its memory is at most about three times that
//! (the entries' bytes, with room to append before they are compacted, and their positions),
//! plus a buffer for the Huffman-decoded strings of one field, kept up to 4 KiB between blocks.
//!
//! Partial tables: a decoder that cannot know what its table holds ([`Decoder::forget`]: its
//! connection was followed from the middle, or bytes of a block were lost) goes on decoding
//! with what it learns from then on. HPACK's dynamic index 1 is always the latest entry added,
//! so an index up to the number of entries added since is exactly known; a larger one refers to
//! an entry that was never seen, and its field is *unknown*: not passed, only counted
//! ([`Decoder::unknown`]). A literal whose name is such an entry adds an entry whose name is
//! unknown. Such a table keeps what it adds up to the most it may hold (the encoder's real
//! maximum is unknown: keeping an entry the encoder evicted costs nothing, as it is never
//! referred to again), and a size update to 0 makes it whole again (every entry evicted).
//!
//! Privacy: header names and values are kept only in the dynamic table, as HPACK requires (the
//! encoder refers to them in later blocks). Evicted entries' bytes are zeroed at once, as are
//! the Huffman-decoded strings after each field and after each block; after an error the table
//! is emptied. (Memory that a growing buffer gives back to the allocator is not zeroed.)
use std::collections::VecDeque;
use std::fmt;

#[path = "huffman.rs"]
mod huffman;

/// HTTP/2's initial dynamic table size (RFC 9113 §6.5.2), which a new decoder starts with.
const INITIAL: usize = 4096;
/// What an entry counts beyond its name and value (§4.1).
const OVERHEAD: usize = 32;
/// Capacity the Huffman buffer keeps from one block to the next.
const KEEP_SCRATCH: usize = 4096;

/// Why a header block did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a field (an integer, or a string shorter than its length).
    Truncated,
    /// An integer above `u32::MAX`, or longer than 5 bytes after its prefix.
    Integer,
    /// Index 0, or an index past the static and dynamic tables.
    Index,
    /// A Huffman-coded string with EOS in it, or padding longer than 7 bits or not all ones.
    Huffman,
    /// A dynamic table size update above the maximum allowed.
    TableSize,
    /// A dynamic table size update after the block's first field (§4.2 puts them first).
    LateSizeUpdate,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "header block truncated",
            Error::Integer => "integer too large",
            Error::Index => "index not in the tables",
            Error::Huffman => "invalid Huffman-coded string",
            Error::TableSize => "dynamic table size update above the maximum allowed",
            Error::LateSizeUpdate => "dynamic table size update after a field",
        })
    }
}

impl std::error::Error for Error {}

/// The decoder of one direction of a connection: every header block it sends, in order.
pub struct Decoder {
    table: Table,
    /// The largest table size the encoder may choose (SETTINGS_HEADER_TABLE_SIZE).
    max_allowed: usize,
    /// The Huffman-decoded strings of the field being decoded (and dynamic names copied).
    scratch: Vec<u8>,
    /// The table holds entries that were never seen (see the module's "Partial tables").
    partial: bool,
    /// Fields of the last block decoded whose name or value was such an entry.
    unknown: usize,
    /// The largest table it follows at all: [`Decoder::forget`]'s table size.
    ceiling: usize,
}

impl Decoder {
    /// A decoder whose encoder may use a table of up to `max_allowed` bytes; its table starts
    /// at HTTP/2's 4096 bytes, or `max_allowed` if smaller. A table it cannot know is followed
    /// up to `max_allowed` too; [`Decoder::with_ceiling`] sets another bound for that.
    pub fn new(max_allowed: usize) -> Self {
        Self {
            table: Table::new(INITIAL.min(max_allowed)),
            max_allowed,
            scratch: Vec::new(),
            partial: false,
            unknown: 0,
            ceiling: max_allowed,
        }
    }

    /// The same decoder, following a table it cannot know up to `ceiling` bytes (the most any
    /// SETTINGS_HEADER_TABLE_SIZE is followed to).
    pub fn with_ceiling(mut self, ceiling: usize) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// The table can no longer be known (the connection is followed from its middle, or entries
    /// were added in bytes that were lost): it is emptied, and from now on indices beyond what
    /// is added again are unknown fields (the module's "Partial tables"). Size updates up to the
    /// ceiling are taken, as the encoder's maximum is not known either.
    pub fn forget(&mut self) {
        self.table.clear();
        self.table.max = self.ceiling;
        self.max_allowed = self.max_allowed.max(self.ceiling);
        self.partial = true;
    }

    /// Whether the table holds entries that were never seen.
    pub fn partial(&self) -> bool {
        self.partial
    }

    /// Fields of the last block [`Decoder::decode`] went through that were not passed, as their
    /// name or value is an entry never seen (0 unless the table is partial).
    pub fn unknown(&self) -> usize {
        self.unknown
    }

    /// A new maximum for the encoder's table (a SETTINGS_HEADER_TABLE_SIZE of the decoding
    /// endpoint). Size updates above it are errors from now on. A table larger than it shrinks
    /// at once (evicting) without waiting for the size update that the encoder must then send
    /// (§4.2): lenient, as the update is not required, and the bound holds.
    pub fn set_max_allowed(&mut self, n: usize) {
        self.max_allowed = n;
        if self.table.max > n {
            self.table.set_max(n);
        }
    }

    /// Decodes one header block (the whole of it: HEADERS or PUSH_PROMISE and CONTINUATIONs),
    /// calling `f(name, value)` for each field in order; size updates are applied, not passed.
    ///
    /// On an error the fields passed before it stand, and the table can no longer be known
    /// ([`Decoder::forget`]; an endpoint would end the connection, HTTP/2 makes any decoding
    /// error a connection error, so this happens only where bytes were lost or changed).
    pub fn decode(&mut self, block: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> Result<(), Error> {
        self.unknown = 0;
        let res = self.fields(block, &mut f);
        wipe(&mut self.scratch);
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
        if res.is_err() {
            self.forget();
        }
        res
    }

    fn fields(&mut self, block: &[u8], f: &mut impl FnMut(&[u8], &[u8])) -> Result<(), Error> {
        let Self { table, max_allowed, scratch, partial, unknown, .. } = self;
        let mut rest = block;
        let mut first = true;
        while let Some(&b) = rest.first() {
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                match table.get(int(&mut rest, 7)?, *partial)? {
                    Some((name, value)) => f(name, value),
                    None => *unknown += 1,
                }
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3).
                if !first {
                    return Err(Error::LateSizeUpdate);
                }
                let n = int(&mut rest, 5)?;
                if n > *max_allowed {
                    return Err(Error::TableSize);
                }
                table.set_max(n);
                if n == 0 {
                    // Every entry evicted: the table is known again.
                    *partial = false;
                }
                continue;
            } else {
                // Literal field with incremental indexing (§6.2.1), without indexing (§6.2.2)
                // or never indexed (§6.2.3): an indexed or literal name, a literal value.
                let index = b & 0x40 != 0;
                let i = int(&mut rest, if index { 6 } else { 4 })?;
                wipe(scratch);
                let name = match i {
                    0 => Some(string(&mut rest, scratch)?),
                    _ => match STATIC.get(i - 1) {
                        Some(&(name, _)) => Some(Str::Raw(name)),
                        // Copied: the entry may be evicted when this field is added.
                        None => table.get(i, *partial)?.map(|(name, _)| {
                            scratch.extend_from_slice(name);
                            Str::Buf(0, scratch.len())
                        }),
                    },
                };
                let value = string(&mut rest, scratch)?;
                let value = value.bytes(scratch);
                match name {
                    Some(name) => {
                        let name = name.bytes(scratch);
                        f(name, value);
                        if index {
                            table.insert(name, value, false);
                        }
                    }
                    None => {
                        *unknown += 1;
                        if index {
                            table.insert(&[], value, true);
                        }
                    }
                }
            }
            first = false;
        }
        Ok(())
    }
}

/// A string of a field: in the block, or in the decoder's buffer (a range of it).
enum Str<'b> {
    Raw(&'b [u8]),
    Buf(usize, usize),
}

impl<'b> Str<'b> {
    fn bytes<'a>(&self, scratch: &'a [u8]) -> &'a [u8]
    where
        'b: 'a,
    {
        match *self {
            Str::Raw(s) => s,
            Str::Buf(a, b) => scratch.get(a..b).unwrap_or_default(),
        }
    }
}

/// Reads an integer with a `prefix`-bit prefix (§5.1) off the front of `rest`.
fn int(rest: &mut &[u8], prefix: u32) -> Result<usize, Error> {
    let (&first, mut tail) = rest.split_first().ok_or(Error::Truncated)?;
    let max = (1u32 << prefix) - 1;
    let mut v = u32::from(first) & max;
    if v == max {
        let mut shift = 0;
        loop {
            let (&b, t) = tail.split_first().ok_or(Error::Truncated)?;
            tail = t;
            let sum = u64::from(v) + (u64::from(b & 0x7f) << shift);
            v = u32::try_from(sum).map_err(|_| Error::Integer)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(Error::Integer);
            }
        }
    }
    *rest = tail;
    usize::try_from(v).map_err(|_| Error::Integer)
}

/// Reads a string literal (§5.2) off the front of `rest`; a Huffman-coded one is decoded onto
/// the end of `scratch`.
fn string<'b>(rest: &mut &'b [u8], scratch: &mut Vec<u8>) -> Result<Str<'b>, Error> {
    let huffman = rest.first().is_some_and(|b| b & 0x80 != 0);
    let len = int(rest, 7)?;
    let (s, tail) = rest.split_at_checked(len).ok_or(Error::Truncated)?;
    *rest = tail;
    if !huffman {
        return Ok(Str::Raw(s));
    }
    let start = scratch.len();
    huffman::decode(s, scratch)?;
    Ok(Str::Buf(start, scratch.len()))
}

/// Zeroes and empties a buffer of header bytes.
fn wipe(buf: &mut Vec<u8>) {
    buf.fill(0);
    buf.clear();
}

/// A field's name and value.
type Field<'a> = (&'a [u8], &'a [u8]);

/// One dynamic table entry: its name then its value, at `start` in `Table::bytes`.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    name: usize,
    /// Name and value.
    len: usize,
    /// Its name is an entry that was never seen (a partial table's): the field is unknown.
    anon: bool,
}

/// The dynamic table (§2.3.2, §4). Entries' bytes are appended to one buffer, oldest first;
/// those of evicted entries are zeroed, and moved out when the buffer would pass 1.5 times the
/// maximum size (so each byte is moved at most twice on average, and nothing is allocated once
/// the buffer has grown).
struct Table {
    /// Oldest first: HPACK's index 62 is the last.
    entries: VecDeque<Entry>,
    bytes: Vec<u8>,
    /// Size as HPACK counts it.
    size: usize,
    max: usize,
}

impl Table {
    fn new(max: usize) -> Self {
        Self { entries: VecDeque::new(), bytes: Vec::new(), size: 0, max }
    }

    /// Bytes the buffer may take.
    fn room(&self) -> usize {
        self.max + self.max / 2
    }

    /// The field at HPACK index `i` (static table first); `None` where it is not known: an
    /// entry whose name is unknown, or (`partial`: the table holds entries never seen) an index
    /// beyond the entries seen.
    fn get(&self, i: usize, partial: bool) -> Result<Option<Field<'_>>, Error> {
        if let Some(&field) = i.checked_sub(1).and_then(|j| STATIC.get(j)) {
            return Ok(Some(field));
        }
        let j = i.checked_sub(STATIC.len() + 1).ok_or(Error::Index)?;
        let Some(e) = self.entries.len().checked_sub(j + 1).and_then(|k| self.entries.get(k)) else {
            return if partial { Ok(None) } else { Err(Error::Index) };
        };
        if e.anon {
            return Ok(None);
        }
        let field = self.bytes.get(e.start..e.start + e.len).ok_or(Error::Index)?;
        field.split_at_checked(e.name).map(Some).ok_or(Error::Index)
    }

    /// A new maximum size (a size update): entries beyond it are evicted.
    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict(max);
        if self.bytes.capacity() > self.room() {
            self.compact();
            self.bytes.shrink_to(self.room());
            self.entries.shrink_to(self.max / OVERHEAD);
        }
    }

    /// Evicts the oldest entries until the size is at most `target`.
    fn evict(&mut self, target: usize) {
        while self.size > target {
            let Some(e) = self.entries.pop_front() else { break };
            if let Some(b) = self.bytes.get_mut(e.start..e.start + e.len) {
                b.fill(0);
            }
            self.size -= e.len + OVERHEAD;
        }
        if self.entries.is_empty() {
            self.size = 0;
            self.bytes.clear();
        }
    }

    /// Adds a field (§4.4): evicts what it needs; a field larger than the table empties it.
    /// `anon`: its name is not known (`name` empty; it counts only its value).
    fn insert(&mut self, name: &[u8], value: &[u8], anon: bool) {
        let len = name.len() + value.len();
        let Some(target) = self.max.checked_sub(len + OVERHEAD) else {
            return self.evict(0);
        };
        self.evict(target);
        // The live bytes and this entry's are at most `max`.
        if self.bytes.len() + len > self.room() {
            self.compact();
        }
        let need = self.bytes.len() + len;
        if need > self.bytes.capacity() {
            let cap = (self.bytes.capacity() * 2).min(self.room()).max(need);
            self.bytes.reserve_exact(cap - self.bytes.len());
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.entries.push_back(Entry { start, name: name.len(), len, anon });
        self.size += len + OVERHEAD;
    }

    /// Moves the live bytes to the front of the buffer.
    fn compact(&mut self) {
        let dead = self.entries.front().map_or(self.bytes.len(), |e| e.start);
        if dead == 0 {
            return;
        }
        self.bytes.copy_within(dead.., 0);
        let live = self.bytes.len() - dead;
        if let Some(old) = self.bytes.get_mut(live..) {
            old.fill(0);
        }
        self.bytes.truncate(live);
        for e in &mut self.entries {
            e.start -= dead;
        }
    }

    /// Empties the table and frees its memory.
    fn clear(&mut self) {
        self.bytes.fill(0);
        *self = Self::new(self.max);
    }
}

/// The static table (Appendix A); index 1 is the first.
static STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
#[path = "tests_hpack.rs"]
mod tests;
