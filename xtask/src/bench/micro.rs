//! The criterion micro-benchmarks of `benches/` (`cargo bench -p benches`), collected from
//! criterion's JSON estimates under `target/criterion`.
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{cargo, root_dir, status};

/// Runs the benchmarks and returns one record per benchmark: group, parameter, median time per
/// iteration (ns) with its 95% confidence interval, and elements per iteration.
pub(super) fn run() -> anyhow::Result<Value> {
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
