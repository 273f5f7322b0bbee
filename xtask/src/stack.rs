//! The eBPF object's deepest chain of BPF-to-BPF calls against the verifier's stack limit:
//! the kernel refuses a program whose chain of frames takes more than 512 bytes, each frame
//! rounded up to 32 bytes (`check_max_stack_depth`; 5.10 counts it that way, and it is the
//! kernel of the matrix with the least room). A program that this machine's kernel accepts can
//! fail there, after a quarter of an hour of emulation: `build-ebpf` checks it here first, from
//! the disassembly (each function's deepest `r10 - N`, and its calls from the relocations).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, bail};

/// The verifier's limit on a chain of frames.
const LIMIT: u64 = 512;

/// Each function's frame (deepest stack offset used, bytes) and the functions it calls.
#[derive(Debug, Default)]
pub struct Graph {
    frames: BTreeMap<String, u64>,
    calls: BTreeMap<String, BTreeSet<String>>,
}

/// Reads `llvm-objdump -dr` output.
pub fn parse(disassembly: &str) -> Graph {
    let mut g = Graph::default();
    let mut current: Option<String> = None;
    for line in disassembly.lines() {
        let t = line.trim();
        // A function: "0000000000000000 <name>:".
        if let Some(name) = t.strip_suffix(">:").and_then(|l| l.split_once(" <")).map(|(_, n)| n.to_owned()) {
            g.frames.entry(name.clone()).or_insert(0);
            current = Some(name);
            continue;
        }
        let Some(f) = &current else { continue };
        if let Some(rest) = t.split_once("r10 - ").map(|(_, r)| r) {
            let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            let v = word.strip_prefix("0x").map_or_else(|| word.parse().ok(), |h| u64::from_str_radix(h, 16).ok());
            if let Some(v) = v {
                let e = g.frames.entry(f.clone()).or_insert(0);
                *e = (*e).max(v);
            }
        }
        // A call's relocation: "0000000000000048:  R_BPF_64_32	name".
        if let Some(target) = t.split_once("R_BPF_64_32").map(|(_, r)| r.trim()) {
            g.calls.entry(f.clone()).or_default().insert(target.to_owned());
        }
    }
    g
}

impl Graph {
    /// The deepest chain from `f` (its frames rounded as the verifier does) and the chain.
    fn deepest(&self, f: &str, seen: &mut Vec<String>) -> (u64, Vec<String>) {
        let frame = self.frames.get(f).copied().unwrap_or(0).max(1).div_ceil(32) * 32;
        seen.push(f.to_owned());
        let mut best = (0, Vec::new());
        for c in self.calls.get(f).into_iter().flatten() {
            if self.frames.contains_key(c) && !seen.contains(c) {
                let d = self.deepest(c, seen);
                if d.0 > best.0 {
                    best = d;
                }
            }
        }
        seen.pop();
        let mut chain = vec![f.to_owned()];
        chain.extend(best.1);
        (frame + best.0, chain)
    }

    /// Every program's (function called by none) deepest chain, deepest first.
    pub fn chains(&self) -> Vec<(u64, Vec<String>)> {
        let called: BTreeSet<&String> = self.calls.values().flatten().collect();
        let mut out: Vec<(u64, Vec<String>)> =
            self.frames.keys().filter(|f| !called.contains(f)).map(|f| self.deepest(f, &mut Vec::new())).collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.0));
        out
    }
}

/// Fails when a program's chain of frames passes the limit; prints the deepest.
pub fn check(major: u32, object: &Path) -> anyhow::Result<()> {
    let objdump = [format!("/usr/lib/llvm-{major}/bin/llvm-objdump"), "llvm-objdump".into()]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(objdump) = objdump else {
        eprintln!("build-ebpf: no llvm-objdump: the programs' stack depth is not checked");
        return Ok(());
    };
    let out = Command::new(&objdump)
        .args(["-dr", "--no-show-raw-insn"])
        .arg(object)
        .output()
        .with_context(|| format!("running {objdump}"))?;
    anyhow::ensure!(out.status.success(), "{objdump} failed: {}", String::from_utf8_lossy(&out.stderr));
    let chains = parse(&String::from_utf8_lossy(&out.stdout)).chains();
    let Some((depth, chain)) = chains.first() else { return Ok(()) };
    if *depth > LIMIT {
        bail!(
            "the chain of calls {} takes {depth} bytes of stack (frames rounded up to 32), over the {LIMIT} \
             the verifier allows (Linux 5.10 refuses to load it): move the locals of one of its functions into a \
             global function of its own, off that chain",
            chain.join(" → ")
        );
    }
    eprintln!(
        "build-ebpf: {}: deepest chain of frames {depth} of {LIMIT} bytes ({})",
        object.file_name().unwrap_or_default().to_string_lossy(),
        chain.join(" → ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "
0000000000000000 <skb_new_conn>:
       0:	r6 = r1
       1:	*(u64 *)(r10 - 0x88) = r2
       2:	call -1
		0000000000000010:  R_BPF_64_32	http_adopt
       3:	call -1
		0000000000000018:  R_BPF_64_32	memmove
0000000000000100 <http_adopt>:
       0:	*(u32 *)(r10 - 176) = r1
       1:	call -1
		0000000000000108:  R_BPF_64_32	memmove
0000000000000200 <memmove>:
       0:	exit
0000000000000300 <http_ingress>:
       0:	*(u64 *)(r10 - 0x88) = r1
       1:	call -1
		0000000000000308:  R_BPF_64_32	skb_new_conn
";

    #[test]
    fn frames_rounded_and_chained_as_the_verifier_counts() {
        let g = parse(SAMPLE);
        assert_eq!(g.frames["http_adopt"], 176);
        let chains = g.chains();
        // 136 → 160, 136 → 160, 176 → 192, 0 → 32: 544, as 5.10 reported for such a chain.
        assert_eq!(
            chains[0],
            (544, vec!["http_ingress".into(), "skb_new_conn".into(), "http_adopt".into(), "memmove".into()])
        );
        assert_eq!(chains.len(), 1);
    }
}
