//! The criterion micro-benchmarks of `benches/` (`cargo bench -p benches`), collected from
//! criterion's JSON estimates under `target/criterion`.
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{cargo, root_dir, status};

/// Runs the benchmarks and returns one record per benchmark: group, parameter, median time per
/// iteration (ns) with its 95% confidence interval, and elements per iteration.
pub fn run() -> anyhow::Result<Value> {
    let dir = root_dir().join("target/criterion");
    // Only this run's estimates.
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("xtask bench: micro-benchmarks (cargo bench -p benches)");
    status(cargo().current_dir(root_dir()).args(["bench", "-p", "benches", "--bench", "scrape"]))?;
    let mut found = Vec::new();
    collect(&dir, &mut found)?;
    found.sort_by(|a, b| {
        (a["group"].as_str(), a["elements"].as_u64(), a["function"].as_str()).cmp(&(
            b["group"].as_str(),
            b["elements"].as_u64(),
            b["function"].as_str(),
        ))
    });
    anyhow::ensure!(!found.is_empty(), "no criterion estimates under {}", dir.display());
    Ok(Value::Array(found))
}

/// Every `new/benchmark.json` + `new/estimates.json` pair below `dir`.
fn collect(dir: &Path, found: &mut Vec<Value>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if !path.is_dir() {
            continue;
        }
        let (bench, est) = (path.join("new/benchmark.json"), path.join("new/estimates.json"));
        if bench.exists() && est.exists() {
            let b: Value = serde_json::from_slice(&std::fs::read(&bench)?)?;
            let e: Value = serde_json::from_slice(&std::fs::read(&est)?)?;
            let elements = b["throughput"]["Elements"].as_u64();
            found.push(json!({
                "group": b["group_id"],
                "function": b["function_id"],
                "parameter": b["value_str"],
                "median_ns": e["median"]["point_estimate"],
                "median_low_ns": e["median"]["confidence_interval"]["lower_bound"],
                "median_high_ns": e["median"]["confidence_interval"]["upper_bound"],
                "elements": elements,
            }));
        } else if path.file_name().is_some_and(|n| n != "report") {
            collect(&path, found)?;
        }
    }
    Ok(())
}

fn time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

pub fn markdown(r: &Value) -> String {
    let mut s = String::from(
        "### Micro-benchmarks (`cargo bench -p benches`, criterion, median with 95% interval)\n\n\
         | benchmark | entries / series | time per run | per entry / series |\n|---|---|---|---|\n",
    );
    for b in r.as_array().into_iter().flatten() {
        let median = b["median_ns"].as_f64().unwrap_or(f64::NAN);
        let name: Vec<&str> = ["group", "function", "parameter"]
            .iter()
            .filter_map(|k| b[*k].as_str())
            .filter(|v| !v.is_empty())
            .collect();
        let name = name.join("/");
        let (n, per) = match b["elements"].as_u64() {
            Some(n) if n > 0 => (n.to_string(), time(median / n as f64)),
            _ => (String::new(), String::new()),
        };
        s += &format!(
            "| {name} | {n} | {} ({} – {}) | {per} |\n",
            time(median),
            time(b["median_low_ns"].as_f64().unwrap_or(f64::NAN)),
            time(b["median_high_ns"].as_f64().unwrap_or(f64::NAN)),
        );
    }
    s + "\n"
}
