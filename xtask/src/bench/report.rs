//! The report: markdown tables from the results (`target/bench/results.json`), and the
//! generated section of docs/performance.md.
use serde_json::Value;

use super::util;
use crate::root_dir;

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The targets with their measured figures, then each part's tables.
pub(super) fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64();
    let mut t = String::from("### Targets\n\n| target | measured | status |\n|---|---|---|\n");
    // The goals of issue 17: ratios measured side by side in one run (they replace the
    // absolute per-event, per-request and throughput goals, which this machine cannot resolve).
    let sc = &r["scrape"];
    let cpu = f(&sc["ratios"]["cpu"]);
    t += &format!(
        "| scrape CPU ≤ 0.08 of node_exporter's | {} ({:.2} ms vs {:.2} ms per scrape) | {} |\n",
        cpu.map_or("–".into(), |c| format!("{c:.3}")),
        f(&sc["collector"]["cpu_s_per_scrape"]).unwrap_or(f64::NAN) * 1e3,
        f(&sc["node_exporter"]["cpu_s_per_scrape"]).unwrap_or(f64::NAN) * 1e3,
        met(cpu.map(|c| c <= 0.08))
    );
    let (rss, hwm) = (f(&sc["ratios"]["rss"]), f(&sc["ratios"]["hwm"]));
    t += &format!(
        "| RSS ≤ 0.5 of node_exporter's | {} after the scrapes, {} at peak | {} |\n",
        rss.map_or("–".into(), |c| format!("{c:.3}")),
        hwm.map_or("–".into(), |c| format!("{c:.3}")),
        met(rss.zip(hwm).map(|(a, b)| a <= 0.5 && b <= 0.5))
    );
    let h = &r["http"];
    let p = &r["peer"];
    let ours = &p["sides"]["collector"];
    let (tput, tput_src) = match f(&ours["worst"]["throughput_ratio"]["median"]) {
        Some(v) => (Some(v), "peer part"),
        None => (f(&h["throughput_ratio"]), "http part"),
    };
    t += &format!(
        "| throughput with / without ≥ 0.95 (worst case: nginx 25 B, wrk) | {} | {} |\n",
        tput.map_or("–".into(), |c| format!("{c:.3} ({tput_src})")),
        met(tput.map(|c| c >= 0.95))
    );
    for (case, key, load) in
        [("worst case", "added_cpu_ratio_worst", "worst"), ("realistic case", "added_cpu_ratio_realistic", "realistic")]
    {
        let v = f(&p[key]["median"]);
        // A peer that counted none of the load's requests did not do the work compared.
        let peer_counted: f64 = p["sides"]["peer"][load]["counts"]["counted"]
            .as_array()
            .map_or(0.0, |c| c.iter().filter_map(|x| x.as_f64()).sum());
        let status = if v.is_some() && peer_counted == 0.0 {
            "not comparable: the peer counted none of these requests"
        } else {
            met(v.map(|c| c <= 0.2))
        };
        t += &format!(
            "| added CPU per request ≤ 0.2 of the peer's ({case}) | {} | {status} |\n",
            v.map_or("– (no peer run)".into(), |c| format!(
                "{c:.3} (rounds {:.3}–{:.3})",
                f(&p[key]["min"]).unwrap_or(f64::NAN),
                f(&p[key]["max"]).unwrap_or(f64::NAN)
            )),
        );
    }
    let stage_ratio = h["stages"].as_array().and_then(|st| {
        let get = |stage: u64, name: &str| {
            st.iter().find(|x| x["stage"].as_u64() == Some(stage)).and_then(|x| x[name].as_f64())
        };
        ["http_ingress", "http_egress"]
            .iter()
            .map(|n| Some(get(0, n)? / get(1, n)?))
            .collect::<Option<Vec<f64>>>()
            .map(|v| v.into_iter().fold(0.0, f64::max))
    });
    t += &format!(
        "| HTTP programs' run time per event ≤ 3 × an empty program's (stage table) | {} | {} |\n",
        stage_ratio.map_or("–".into(), |c| format!("{c:.2} (the larger of ingress and egress)")),
        met(stage_ratio.map(|c| c <= 3.0))
    );
    let nh = f(&h["non_http"]["ratio"]);
    t += &format!(
        "| a connection that is not HTTP: run time per segment ≤ 1.5 × an empty program's | {} | {} |\n",
        nh.map_or("–".into(), |c| {
            let ns = |hook: &str, k: &str| f(&h["non_http"][hook][k]).unwrap_or(f64::NAN);
            let mut s = format!(
                "{c:.2} (ingress {:.0} / {:.0} ns, egress {:.0} / {:.0} ns, whole / empty)",
                ns("http_ingress", "whole_ns"),
                ns("http_ingress", "empty_ns"),
                ns("http_egress", "whole_ns"),
                ns("http_egress", "empty_ns")
            );
            // Older results have no figure after the packet count and headers.
            if f(&h["non_http"]["http_ingress"]["headers_ns"]).is_some() {
                s += &format!(
                    "; the packet count and the headers, which every packet pays: {:.0} / {:.0} ns",
                    ns("http_ingress", "headers_ns"),
                    ns("http_egress", "headers_ns")
                );
            }
            s
        }),
        met(nh.map(|c| c <= 1.5))
    );
    // The goal's request: the response in one segment (nginx `sendfile off`), 4 runs of the
    // cgroup_skb programs; older results have only the `sendfile on` figures (8 runs).
    let (one, two) = (f(&h["bpf_ns_per_request_one_segment"]), f(&h["bpf_ns_per_request"]));
    let one_cpu = f(&h["bpf_ns_per_request_1cpu"]).unwrap_or(f64::NAN);
    let measured = match (one, two) {
        (Some(b), Some(two)) => format!(
            "{b:.0} ns, the response in one segment ({:.1} cgroup_skb runs per request); {two:.0} ns with `sendfile on` \
             (head and body in two segments: 8 runs), {one_cpu:.0} ns with `sendfile on` and nginx and wrk on 1 CPU",
            f(&h["skb_runs_per_request_one_segment"]).unwrap_or(f64::NAN),
        ),
        (None, Some(two)) => format!("{two:.0} ns on 2 CPUs, {one_cpu:.0} ns with nginx and wrk on 1"),
        _ => "–".into(),
    };
    let bpf = one.or(two);
    t += &format!(
        "| BPF run time per request ≤ 1000 ns (nginx 25 B, wrk; every program summed, statistics on) | {measured} | {} |\n",
        met(bpf.map(|b| b <= 1000.0))
    );
    let levels = r["scale"]["levels"].as_array();
    let top = levels.and_then(|l| l.last());
    let top_t = top.and_then(|l| f(&l["gzip"]["wall_median_s"]));
    t += &format!(
        "| scrape time ≤ 50 ms at 100k series | {} | {} |\n",
        top.zip(top_t).map_or("–".into(), |(l, t)| format!(
            "{:.1} ms at {} series (gzip; plain {:.1} ms)",
            t * 1e3,
            l["series"],
            f(&l["plain"]["wall_median_s"]).unwrap_or(f64::NAN) * 1e3
        )),
        met(top
            .filter(|l| l["series"].as_u64().is_some_and(|n| n >= 100_000))
            .and(top_t)
            .map(|t| t <= util::SCALE_TARGET_S))
    );
    let marginal: Vec<f64> =
        r["scale"]["marginal_s_per_series"].as_array().map(|m| m.iter().filter_map(f).collect()).unwrap_or_default();
    let linear = match marginal.as_slice() {
        [a, b] if *a > 0.0 => Some(*b <= 1.5 * a),
        _ => None,
    };
    t += &format!(
        "| scrape time grows linearly | {} per added series (1k→10k, 10k→100k) | {} |\n\n",
        if marginal.is_empty() {
            "–".into()
        } else {
            marginal.iter().map(|m| format!("{:.2} µs", m * 1e6)).collect::<Vec<_>>().join(", ")
        },
        met(linear)
    );
    let m = &r["machine"];
    if m.is_object() {
        t += &format!(
            "Last run: {} CPUs, Linux {}, parts run: {}, {} s; load average after: {}; other collectors' HTTP \
             programs attached: {}.\n\n",
            m["cpus"],
            m["kernel"].as_str().unwrap_or(""),
            m["parts_run"].as_array().map_or(String::new(), |p| p
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")),
            m["bench_seconds"],
            m["load_average_after"].as_str().unwrap_or(""),
            m["other_http_programs_attached"],
        );
    }
    if r["scrape"].is_object() {
        t += &markdown_scrape(&r["scrape"]);
    }
    if r["scale"].is_object() {
        t += &markdown_scale(&r["scale"]);
    }
    if h.is_object() {
        t += &markdown_http(h);
    }
    if r["tls"].is_object() {
        t += &markdown_tls(&r["tls"]);
    }
    if r["http2"].is_object() {
        t += &markdown_http2(&r["http2"]);
    }
    if p.is_object() {
        t += &markdown_peer(p);
    }
    if r["micro"].is_array() {
        t += &markdown_micro(&r["micro"]);
    }
    t
}

