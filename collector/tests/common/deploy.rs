//! Helpers of the deployment tests (deploy.rs, deploy_live.rs): the repository's deploy/ files,
//! the tools that check them, YAML, and the dashboards and their panels.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::common::process::run_ok;

pub const INSTALL: &str = "run `cargo xtask test`, which installs it";
/// Scrape and rule evaluation interval of the test's Prometheus, seconds (15 in the stack).
pub const SCRAPE: u64 = 1;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn deploy(p: &str) -> PathBuf {
    repo().join("deploy").join(p)
}

/// A tool on PATH, or a failure naming how to install it.
pub fn tool(name: &str, how: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH: {how}"))
}

/// The Python of the deployment tools venv (kubernetes-validate, PyYAML, Operator models).
pub fn tools_python() -> PathBuf {
    let dir =
        std::env::var_os("DEPLOY_TOOLS").map(|d| repo().join(d)).unwrap_or_else(|| repo().join("target/deploy-tools"));
    let py = dir.join("bin/python");
    assert!(
        py.is_file(),
        "{} missing: {INSTALL} (or: python3 -m venv {d} && {d}/bin/pip install kubernetes-validate \
         cloudcoil.models.prometheus_operator)",
        py.display(),
        d = dir.display()
    );
    py
}

/// Every YAML document of a file, as JSON (PyYAML of the tools venv: no YAML crate needed).
pub fn yaml(path: &Path) -> Vec<Value> {
    let out = run_ok(Command::new(tools_python()).args([
        "-c",
        "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        path.to_str().unwrap(),
    ]));
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

pub fn files(dir: &str, ext: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| ext.iter().any(|x| e == *x)))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no {ext:?} files in deploy/{dir}");
    v
}

// ------------------------------------------------------------------------------------------
// Static checks

/// The datasource uid Grafana provisions.
pub fn datasource_uid() -> String {
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml")).remove(0);
    let list = ds["datasources"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["type"], "prometheus");
    list[0]["uid"].as_str().unwrap().to_owned()
}

pub fn dashboards() -> Vec<(String, Value)> {
    files("grafana/dashboards", &["json"])
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every "datasource" object anywhere in a JSON tree.
pub fn datasource_refs<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    out.push((format!("{path}.{k}"), x));
                }
                datasource_refs(x, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| datasource_refs(x, format!("{path}[{i}]"), out)),
        _ => {}
    }
}

pub fn alert_rules() -> Vec<Value> {
    let mut out = Vec::new();
    for f in files("prometheus/rules", &["yml", "yaml"]) {
        for doc in yaml(&f) {
            for g in doc["groups"].as_array().unwrap() {
                out.extend(g["rules"].as_array().unwrap().iter().filter(|r| r.get("alert").is_some()).cloned());
            }
        }
    }
    out
}
