//! The HTTP endpoint: pages, content type, gzip, telemetry path.
mod common;

use std::io::Read as _;

use common::Collector;

#[test]
fn pages_content_type_and_gzip() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf"]);
    let landing = ureq::get(&c.url("/")).call().unwrap().into_string().unwrap();
    assert!(landing.contains("href=\"/metrics\""), "{landing}");
    assert_eq!(ureq::get(&c.url("/-/healthy")).call().unwrap().status(), 200);
    assert_eq!(ureq::get(&c.url("/-/ready")).call().unwrap().status(), 200);

    let plain = ureq::get(&c.url("/metrics")).call().unwrap();
    assert_eq!(plain.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(plain.header("content-encoding"), None);

    let gz = ureq::get(&c.url("/metrics")).set("Accept-Encoding", "gzip").call().unwrap();
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut compressed = Vec::new();
    gz.into_reader().read_to_end(&mut compressed).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut text).unwrap();
    assert!(compressed.len() < text.len() / 2, "{} compressed vs {} plain", compressed.len(), text.len());
    let m = common::Metrics::parse(&text);
    assert!(m.get("system_memory_total_bytes", &[]) > 0.0);
    assert_eq!(m.get("collector_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
}

#[test]
fn telemetry_path_is_configurable() {
    let c = Collector::start(&["--no-collector.diskbpf", "--no-collector.netbpf", "--web.telemetry-path", "/custom"]);
    assert_eq!(ureq::get(&c.url("/custom")).call().unwrap().status(), 200);
    match ureq::get(&c.url("/metrics")).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404 for /metrics, got {other:?}"),
    }
}