fn markdown_peer(p: &Value) -> String {
    let mut s = format!(
        "### Side by side with a peer ({}; {} interleaved rounds of {} s per load and side)\n\n\
         Worst case: nginx serving 25 bytes to `wrk -t1 -c50` (keep-alive; baseline {:.0} req/s). \
         Realistic case: {} ms handler, {} B responses, {} req/s over 16 keep-alive connections. \
         Added CPU: CPU per request minus the same without either agent in the same round, of the \
         processes taking part (load generator, server, agent; per-thread times, kernel programs and \
         loopback softirq work included) and of the whole machine (/proc/stat, all cores: other \
         tenants' work included). Medians, with the range over the rounds.\n\n",
        p["peer"].as_str().unwrap_or("peer"),
        p["rounds"],
        p["seconds_per_run"],
        p["baseline_worst_rps"]["median"].as_f64().unwrap_or(0.0),
        p["realistic_handler_ms"],
        p["realistic_body_bytes"],
        p["realistic_rate"],
    );
    let cell = |v: &Value, digits: usize| match (v["median"].as_f64(), v["min"].as_f64(), v["max"].as_f64()) {
        (Some(m), Some(lo), Some(hi)) => {
            format!("{m:.d$} ({lo:.d$}–{hi:.d$})", d = digits)
        }
        _ => "–".into(),
    };
    let counts = |v: &Value| {
        let c: Vec<String> = v["counted"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_f64().map_or("–".into(), |n| format!("{n:.0}")))
            .collect();
        let sent: Vec<String> =
            v["sent"].as_array().into_iter().flatten().map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0))).collect();
        c.iter().zip(&sent).map(|(c, s)| format!("{c}/{s}")).collect::<Vec<_>>().join(", ")
    };
    s.push_str("| figure | this collector | peer |\n|---|---|---|\n");
    let (o, q) = (&p["sides"]["collector"], &p["sides"]["peer"]);
    let row = |s: &mut String, label: &str, ours: String, peer: String| {
        s.push_str(&format!("| {label} | {ours} | {peer} |\n"));
    };
    for (label, case, key, d) in [
        ("worst: throughput with / without", "worst", "throughput_ratio", 3),
        ("worst: p99 latency with / without", "worst", "p99_ratio", 3),
        ("worst: added CPU per request, processes (µs)", "worst", "added_cpu_us_per_request", 2),
        ("worst: added CPU per request, machine (µs)", "worst", "added_machine_cpu_us_per_request", 2),
        ("worst: the agent's own CPU per request (µs)", "worst", "agent_cpu_us_per_request", 2),
        ("realistic: p99 latency with / without", "realistic", "p99_ratio", 3),
        ("realistic: added CPU per request, processes (µs)", "realistic", "added_cpu_us_per_request", 2),
        ("realistic: added CPU per request, machine (µs)", "realistic", "added_machine_cpu_us_per_request", 2),
        ("realistic: the agent's own CPU per request (µs)", "realistic", "agent_cpu_us_per_request", 2),
    ] {
        row(&mut s, label, cell(&o[case][key], d), cell(&q[case][key], d));
    }
    for (label, key) in [("RSS after the loads (MiB)", "rss_mib"), ("peak RSS (MiB)", "peak_rss_mib")] {
        row(&mut s, label, cell(&o[key], 1), cell(&q[key], 1));
    }
    for case in ["worst", "realistic"] {
        let label = format!("{case}: requests counted / sent, per round");
        row(&mut s, &label, counts(&o[case]["counts"]), counts(&q[case]["counts"]));
    }
    for (what, suffix) in [("processes", ""), ("machine", "machine_")] {
        let ratio = |case: &str| cell(&p[format!("added_{suffix}cpu_ratio_{case}")], 3);
        let label = format!("added CPU per request, this collector / the peer, {what}");
        row(&mut s, &label, format!("worst {} · realistic {}", ratio("worst"), ratio("realistic")), String::new());
    }
    s.push('\n');
    if let Some(lines) = p["loss"].as_array() {
        s.push_str(
            "Exactness side by side: the loss scenarios of `collector/tests/loss.rs` (every 20th data segment \
             dropped, swapped with the next, or duplicated, both ways, on a veth pair), requests completed by \
             the clients and counted by each (server side, client side):\n\n",
        );
        for l in lines.iter().filter_map(|l| l.as_str()) {
            s.push_str(&format!("- {l}\n"));
        }
        s.push('\n');
    }
    s
}

