//! Protocol detection, in one place: what the first bytes of a connection's stream (or of a
//! segment seen from the middle of one) say it carries. A connection is classified once, on its
//! first segment with payload: followed by its protocol from then on, or marked not followed
//! (one byte of socket storage) and not looked at again.
use collector_common::{
    http::{known_method, le},
    http2::is_server_preface,
};

/// What a stream's first bytes are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An HTTP/1.x request line.
    Request,
    /// An HTTP/1.x status line ("HTTP/").
    Response,
    /// The HTTP/2 connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", prior knowledge).
    Http2,
    /// An HTTP/2 server's first frame (SETTINGS on stream 0), at the start of its stream: a
    /// server may send it before the client's preface arrives.
    Http2Server,
    /// A TLS handshake record (content type 22, version 3.x).
    Tls,
    /// Anything else.
    Other,
}

/// The class of bytes whose first eight are `head` (little-endian, zero-padded). `at_start`:
/// they are the first of their stream, where any upper-case letter may start a request line
/// (a method is any token, RFC 9110); in the middle of a stream only a known method does, so
/// that a body's bytes are not taken for one.
#[inline(always)]
pub fn classify(head: u64, at_start: bool) -> Class {
    if head & 0xff_ffff_ffff == le(b"HTTP/") {
        Class::Response
    } else if head == le(b"PRI * HT") {
        Class::Http2
    } else if head & 0xffff == 0x0316 {
        Class::Tls
    } else if at_start && is_server_preface(head) {
        Class::Http2Server
    } else if if at_start { (head as u8).is_ascii_uppercase() } else { known_method(head).is_some() } {
        Class::Request
    } else {
        Class::Other
    }
}
