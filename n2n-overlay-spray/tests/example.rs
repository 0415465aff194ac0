//! The `spray` example end to end, on real WebRTC peers on loopback: one
//! process with an embedded signaling server, stopped after the joins.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/<profile>`, found from this test executable (`target/<profile>/deps/…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary or example, built on demand if this test runs alone.
fn artifact(relative: &str, build_args: &[&str]) -> PathBuf {
    let path = target_dir().join(relative);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet"])
            .args(build_args)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build {relative}");
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

fn example() -> PathBuf {
    artifact(
        "examples/spray",
        &["-p", "n2n-overlay-spray", "--example", "spray"],
    )
}

fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("n2n-spray-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_example_converges_on_real_webrtc_without_the_server() {
    let out = temp("single.json");
    let graph = temp("single.dot");
    let run = Command::new(example())
        .args([
            "--peers", "20", "--cycles", "6", "--delta", "3000", "--seed", "3",
        ])
        .arg("--report")
        .arg(&out)
        .arg("--graph")
        .arg(&graph)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "exit {:?}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("the signaling server is stopped"),
        "{stdout}"
    );
    assert!(stdout.contains("summary:"), "{stdout}");
    let r = report(&out);
    assert_eq!(r["peers"].as_array().unwrap().len(), 20);
    // Every peer is part of one overlay, built by bridging after the server left.
    assert!(r["weakly_connected"].as_bool().unwrap(), "{stdout}");
    let arcs: usize = r["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["outview"].as_array().unwrap().len())
        .sum();
    assert!(arcs >= 20, "{arcs} arcs\n{stdout}");
    assert!(
        r["bridges_ok"].as_u64().unwrap() > 0,
        "shuffles bridged arcs through neighbours"
    );
    let dot = std::fs::read_to_string(&graph).unwrap();
    assert!(dot.starts_with("digraph spray"), "{dot}");
    assert!(dot.matches("->").count() >= 20);
}