fn markdown_tls(h: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "### HTTPS capture (nginx `ssl` + wrk over TLS, 50 connections, {} rounds of {} s, capture off and on \
         alternating)\n\n| measure | capture off | capture on |\n|---|---|---|\n",
        h["rounds"], h["seconds_per_run"]
    );
    s += &format!("| throughput | {:.0} req/s | {:.0} req/s |\n", f(&h["rps_off"]), f(&h["rps_on"]));
    s += &format!(
        "| CPU per request (nginx, wrk, collector) | {:.1} µs | {:.1} µs |\n",
        f(&h["cpu_ns_per_request_off"]) / 1e3,
        f(&h["cpu_ns_per_request_on"]) / 1e3
    );
    let range = &h["added_cpu_ns_per_request_range"];
    s += &format!(
        "\nThroughput on / off {:.3}, p99 on / off {:.3} (medians of the rounds). Added CPU per HTTPS request \
         {:.1} µs (rounds {:.1} to {:.1}), for {:.1} probe hits per request (server and client): {:.2} µs per \
         hit, the trap into the kernel included.\n\n| program | ns per call (BPF statistics) | calls per request |\n|---|---|---|\n",
        f(&h["throughput_ratio"]),
        f(&h["p99_ratio"]),
        f(&h["added_cpu_ns_per_request"]) / 1e3,
        f(&range[0]) / 1e3,
        f(&range[1]) / 1e3,
        f(&h["probe_hits_per_request"]),
        f(&h["added_cpu_ns_per_probe_hit"]) / 1e3
    );
    if let Some(m) = h["program_ns_per_call"].as_object() {
        for (name, v) in m {
            s += &format!("| `{name}` | {:.0} | {:.2} |\n", f(v), f(&h["program_calls_per_request"][name]));
        }
    }
    s.push('\n');
    s
}

