//! The `n2n-signal` binary as a separate process: started, joined, stopped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use n2n_core::Keypair;
use n2n_signal_ws::{ClientConfig, WsSignaling};
use rand::SeedableRng;

#[tokio::test]
async fn the_binary_starts_serves_and_stops_on_sigint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_n2n-signal"))
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("readable");
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();

    let key = |s| Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(s));
    let (ka, kb) = (key(1), key(2));
    let a = WsSignaling::connect(&url, "room", &ka, ClientConfig::default())
        .await
        .unwrap();
    let b = WsSignaling::connect(&url, "room", &kb, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(a.contact(), None);
    assert_eq!(b.contact(), Some(ka.peer_id()));

    stop(&mut child).await;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.starts_with("stopped: 2 joins")),
        "{rest:?}"
    );
}

#[tokio::test]
async fn the_binary_reads_its_limits_from_a_config_file() {
    let dir = std::env::temp_dir().join(format!("n2n-signal-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signal.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_room_clients = 1\nidle_timeout_ms = 60000\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_n2n-signal"))
        .args(["--log-level", "warn", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("readable");
    let url = first
        .strip_prefix("listening on ws://127.0.0.1:")
        .map(|port| format!("ws://127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));

    let key = |s| Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(s));
    let _a = WsSignaling::connect(&url, "room", &key(1), ClientConfig::default())
        .await
        .unwrap();
    let err = WsSignaling::connect(&url, "room", &key(2), ClientConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("room_full"), "{err}");

    stop(&mut child).await;
    let _ = std::fs::remove_dir_all(&dir);

    // A bad file is a clear error and a failing exit status.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, "[server]\nmax_clients = \"many\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_n2n-signal"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid config"), "{stderr}");
    assert!(stderr.contains("max_clients"), "{stderr}");
}

#[tokio::test]
async fn the_binary_serves_metrics_with_the_metrics_flag() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut child = Command::new(env!("CARGO_BIN_EXE_n2n-signal"))
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap();
    let url = url.strip_prefix("listening on ").unwrap().to_string();
    let metrics = lines.next().unwrap().unwrap();
    let addr = metrics
        .strip_prefix("metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected line {metrics:?}"))
        .to_string();
    let key = |s| Keypair::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(s));
    let _a = WsSignaling::connect(&url, "room", &key(1), ClientConfig::default())
        .await
        .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("n2n_signal_joins_total 1"), "{body}");
    assert!(
        body.contains("# TYPE n2n_signal_refusals_total counter"),
        "{body}"
    );
    stop(&mut child).await;
}

/// Sends SIGINT and waits (at most 10 s) for a clean exit.
async fn stop(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the server did not stop");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "clean exit, got {exit:?}");
}
