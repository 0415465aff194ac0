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
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "clean exit, got {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.starts_with("stopped: 2 joins")),
        "{rest:?}"
    );
}