fn markdown_http2(h: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "### HTTP/2 and gRPC capture ({} rounds of {} s, without and with the collector alternating)\n\n| measure | \
         h2load -c 4 -m 100, nghttpd 25 B | gRPC unary, grpcio, 8 clients |\n|---|---|---|\n",
        h["h2load"]["rounds"], h["h2load"]["seconds_per_run"]
    );
    let (a, b) = (&h["h2load"], &h["grpc_unary"]);
    let row = |name: &str, key: &str, scale: f64, unit: &str| {
        format!("| {name} | {:.1} {unit} | {:.1} {unit} |\n", f(&a[key]) / scale, f(&b[key]) / scale)
    };
    s += &row("requests per second without", "rps_without", 1.0, "");
    s += &row("requests per second with", "rps_with", 1.0, "");
    s += &format!(
        "| throughput with / without (median; range) | {:.3} ({:.3}–{:.3}) | {:.3} ({:.3}–{:.3}) |\n",
        f(&a["throughput_ratio"]),
        f(&a["throughput_ratio_range"][0]),
        f(&a["throughput_ratio_range"][1]),
        f(&b["throughput_ratio"]),
        f(&b["throughput_ratio_range"][0]),
        f(&b["throughput_ratio_range"][1])
    );
    s += &row("CPU per request without (server, client, collector)", "cpu_ns_per_request_without", 1e3, "µs");
    s += &row("CPU per request with", "cpu_ns_per_request_with", 1e3, "µs");
    s += &row("added CPU per request (median)", "added_cpu_ns_per_request", 1e3, "µs");
    s += &row("the collector's own CPU per request (decoding)", "collector_cpu_ns_per_request", 1e3, "µs");
    s += &row("BPF run time per request (every program, statistics on)", "bpf_ns_per_request", 1.0, "ns");
    s += "\n| program | ns per h2load request | ns per gRPC call |\n|---|---|---|\n";
    let mut names: Vec<&String> =
        a["bpf_ns_per_request_by_program"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    for n in b["bpf_ns_per_request_by_program"].as_object().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    for n in names {
        s += &format!(
            "| `{n}` | {:.0} | {:.0} |\n",
            f(&a["bpf_ns_per_request_by_program"][n]),
            f(&b["bpf_ns_per_request_by_program"][n])
        );
    }
    s.push('\n');
    s
}

