//! Two test hosts joined by a veth pair, each in its own network namespace (addresses exist only
//! inside them; everything is removed on drop), and a deterministic fault injector on the link:
//! the `tc` program `fault_injector` (collector-ebpf/src/bin/fault_injector.rs) drops, duplicates
//! or swaps every Nth TCP data segment one host sends.
#![allow(dead_code)]

use std::{os::fd::AsRawFd as _, path::PathBuf, process::Command};

/// A command that must succeed.
fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// One of the two hosts.
#[derive(Clone, Debug)]
pub struct Host {
    /// The network namespace (`ip netns` name).
    pub ns: String,
    /// Its end of the veth pair.
    pub dev: String,
    /// Its address, without a prefix length.
    pub ip: String,
}

impl Host {
    /// Runs `f` on a thread that has entered this host's network namespace: sockets it creates
    /// (listeners, connections) live there for good, whichever thread uses them later.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&self.ns);
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// `ip netns exec` for a command in this host.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// A counter of `nstat` (e.g. `TcpExtTCPOFOQueue`) in this host, absolute.
    pub fn nstat(&self, name: &str) -> u64 {
        let out = self.command("nstat").args(["-a", "-z", name]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next().unwrap().parse().unwrap())
            })
            .unwrap_or(0)
    }
}

/// Moves the calling thread into a network namespace (setns applies to one thread).
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("opening the namespace");
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Two hosts on one veth link, with segmentation offloads off on both ends so that every TCP
/// segment crosses the link (and the fault injector) on its own, as on a real network.
pub struct Link {
    pub server: Host,
    pub client: Host,
    pub v6: bool,
}

impl Link {
    pub fn new(tag: &str, v6: bool) -> Link {
        let id = format!("{}{}", tag, std::process::id() % 100_000);
        let (ns_s, ns_c) = (format!("cs-{id}"), format!("cc-{id}"));
        let (dev_s, dev_c) = (format!("vs{id}"), format!("vc{id}"));
        let (ip_s, ip_c, prefix) =
            if v6 { ("fd00:c011::1", "fd00:c011::2", "64") } else { ("10.231.0.1", "10.231.0.2", "24") };
        let link = Link {
            server: Host { ns: ns_s.clone(), dev: dev_s.clone(), ip: ip_s.into() },
            client: Host { ns: ns_c.clone(), dev: dev_c.clone(), ip: ip_c.into() },
            v6,
        };
        run(&["ip", "netns", "add", &ns_s]);
        run(&["ip", "netns", "add", &ns_c]);
        run(&["ip", "link", "add", &dev_s, "netns", &ns_s, "type", "veth", "peer", "name", &dev_c, "netns", &ns_c]);
        for h in [&link.server, &link.client] {
            let addr = format!("{}/{prefix}", h.ip);
            let ns = h.ns.as_str();
            if v6 {
                run(&["ip", "-n", ns, "-6", "addr", "add", &addr, "dev", &h.dev, "nodad"]);
            } else {
                run(&["ip", "-n", ns, "addr", "add", &addr, "dev", &h.dev]);
            }
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "link", "set", &h.dev, "up"]);
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", &h.dev, "tso", "off", "gso", "off", "gro", "off"]);
        }
        link
    }

    /// `ip:port` of a server on the server host, as a client connects to it.
    pub fn server_addr(&self, port: u16) -> String {
        if self.v6 { format!("[{}]:{port}", self.server.ip) } else { format!("{}:{port}", self.server.ip) }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the other end.
        for ns in [&self.server.ns, &self.client.ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// What the fault injector does to every Nth data segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Drop = 1,
    Duplicate = 2,
    /// Held back and sent after the next data segment of its connection.
    Swap = 3,
}

/// Segments seen and impaired by an injector.
#[derive(Clone, Copy, Debug, Default)]
pub struct Injected {
    pub data_segments: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub swapped: u64,
}

impl Injected {
    pub fn faults(&self) -> u64 {
        self.dropped + self.duplicated + self.swapped
    }
}

fn injector_object() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../collector-ebpf/target/bpfel-unknown-none/release/fault_injector")
}

/// The fault injector on the ingress of one host's veth end (what that host receives is impaired); detached on drop.
pub struct Injector {
    ebpf: aya::Ebpf,
}

impl Injector {
    pub fn attach(host: &Host, fault: Fault, every: u32) -> Injector {
        let mut ebpf =
            aya::Ebpf::load_file(injector_object()).expect("loading the fault injector (cargo xtask build-ebpf)");
        {
            let mut config: aya::maps::Array<_, u32> =
                aya::maps::Array::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
            config.set(0, &(fault as u32), 0).unwrap();
            config.set(1, &every, 0).unwrap();
        }
        let dev = std::ffi::CString::new(host.dev.clone()).unwrap();
        host.run(|| {
            let _ = aya::programs::tc::qdisc_add_clsact(dev.as_c_str());
            let prog: &mut aya::programs::SchedClassifier =
                ebpf.program_mut("fault_injector").unwrap().try_into().unwrap();
            prog.load().unwrap();
            prog.attach(dev.as_c_str(), aya::programs::TcAttachType::Ingress).expect("attaching the fault injector");
        });
        Injector { ebpf }
    }

    pub fn stats(&self) -> Injected {
        let stats: aya::maps::Array<_, u64> = aya::maps::Array::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        let get = |i| stats.get(&i, 0).unwrap();
        Injected { data_segments: get(0), dropped: get(1), duplicated: get(2), swapped: get(3) }
    }
}
