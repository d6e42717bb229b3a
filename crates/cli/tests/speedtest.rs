//! `tether speedtest` against a real server and agent on loopback: download and upload
//! with JSON output (alone on stdout, with the path and latency as fields) whose rows are
//! consistent with each other, the table format, `-d`
//! waiting for a direct path, and `-d` failing fast (with the reason) when the server
//! blocks direct connections while the relayed test still works.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use tether_testing::{Out, Tether};

const TETHER: Tether = Tether::at(env!("CARGO_BIN_EXE_tether"));

/// Runs `tether speedtest dev ARGS…` and insists it succeeded.
fn speedtest(cfg: &std::path::Path, args: &[&str]) -> Out {
    let mut all = vec!["speedtest", "dev"];
    all.extend_from_slice(args);
    let out = TETHER.run(cfg, &all);
    println!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out
}

/// `29ms via tether` or `0ms via direct`: digits, `ms via `, then `direct` or `tether`.
fn is_path_line(line: &str) -> bool {
    let Some((ms, via)) = line.split_once("ms via ") else {
        return false;
    };
    !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()) && (via == "direct" || via == "tether")
}

/// `\d+\.\d{decimals}`.
fn is_decimal(s: &str, decimals: usize) -> bool {
    let Some((int, frac)) = s.split_once('.') else {
        return false;
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() == decimals
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// `^\d+\.\d\d-\d+\.\d\d sec\s+\d+\.\d{4} MBits\s+\d+\.\d{4} Mbits/sec$`.
fn is_row(line: &str) -> bool {
    let Some((interval, rest)) = line.split_once(" sec") else {
        return false;
    };
    let Some((from, to)) = interval.split_once('-') else {
        return false;
    };
    if !(is_decimal(from, 2) && is_decimal(to, 2) && rest.starts_with(char::is_whitespace)) {
        return false;
    }
    let Some((transfer, rest)) = rest.trim_start().split_once(" MBits") else {
        return false;
    };
    if !is_decimal(transfer, 4) || !rest.starts_with(char::is_whitespace) {
        return false;
    }
    let Some(bandwidth) = rest.trim_start().strip_suffix(" Mbits/sec") else {
        return false;
    };
    is_decimal(bandwidth, 4)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Checks `-o json` output for a test of `seconds`, and returns the report: stdout is
/// only the JSON, the path line went to stderr, and the JSON has the same path.
fn check_json(out: &Out, seconds: f64) -> Value {
    let first = out
        .stderr
        .lines()
        .find(|l| is_path_line(l))
        .unwrap_or_else(|| panic!("no path line on stderr: {}", out.stderr));
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not only JSON ({e}): {}", out.stdout));
    let (ms, via) = first.split_once("ms via ").unwrap();
    let latency = num(&report, "latency_ms");
    assert!(
        (latency - ms.parse::<f64>().unwrap()).abs() <= 0.5 + 1e-9,
        "{first} vs {report}"
    );
    match via {
        "direct" => {
            assert_eq!(report["path"], "direct", "{report}");
            assert!(report["direct_addr"].is_string(), "{report}");
        }
        region => {
            assert_eq!(report["path"], "derp", "{report}");
            assert_eq!(report["derp_region"], region, "{report}");
        }
    }
    let intervals = report["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 2, "{report}");
    // Intervals tile the client's clock from 0, each with bytes moving.
    let mut prev_end = 0.0;
    let mut bytes = 0;
    let mut megabits = 0.0;
    for i in intervals {
        let (start, end) = (num(i, "start_time_seconds"), num(i, "end_time_seconds"));
        assert!((start - prev_end).abs() < 1e-9, "gap before {i}");
        assert!(end > start, "{i}");
        assert!(num(i, "throughput_mbits") > 0.0, "{i}");
        bytes += i["bytes"].as_u64().unwrap();
        megabits += num(i, "throughput_mbits") * (end - start);
        prev_end = end;
    }
    // The overall row moves the same bytes over at least the intervals' time, so its
    // throughput times its duration equals the intervals' summed transfer.
    let overall = &report["overall"];
    assert_eq!(num(overall, "start_time_seconds"), 0.0);
    let end = num(overall, "end_time_seconds");
    assert!(end >= prev_end - 1e-9, "{report}");
    assert!(
        end >= seconds * 0.9,
        "the test ended after {end}s: {report}"
    );
    assert_eq!(overall["bytes"].as_u64().unwrap(), bytes, "{report}");
    let overall_megabits = num(overall, "throughput_mbits") * end;
    assert!(
        (overall_megabits - megabits).abs() <= megabits * 1e-6,
        "overall {overall_megabits} Mbit vs intervals {megabits} Mbit: {report}"
    );
    assert!(
        (overall_megabits - bytes as f64 * 8.0 / 1e6).abs() <= megabits * 1e-6,
        "{report}"
    );
    report
}

#[test]
fn download_json_rows_add_up() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = speedtest(&cfg, &["-t", "2s", "-o", "json"]);
    assert!(
        out.stderr.contains("Starting a 2s download test..."),
        "{}",
        out.stderr
    );
    check_json(&out, 2.0);
}

#[test]
fn upload_json_rows_add_up_to_the_agents_count() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = speedtest(&cfg, &["--direction", "up", "-t", "2s", "-o", "json"]);
    assert!(
        out.stderr.contains("Starting a 2s upload test..."),
        "{}",
        out.stderr
    );
    // The overall bytes are the agent's count; they equal what the client wrote.
    check_json(&out, 2.0);
    assert!(
        !out.stderr.contains("note: the agent received"),
        "{}",
        out.stderr
    );
}

/// Checks the table of a test of `seconds`: path line, header, rows, rule, overall row.
fn check_table(stdout: &str, seconds: usize) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 4 + seconds, "{stdout}");
    assert!(is_path_line(lines[0]), "first line: {:?}", lines[0]);
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header, ["INTERVAL", "TRANSFER", "BANDWIDTH"], "{stdout}");
    let rule = lines.len() - 2;
    assert!(
        !lines[rule].is_empty() && lines[rule].bytes().all(|b| b == b'-'),
        "rule: {:?}",
        lines[rule]
    );
    let rows = &lines[2..rule];
    // One row per second; what drains after the test's end joins the last row when it
    // takes less than half a second, else gets its own.
    assert!((seconds..=seconds + 1).contains(&rows.len()), "{stdout}");
    for r in rows {
        assert!(is_row(r), "row {r:?}");
    }
    assert!(rows[0].starts_with("0.00-"), "{stdout}");
    let overall = lines[rule + 1];
    assert!(is_row(overall), "overall {overall:?}");
    assert!(overall.starts_with("0.00-"), "{overall}");
    // Columns line up under the header.
    let col = |l: &str, word: &str| l.find(word).unwrap();
    let transfer_at = col(lines[1], "TRANSFER");
    let bandwidth_at = col(lines[1], "BANDWIDTH");
    for l in rows.iter().chain([&overall]) {
        // A cell starts after two or more spaces.
        let b = l.as_bytes();
        let cells: Vec<usize> = (2..b.len())
            .filter(|&i| b[i] != b' ' && b[i - 1] == b' ' && b[i - 2] == b' ')
            .collect();
        assert_eq!(
            cells,
            [transfer_at, bandwidth_at],
            "{l:?} vs {:?}",
            lines[1]
        );
    }
}