fn markdown_http(h: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "### HTTP overhead (nginx + wrk, keep-alive, 50 connections, {} rounds of {} s, interleaved)\n\n",
        h["rounds"], h["seconds_per_run"]
    ));
    s.push_str("| measure | value | goal |\n|---|---|---|\n");
    s.push_str(&format!("| baseline throughput | {:.0} req/s | |\n", h["baseline_rps"].as_f64().unwrap_or(0.0)));
    s.push_str(&format!("| with the collector | {:.0} req/s | |\n", h["collector_rps"].as_f64().unwrap_or(0.0)));
    s.push_str(&format!(
        "| throughput ratio (median of rounds) | {:.3} | ≥ 0.95 |\n",
        h["throughput_ratio"].as_f64().unwrap_or(0.0)
    ));
    if let (Some(b), Some(c)) = (h["baseline_p99_s"].as_f64(), h["collector_p99_s"].as_f64()) {
        s.push_str(&format!("| p99 latency without / with | {:.2} ms / {:.2} ms | |\n", b * 1e3, c * 1e3));
    }
    s.push_str(&format!(
        "| p99 latency ratio (median of rounds) | {:.3} | |\n",
        h["p99_ratio"].as_f64().unwrap_or(0.0)
    ));
    s.push_str(&format!(
        "| CPU per request (BPF run time with statistics on + daemon) | {:.0} ns | |\n",
        h["cpu_ns_per_request"].as_f64().unwrap_or(0.0)
    ));
    if let Some(b) = h["bpf_ns_per_request"].as_f64() {
        let r = |k: &str, i: usize| h[k][i].as_f64().unwrap_or(0.0);
        s.push_str(&format!(
            "| BPF run time per request, every program summed (statistics on), 2 CPUs (`sendfile on`: the response's head and body in two segments) | {b:.0} ns (rounds {:.0}–{:.0}) | |\n",
            r("bpf_ns_per_request_range", 0),
            r("bpf_ns_per_request_range", 1)
        ));
        s.push_str(&format!(
            "| the same with nginx and wrk on 1 CPU | {:.0} ns (rounds {:.0}–{:.0}) | |\n",
            h["bpf_ns_per_request_1cpu"].as_f64().unwrap_or(0.0),
            r("bpf_ns_per_request_1cpu_range", 0),
            r("bpf_ns_per_request_1cpu_range", 1)
        ));
    }
    if let Some(b) = h["bpf_ns_per_request_one_segment"].as_f64() {
        let r = |k: &str, i: usize| h[k][i].as_f64().unwrap_or(0.0);
        s.push_str(&format!(
            "| the same, the response in one segment (a second nginx, `sendfile off`; {:.2} cgroup_skb runs per request), 2 CPUs | {b:.0} ns (rounds {:.0}–{:.0}) | ≤ 1000 ns |\n",
            h["skb_runs_per_request_one_segment"].as_f64().unwrap_or(0.0),
            r("bpf_ns_per_request_one_segment_range", 0),
            r("bpf_ns_per_request_one_segment_range", 1)
        ));
    }
    s.push('\n');
    s.push_str(
        "| program | run time per event (mean over the run, median of rounds) | events per request |\n|---|---|---|\n",
    );
    if let Some(p) = h["program_ns_per_event"].as_object() {
        for (name, ns) in p {
            let per_req = h["program_events_per_request"][name].as_f64().unwrap_or(0.0);
            s.push_str(&format!("| {name} | {:.0} ns | {per_req:.2} |\n", ns.as_f64().unwrap_or(0.0)));
        }
    }
    s.push('\n');
    if let Some(stages) = h["stages"].as_array() {
        s.push_str(
            "Where the HTTP programs' time goes (run time per event with BPF statistics on; four \
             collectors attached at once, three of them returning at a stage boundary, so all see the \
             same packets, after a fifth one that is not measured, since the first program on a hook \
             pays for bringing the packet and socket into the cache; mean of one run with the four in \
             stage order and one in reverse order):\n\n\
             | the program returns | http_ingress | http_egress | added by the stage (ingress / egress) |\n\
             |---|---|---|---|\n",
        );
        let mut prev: Option<(f64, f64)> = None;
        for st in stages {
            let (i, e) = (st["http_ingress"].as_f64().unwrap_or(0.0), st["http_egress"].as_f64().unwrap_or(0.0));
            let added = match prev {
                Some((pi, pe)) => format!("{:+.0} / {:+.0} ns", i - pi, e - pe),
                None => "(running any program, statistics included)".to_owned(),
            };
            s.push_str(&format!("| {} | {i:.0} ns | {e:.0} ns | {added} |\n", st["returns"].as_str().unwrap_or("")));
            prev = Some((i, e));
        }
        s.push('\n');
    }
    if let Some(p) = h["disk_program_ns_per_event"].as_object().filter(|p| !p.is_empty()) {
        s.push_str(&format!(
            "Block programs, with the collector attached, under {n} O_DIRECT 4 KiB writes then {n} reads (dd):\n\n\
             | program | run time per event (mean over the run) | events |\n|---|---|---|\n",
            n = h["disk_ios"]
        ));
        for (name, ns) in p {
            let events = h["disk_program_events"][name].as_u64().unwrap_or(0);
            s.push_str(&format!("| {name} | {:.0} ns | {events} |\n", ns.as_f64().unwrap_or(0.0)));
        }
        s.push('\n');
    }
    s
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |s| format!("{:.2} ms", s * 1e3))
}

