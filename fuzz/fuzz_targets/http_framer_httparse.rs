//! The HTTP framer (collector_common::http::framer) against httparse, the reference HTTP/1.x
//! parser: the input is a response head (any bytes up to a blank line), a body, and where the
//! stream is cut into segments. When httparse reads a complete head whose framing RFC 9112
//! fixes (one Content-Length of digits and no Transfer-Encoding), and the status has a body,
//! the framer, driven as the kernel programs drive it, must report one exchange with the same
//! status and body size.
#![no_main]
use collector_common::http::sim::Conn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let (head, rest) = data.split_at(end + 4);
    let (cuts, _) = rest.split_at(rest.len().min(16));
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hs);
    let Ok(httparse::Status::Complete(n)) = resp.parse(head) else { return };
    if n != head.len() {
        return;
    }
    let status = resp.code.unwrap_or(0);
    if !(200..600).contains(&status) || status == 204 || status == 304 {
        return;
    }
    let cl: Vec<&[u8]> =
        resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).map(|h| h.value).collect();
    let te = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let [value] = cl.as_slice() else { return };
    let Ok(text) = std::str::from_utf8(value) else { return };
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    if te || text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 6 {
        return;
    }
    let len: usize = text.parse().unwrap();
    let mut c = Conn::new(false, 7, 1 << 31);
    c.write(true, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    c.write(false, head);
    c.write(false, &vec![b'b'; len]);
    c.send_all(true, 0, 1460, 1);
    // The response in segments whose sizes come from the input.
    let total = c.len(false);
    let (mut o, mut k) = (0, 0);
    while o < total {
        let n = (cuts.get(k).copied().unwrap_or(255) as usize + 1).min(total - o);
        c.segment(false, o, n, false, 2);
        o += n;
        k += 1;
    }
    assert_eq!(c.sink.done.len(), 1, "{:?}", String::from_utf8_lossy(head));
    assert_eq!((c.sink.done[0].status, c.sink.done[0].resp_bytes), (status, len as u64));
});
