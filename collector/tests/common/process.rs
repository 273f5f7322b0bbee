//! Processes and ports for the integration tests: a kill-on-drop guard for child processes,
//! commands run to completion, and loopback ports.

use std::{
    net::{TcpListener, TcpStream},
    ops::{Deref, DerefMut},
    process::{Child, Command},
    time::Duration,
};

/// A child process, killed and reaped on drop (also when the test panics).
pub struct KillOnDrop(pub Child);

impl Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command; (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// Runs a command that must succeed; its stdout + stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let (ok, out) = run(cmd);
    assert!(ok, "{shown} failed:\n{out}");
    out
}

/// A loopback port that was free a moment ago, and that this process was not given before: a
/// test that starts servers one after another, with one collector, reads each server's series
/// by its port, so a port that came back would add an earlier server's counts (the collector's
/// own port comes from here too, for the same reason).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port that was not given before in 1000 tries");
}

/// Waits up to 5 s for something to listen on a loopback port.
pub fn wait_port(port: u16) {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}