fn mib(kb: &Value) -> String {
    kb.as_f64().map_or("–".into(), |k| format!("{:.1} MiB", k / 1024.0))
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |r| format!("{r:.3}"))
}

fn markdown_scrape(r: &Value) -> String {
    let (a, b) = (&r["collector"], &r["node_exporter"]);
    let mut s = format!(
        "### Scrape cost vs node_exporter ({} scrapes each, alternating, gzip)\n\n\
         node_exporter: `{}`, default collectors. The collector: release build, default collectors (eBPF included).\n\n\
         | measure | collector | node_exporter | ratio |\n|---|---|---|---|\n",
        r["scrapes"],
        r["node_exporter_version"].as_str().unwrap_or("")
    );
    s += &format!(
        "| CPU per scrape | {:.2} ms | {:.2} ms | {} |\n",
        a["cpu_s_per_scrape"].as_f64().unwrap_or(f64::NAN) * 1e3,
        b["cpu_s_per_scrape"].as_f64().unwrap_or(f64::NAN) * 1e3,
        ratio(&r["ratios"]["cpu"])
    );
    s += &format!(
        "| wall time per scrape, median | {} | {} | {} |\n",
        ms(&a["wall_median_s"]),
        ms(&b["wall_median_s"]),
        ratio(&r["ratios"]["wall_median"])
    );
    s += &format!(
        "| wall time per scrape, p99 | {} | {} | {} |\n",
        ms(&a["wall_p99_s"]),
        ms(&b["wall_p99_s"]),
        ratio(&r["ratios"]["wall_p99"])
    );
    s += &format!(
        "| RSS after the scrapes (VmRSS) | {} | {} | {} |\n",
        mib(&a["memory"]["rss_kb"]),
        mib(&b["memory"]["rss_kb"]),
        ratio(&r["ratios"]["rss"])
    );
    s += &format!(
        "| peak RSS (VmHWM) | {} | {} | {} |\n",
        mib(&a["memory"]["hwm_kb"]),
        mib(&b["memory"]["hwm_kb"]),
        ratio(&r["ratios"]["hwm"])
    );
    s += &format!(
        "| of which anonymous / file-backed | {} / {} | {} / {} | |\n",
        mib(&a["memory"]["rss_anon_kb"]),
        mib(&a["memory"]["rss_file_kb"]),
        mib(&b["memory"]["rss_anon_kb"]),
        mib(&b["memory"]["rss_file_kb"])
    );
    s += &format!("| series exposed | {} | {} | |\n", a["series"], b["series"]);
    s += &format!("| response size (gzip) | {} B | {} B | |\n\n", a["bytes"], b["bytes"]);
    if let Some(p) = r["profile"].as_array() {
        s += "Profile of the collector during scrapes (`perf record -F 1999`, self time, symbols ≥ 1%):\n\n```\n";
        for l in p {
            s += l.as_str().unwrap_or("");
            s += "\n";
        }
        s += "```\n\n";
    }
    s
}

