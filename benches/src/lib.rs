//! Benchmarks only: see `benches/scrape.rs` and README.md.
