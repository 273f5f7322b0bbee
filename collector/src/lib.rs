//! collector: polls eBPF maps and procfs on every scrape and serves Prometheus metrics.
//! Data flows one way: kernel hooks → maps → collectors (pollers) → registry → HTTP endpoint.
//!
//! The binary (`main.rs`) only parses flags and sets up logging; everything else is here so
//! benchmarks and tests can drive the same code.
pub mod app;
pub mod bpf;
pub mod caps;
pub mod cgroup;
pub mod cli;
pub mod collectors;
pub mod disk;
pub mod filesystem;
pub mod helper;
pub mod host;
pub mod http;
pub mod http2;
pub mod identity;
pub mod metrics;
pub mod network;
pub mod server;
pub mod tls;
pub mod webconfig;
