//! The `n2n-sim` binary end to end: flags or a scenario file → run → CSV,
//! summary and plot files.

use std::path::Path;
use std::process::Command;

fn non_empty(path: &Path) {
    let len = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    assert!(len > 0, "{} is empty", path.display());
}

#[test]
fn a_small_run_writes_csv_summary_and_plots() {
    let dir = std::env::temp_dir().join(format!("n2n-sim-cli-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_n2n-sim"))
        .args(["--peers", "150", "--cycles", "12", "--seed", "3", "--quiet"])
        .args(["--crash", "10", "--crash-at", "6", "--loss", "0.001"])
        .arg("--removal-sweep")
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("events/s"), "{stdout}");
    assert!(stdout.contains("cycle 6: 15 peers crashed"), "{stdout}");
    let text = std::fs::read_to_string(dir.join("cycles.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 13, "header + cycles 0..=12: {text}");
    assert!(lines[0].starts_with("cycle,time_s,peers,ln_n,arcs"));
    let columns = lines[0].split(',').count();
    assert!(lines[1..].iter().all(|l| l.split(',').count() == columns));
    assert!(lines[13].starts_with("12,"), "{}", lines[13]);
    assert_eq!(lines[13].split(',').nth(2), Some("135"), "{}", lines[13]);
    for name in [
        "summary.txt",
        "scenario.toml",
        "views.png",
        "views.svg",
        "variance.png",
        "variance.svg",
        "arcs.png",
        "arcs.svg",
        "view-histogram.png",
        "view-histogram.svg",
        "in-degree-histogram.png",
        "in-degree-histogram.svg",
        "removal.png",
        "removal.svg",
    ] {
        non_empty(&dir.join(name));
    }
    // The scenario written back runs again to the same CSV.
    let again = dir.join("again");
    let status = Command::new(env!("CARGO_BIN_EXE_n2n-sim"))
        .arg("--scenario")
        .arg(dir.join("scenario.toml"))
        .args(["--quiet", "--no-plots", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(status.status.success());
    assert_eq!(
        std::fs::read_to_string(again.join("cycles.csv")).unwrap(),
        text
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_and_scenarios_are_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_n2n-sim"))
        .args(["--loss", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--loss"));

    // Each flag out of range is refused, naming the flag or its key, and
    // nothing runs.
    for (flags, named) in [
        (&["--peers", "0"][..], "peers"),
        (&["--peers=-5"][..], "--peers"),
        (&["--delta-ms", "0"][..], "delta_ms"),
        (&["--message-loss", "-0.1"][..], "--message-loss"),
        (&["--message-loss=1.5"][..], "--message-loss"),
        (&["--crash", "150", "--crash-at", "2"][..], "--crash"),
        (&["--crash", "10", "--crash-at", "0"][..], "at_cycle"),
        (&["--latency-min-ms", "0"][..], "latency_min_ms"),
        (&["--threads", "99"][..], "threads"),
        (&["--burst", "0"][..], "size"),
        (&["--oscillate", "10,5,2"][..], "oscillate"),
        (&["--engine", "warp"][..], "--engine"),
        (&["--age-rule", "young"][..], "--age-rule"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_n2n-sim"))
            .args(flags)
            .args(["--quiet", "--no-plots", "--out"])
            .arg(std::env::temp_dir().join("n2n-sim-never-written"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} ran");
        assert!(err.contains(named), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
    }

    let dir = std::env::temp_dir().join(format!("n2n-sim-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "peers = \"many\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_n2n-sim"))
        .arg("--scenario")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("peers"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