fn markdown_scale(r: &Value) -> String {
    let mut s = String::from(
        "### Scale (series made by real HTTP requests: methods × status codes, server and client side)\n\n\
         | series | HTTP label sets | scrape wall (gzip) median / p99 | CPU per scrape (gzip) | scrape wall (plain) median | CPU per scrape (plain) | response gzip / plain | RSS (peak) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    if let Some(levels) = r["levels"].as_array() {
        for l in levels {
            s += &format!(
                "| {} | {} | {} / {} | {} | {} | {} | {:.0} kB / {:.0} kB | {} ({}) |\n",
                l["series"],
                l["label_sets"],
                ms(&l["gzip"]["wall_median_s"]),
                ms(&l["gzip"]["wall_p99_s"]),
                ms(&l["gzip"]["cpu_s_per_scrape"]),
                ms(&l["plain"]["wall_median_s"]),
                ms(&l["plain"]["cpu_s_per_scrape"]),
                l["gzip"]["bytes"].as_f64().unwrap_or(0.0) / 1e3,
                l["plain"]["bytes"].as_f64().unwrap_or(0.0) / 1e3,
                mib(&l["memory"]["rss_kb"]),
                mib(&l["memory"]["hwm_kb"]),
            );
        }
    }
    if let Some(m) = r["marginal_s_per_series"].as_array() {
        let per: Vec<String> =
            m.iter().map(|v| v.as_f64().map_or("–".into(), |x| format!("{:.2} µs", x * 1e6))).collect();
        s += &format!("\nScrape time added per series between successive levels (gzip): {}.\n", per.join(" → "));
    }
    let c = &r["connections"];
    if c.is_object() {
        s += &format!(
            "\nWith {} open keep-alive connections to nginx (each served one request; opened in {:.1} s), a fresh \
             collector:\n\n| | scrape wall median / p99 | CPU per scrape | RSS (peak) |\n|---|---|---|---|\n",
            c["connections"],
            c["open_seconds"].as_f64().unwrap_or(0.0)
        );
        for (name, m, mem) in
            [("without", &c["without"], &c["memory_without"]), ("with the connections", &c["with"], &c["memory_with"])]
        {
            s += &format!(
                "| {name} | {} / {} | {} | {} ({}) |\n",
                ms(&m["wall_median_s"]),
                ms(&m["wall_p99_s"]),
                ms(&m["cpu_s_per_scrape"]),
                mib(&mem["rss_kb"]),
                mib(&mem["hwm_kb"])
            );
        }
    }
    if let Some(p) = r["profile"].as_array() {
        s += "\nProfile of the collector during gzip scrapes at the top level (`perf record -F 1999`, self time, \
              symbols ≥ 1%):\n\n```\n";
        for l in p {
            s += l.as_str().unwrap_or("");
            s += "\n";
        }
        s += "```\n";
    }
    s + "\n"
}

fn time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

fn markdown_micro(r: &Value) -> String {
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

/// Replaces the generated section of docs/performance.md. A part that `results.json` does not
/// hold (not run since the file was made: a fresh checkout, `--only`) keeps the section and
/// the target rows the file had (see [`keep_missing`]).
pub(super) fn write_docs(table: &str) -> anyhow::Result<()> {
    let path = root_dir().join("docs/performance.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let new = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) if a < b => {
            let table = keep_missing(&text[a + begin.len()..b], table);
            format!("{}{begin}\n{table}{end}{}", &text[..a], &text[b + end.len()..])
        }
        _ => format!("{text}\n{begin}\n{table}{end}\n"),
    };
    std::fs::write(&path, new)?;
    eprintln!("xtask bench: wrote {} and target/bench/results.json", path.display());
    Ok(())
}