#[test]
fn table_output_has_the_coder_format() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = speedtest(&cfg, &["-t", "2s"]);
    check_table(&out.stdout, 2);
    let up = speedtest(&cfg, &["-t", "2s", "--direction", "up", "-o", "table"]);
    check_table(&up.stdout, 2);
}

#[test]
fn direct_flag_waits_for_a_p2p_path_on_loopback() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&[]);
    let out = speedtest(&cfg, &["-d", "-t", "1s"]);
    let first = out.stdout.lines().next().unwrap();
    assert!(is_path_line(first), "{first:?}");
    assert!(first.ends_with("ms via direct"), "{first:?}");
    check_table(&out.stdout, 1);
}

#[test]
fn direct_flag_fails_fast_with_the_reason_when_the_server_blocks_direct() {
    let (_srv, cfg, _agent) = TETHER.dev_workspace(&["--block-direct-connections"]);
    let started = Instant::now();
    let out = TETHER.run(&cfg, &["speedtest", "dev", "-d", "-t", "1s"]);
    let took = started.elapsed();
    println!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let err = out.stderr.lines().last().unwrap();
    assert!(err.starts_with("error: no direct path to dev"), "{err}");
    assert!(err.contains("--block-direct-connections"), "{err}");
    assert!(err.contains("relayed via DERP (tether)"), "{err}");
    assert!(!out.stdout.contains("INTERVAL"), "{}", out.stdout);

    // Without -d the same test runs over the relay.
    let out = speedtest(&cfg, &["-t", "1s"]);
    let first = out.stdout.lines().next().unwrap();
    assert!(first.ends_with("ms via tether"), "{first:?}");
    assert!(is_path_line(first), "{first:?}");
    check_table(&out.stdout, 1);
}

#[test]
fn out_of_range_time_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let out = TETHER.run(dir.path(), &["speedtest", "dev", "-t", "6m"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("must be between 1ms and 5m"),
        "{}",
        out.stderr
    );
}

#[test]
fn row_matcher_matches_what_it_should() {
    assert!(is_row("0.00-1.00 sec  630.7840 MBits  630.7404 Mbits/sec"));
    assert!(is_row("0.00-5.00 sec  3150.0000 MBits  630.0000 Mbits/sec"));
    assert!(!is_row("0.00-1.00 sec  630.784 MBits  630.7404 Mbits/sec"));
    assert!(!is_row(
        "0.00-1.00 sec  630.7840 MBits  630.7404 Mbits/sec "
    ));
    assert!(!is_row("0.0-1.00 sec  630.7840 MBits  630.7404 Mbits/sec"));
    assert!(is_path_line("29ms via tether"));
    assert!(is_path_line("0ms via direct"));
    assert!(!is_path_line("412µs via direct"));
}
