//! Load: 100 concurrent scrapers for 60 s while HTTP traffic runs as fast as the machine
//! allows; no scrape may fail and the collector's memory must stay bounded. Each scraper is
//! a Prometheus with a 1 s scrape interval (100 scrapes a second in all, at random phases).
mod common;

#[path = "common/http.rs"]
mod http_util;

use std::{
    io::Read as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::Collector;

const SCRAPERS: usize = 100;
const DURATION: Duration = Duration::from_secs(60);
const INTERVAL: Duration = Duration::from_secs(1);

#[test]
fn a_hundred_scrapers_for_a_minute_under_http_load() {
    // Room for every scraper (the default cap, 40, would answer the rest 503 by design).
    let c = Collector::start(&["--web.max-requests", &SCRAPERS.to_string()]);
    let srv = http_util::TestServer::start("127.0.0.1");
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));

    // HTTP traffic: keep-alive clients as fast as they go (the machine's limit on 2 cores).
    let traffic: Vec<_> = (0..4)
        .map(|i| {
            let (addr, stop, requests) = (srv.addr.clone(), stop.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut cl = http_util::Client::connect(&addr);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let status = [200, 404, 500][(n % 3) as usize];
                    assert_eq!(cl.get(&format!("/load{i}?status={status}")).status, status);
                    n += 1;
                }
                requests.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    let url = c.url("/metrics");
    let started = Instant::now();
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|i| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                // Prometheus' default scrape timeout is 10 s.
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                let (mut ok, mut failed, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
                let mut next = Instant::now() + INTERVAL.mul_f64(i as f64 / SCRAPERS as f64);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += INTERVAL;
                    let t = Instant::now();
                    match agent.get(&url).call() {
                        Ok(r) if r.status() == 200 => {
                            let mut body = String::new();
                            if let Err(e) = r.into_reader().read_to_string(&mut body) {
                                failed.push(format!("reading the body: {e}"));
                            } else if body.contains("collector_scrape_collector_success{collector=\"http\"} 1") {
                                ok += 1;
                            } else {
                                failed.push("incomplete exposition".to_owned());
                            }
                        }
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                    slowest = slowest.max(t.elapsed());
                }
                (ok, failed, slowest)
            })
        })
        .collect();

    let mut rss = Vec::new();
    while started.elapsed() < DURATION {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(c.rss_kb());
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
    for s in scrapers {
        let (o, f, sl) = s.join().unwrap();
        ok += o;
        failed.extend(f);
        slowest = slowest.max(sl);
    }
    for t in traffic {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = requests.load(Ordering::Relaxed);
    let first = *rss[..10].iter().max().unwrap();
    let last = *rss[rss.len() - 10..].iter().max().unwrap();
    let peak = *rss.iter().max().unwrap();
    eprintln!(
        "{ok} scrapes ({:.0}/s), {} failed, slowest {slowest:?}; {requests} HTTP requests ({:.0}/s); \
         RSS max of first 10 s {} MiB, of last 10 s {} MiB, peak {} MiB",
        ok as f64 / elapsed,
        failed.len(),
        requests as f64 / elapsed,
        first / 1024,
        last / 1024,
        peak / 1024
    );
    assert!(failed.is_empty(), "{} failed scrapes, e.g. {:?}", failed.len(), &failed[..failed.len().min(5)]);
    // Nearly every scheduled scrape happened (a scrape slower than the interval skips none,
    // it only delays the next one).
    assert!(ok as f64 >= SCRAPERS as f64 * elapsed / INTERVAL.as_secs_f64() * 0.8, "only {ok} scrapes");
    assert!(requests > 1000, "only {requests} HTTP requests");
    // Bounded: no growth from the first 10 s to the last beyond noise, and a fixed ceiling.
    assert!(last <= first + first / 2 + 8 * 1024, "RSS grew from {first} kB to {last} kB");
    assert!(peak < 512 * 1024, "RSS peaked at {peak} kB");
    // The collector still answers normally afterwards.
    let m = c.scrape();
    assert_eq!(m.get("collector_scrape_collector_success", &[("collector", "http")]), 1.0);
}
