//! A minimal WebDriver client (the W3C protocol over HTTP/1.1) for driving
//! headless Chromium through `chromedriver`, and a static file server for the
//! test page and the wasm package. Every request and wait has a timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Timeout of one WebDriver request (scripts set their own, below it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Chromium's flags: headless, quiet, no throttling of background windows,
/// a fresh profile, and WebRTC host candidates on loopback shown as
/// addresses: without a media permission Chromium offers only mDNS (`.local`)
/// names or the default route's address, so the pages grant themselves one
/// with fake devices (`getUserMedia`), and loopback is allowed.
pub(crate) fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--allow-loopback-in-peer-connection",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .chain(
        std::env::var("N2N_CHROMIUM_FLAGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from),
    )
    .collect()
}

/// Finds a program on `PATH` or at one of `paths`.
pub(crate) fn find(name: &str, paths: &[&str]) -> Option<PathBuf> {
    for p in paths {
        if std::path::Path::new(p).is_file() {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        // Read the head, then as many bytes as it announces (chromedriver
        // may keep the connection open), or to the end of a chunked body.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            raw.extend_from_slice(&buf[..n]);
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
                let length = head.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                match length {
                    Some(len) if raw.len() >= split + 4 + len => break,
                    None if raw.ends_with(b"0\r\n\r\n") => break,
                    _ => {}
                }
            }
            if n == 0 {
                break;
            }
        }
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| anyhow!("webdriver {method} {path} timed out"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("webdriver answered without a head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    let v: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "webdriver {method} {path}: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    if let Some(err) = v["value"].get("error") {
        bail!(
            "webdriver {method} {path}: {err}: {}",
            v["value"]["message"]
        );
    }
    Ok(v["value"].clone())
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line])?.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        let start = line + 2;
        out.extend_from_slice(
            b.get(start..start + n)
                .ok_or_else(|| anyhow!("short chunk"))?,
        );
        b = b.get(start + n + 2..).unwrap_or_default();
    }
}

/// A `chromedriver` process and one browser session.
pub(crate) struct Browser {
    port: u16,
    session: String,
    _driver: Child,
    _profile: TempDir,
}

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. Fails with a clear
    /// message if either is missing.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let chromium = find("chromium", &["/usr/bin/chromium"]).ok_or_else(|| {
            anyhow!("chromium not found (Debian package `chromium`; .ci/run installs it)")
        })?;
        let driver = find("chromedriver", &["/usr/bin/chromedriver"])
            .ok_or_else(|| anyhow!("chromedriver not found (Debian package `chromium-driver`)"))?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", driver.display()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(v) = http(port, "GET", "/status", None).await
                && v["ready"].as_bool() == Some(true)
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromedriver did not come up within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("n2n-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile)?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": chromium_args(&profile)},
            "timeouts": {"script": 90_000, "pageLoad": 30_000}
        }}});
        let v = http(port, "POST", "/session", Some(&caps))
            .await
            .context("cannot start Chromium")?;
        let session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id"))?
            .to_string();
        Ok(Self {
            port,
            session,
            _driver: child,
            _profile: TempDir(profile),
        })
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .await
    }

    /// Opens `url` in the current tab.
    pub(crate) async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .await
            .map(|_| ())
    }

    /// Opens a new tab and returns its handle (the current tab does not change).
    pub(crate) async fn new_tab(&self) -> anyhow::Result<String> {
        let v = self
            .cmd("POST", "/window/new", Some(json!({"type": "window"})))
            .await?;
        Ok(v["handle"]
            .as_str()
            .ok_or_else(|| anyhow!("no handle"))?
            .to_string())
    }

    /// The current tab's handle.
    pub(crate) async fn tab(&self) -> anyhow::Result<String> {
        Ok(self
            .cmd("GET", "/window", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Makes `handle` the current tab.
    pub(crate) async fn switch(&self, handle: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/window", Some(json!({"handle": handle})))
            .await
            .map(|_| ())
    }

    /// Closes the current tab.
    pub(crate) async fn close_tab(&self) -> anyhow::Result<()> {
        self.cmd("DELETE", "/window", None).await.map(|_| ())
    }

    /// Runs `body` as an async function of `args` in the current tab and
    /// returns what it resolves to (a rejection is an error).
    pub(crate) async fn run(&self, body: &str, args: Value) -> anyhow::Result<Value> {
        let script = format!(
            "const done = arguments[arguments.length - 1]; const args = arguments[0];\
             (async (args) => {{ {body} }})(args).then((v) => done({{ok: v === undefined ? null : v}}),\
             (e) => done({{err: String((e && e.message) || e)}}));"
        );
        let v = self
            .cmd(
                "POST",
                "/execute/async",
                Some(json!({"script": script, "args": [args]})),
            )
            .await?;
        if let Some(e) = v.get("err") {
            bail!("in the page: {}", e.as_str().unwrap_or_default());
        }
        Ok(v["ok"].clone())
    }

    /// Ends the session (Chromium exits).
    pub(crate) async fn quit(self) {
        let _ = self.cmd("DELETE", "", None).await;
    }
}

/// Serves the test page at `/` and the wasm package at `/pkg/…` on loopback;
/// returns the port. The page loads the package and sets `window.N2nNode`.
pub(crate) async fn serve_page(pkg: PathBuf) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let pkg = pkg.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (kind, body) = match path.as_str() {
                    "/" => ("text/html", PAGE.as_bytes().to_vec()),
                    "/pkg/n2n_web.js" => (
                        "text/javascript",
                        std::fs::read(pkg.join("n2n_web.js")).unwrap_or_default(),
                    ),
                    "/pkg/n2n_web_bg.wasm" => (
                        "application/wasm",
                        std::fs::read(pkg.join("n2n_web_bg.wasm")).unwrap_or_default(),
                    ),
                    _ => ("text/plain", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    Ok(port)
}

const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>n2n test</title></head><body>
<script type="module">
import init, { N2nNode } from "/pkg/n2n_web.js";
try { await init(); window.N2nNode = N2nNode; window.n2nReady = true; }
catch (e) { window.n2nLoadError = String(e); }
</script></body></html>"#;