/// The generated section `new`, with what the section `old` had for the parts `new` lacks:
/// each `### ` section whose title (up to its parenthesis) `new` does not have, before the
/// section that followed it in `old` (both come from [`markdown`], which writes the parts in
/// one order), and each row of the targets table that `new` cannot fill ("–") but `old` could
/// (same target). A line after the "Last run" one names the sections kept.
fn keep_missing(old: &str, new: &str) -> String {
    fn sections(t: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in t.trim_start_matches('\n').split_inclusive('\n') {
            match line.strip_prefix("### ") {
                Some(title) => {
                    let key = title.split(" (").next().unwrap_or(title).trim().to_owned();
                    out.push((key, line.to_owned()));
                }
                None => match out.last_mut() {
                    Some((_, body)) => body.push_str(line),
                    // Text before the first title: kept as a section without one.
                    None => out.push((String::new(), line.to_owned())),
                },
            }
        }
        out
    }
    fn cells(row: &str) -> Option<Vec<&str>> {
        let r = row.trim_end().strip_prefix('|')?.strip_suffix('|')?;
        Some(r.split(" | ").map(str::trim).collect())
    }
    let (old, mut new) = (sections(old), sections(new));
    let mut kept = Vec::new();
    // The targets rows that this run could not fill.
    if let (Some(o), Some(n)) = (old.iter().find(|(k, _)| k == "Targets"), new.iter_mut().find(|(k, _)| k == "Targets"))
    {
        let rows: Vec<String> =
            n.1.split_inclusive('\n')
                .map(|line| {
                    let Some(c) = cells(line) else { return line.to_owned() };
                    if c.len() != 3 || !c[1].starts_with('–') {
                        return line.to_owned();
                    }
                    let before = o.1.lines().find(|l| cells(l).is_some_and(|oc| oc.len() == 3 && oc[0] == c[0]));
                    match before {
                        Some(b) if cells(b).is_some_and(|oc| !oc[1].starts_with('–')) => format!("{b}\n"),
                        _ => line.to_owned(),
                    }
                })
                .collect();
        n.1 = rows.concat();
    }
    // Each old section that `new` lacks goes before the first old section after it that
    // `new` has, or at the end.
    let mut out = new;
    for (i, (k, body)) in old.iter().enumerate() {
        if k.is_empty() || out.iter().any(|(nk, _)| nk == k) {
            continue;
        }
        kept.push(k.clone());
        let at = old[i + 1..]
            .iter()
            .find_map(|(next, _)| out.iter().position(|(ok, _)| ok == next))
            .unwrap_or(out.len());
        out.insert(at, (k.clone(), body.clone()));
    }
    if !kept.is_empty() {
        let note = format!(
            "Sections kept from before (parts not in `target/bench/results.json`): {}; the rows of the \
             targets above that come from them too.\n\n",
            kept.join(", ")
        );
        if let Some((_, body)) = out.iter_mut().find(|(k, _)| k == "Targets") {
            body.push_str(&note);
        }
    }
    out.into_iter().map(|(_, b)| b).collect()
}

#[cfg(test)]
mod tests {
    use super::keep_missing;

    #[test]
    fn parts_not_in_the_results_keep_their_sections_and_rows() {
        let old = "\n### Targets\n\n| target | measured | status |\n|---|---|---|\n| a | 1.0 | met |\n| b | 2.0 | **missed** |\n\nLast run: old.\n\n### Scale (200)\n\nscrape old\n\n### HTTP overhead (x)\n\nhttp old\n\n### Side by side with a peer (y)\n\npeer old\n\n";
        let new = "### Targets\n\n| target | measured | status |\n|---|---|---|\n| a | – | not measured |\n| b | 3.0 | **missed** |\n| c | – | not measured |\n\nLast run: new.\n\n### HTTP overhead (z)\n\nhttp new\n\n### HTTP/2 and gRPC capture (w)\n\nh2 new\n\n";
        let got = keep_missing(old, new);
        let want = "### Targets\n\n| target | measured | status |\n|---|---|---|\n| a | 1.0 | met |\n| b | 3.0 | **missed** |\n| c | – | not measured |\n\nLast run: new.\n\nSections kept from before (parts not in `target/bench/results.json`): Scale, Side by side with a peer; the rows of the targets above that come from them too.\n\n### Scale (200)\n\nscrape old\n\n### HTTP overhead (z)\n\nhttp new\n\n### HTTP/2 and gRPC capture (w)\n\nh2 new\n\n### Side by side with a peer (y)\n\npeer old\n\n";
        assert_eq!(got, want);
        // Everything run: the new section as it is.
        assert_eq!(keep_missing(new, new), new);
        // No section before (a new file).
        assert_eq!(keep_missing("", new), new);
    }
}
