//! `--serve PORT` of the spray example: a small HTTP server on loopback that
//! serves the browser peer (`/`, `index.html`), the wasm package built by
//! `scripts/build-web` (`/pkg/…`), the overlay graph (`/graph.json`; the SVG
//! page of the native peers at `/graph`), and takes the browser peers'
//! reports of their views (`POST /report`), so that the graph shows browser
//! peers and their arcs too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use n2n_core::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, RwLock};

/// Largest request head or body read.
const MAX_REQUEST: usize = 64 * 1024;
/// Browser peers remembered at most.
const MAX_BROWSERS: usize = 256;
/// A browser that has not reported for this long is dropped from the graph.
const BROWSER_TTL: Duration = Duration::from_secs(10);
/// Time to read a request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server shows.
pub(crate) struct Site {
    /// The SVG page of the native peers' graph (`/graph`).
    pub(crate) svg: RwLock<String>,
    /// The native peers' outviews.
    pub(crate) graph: RwLock<BTreeMap<PeerId, Vec<PeerId>>>,
    browsers: Mutex<BTreeMap<PeerId, (Instant, Vec<PeerId>)>>,
    /// The signaling server the page joins.
    signal_url: RwLock<String>,
    room: String,
    pkg: PathBuf,
}

impl Site {
    /// A site whose page joins `room`; the wasm package is read from
    /// `N2N_WEB_PKG` or `target/wasm/pkg` of the workspace.
    pub(crate) fn new(room: &str) -> Arc<Self> {
        let pkg = std::env::var_os("N2N_WEB_PKG").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/pkg"),
            PathBuf::from,
        );
        if !pkg.join("n2n_web_bg.wasm").exists() {
            eprintln!(
                "note: no wasm package at {} (run scripts/build-web): the page cannot start its peer",
                pkg.display()
            );
        }
        Arc::new(Self {
            svg: RwLock::new("starting…".into()),
            graph: RwLock::new(BTreeMap::new()),
            browsers: Mutex::new(BTreeMap::new()),
            signal_url: RwLock::new(String::new()),
            room: room.to_string(),
            pkg,
        })
    }

    /// Sets the signaling server the page joins.
    pub(crate) async fn set_signal_url(&self, url: &str) {
        *self.signal_url.write().await = url.to_string();
    }

    /// The browser peers that reported recently, with their outviews.
    pub(crate) async fn browsers(&self) -> BTreeMap<PeerId, Vec<PeerId>> {
        let mut b = self.browsers.lock().await;
        b.retain(|_, (at, _)| at.elapsed() < BROWSER_TTL);
        b.iter().map(|(p, (_, v))| (*p, v.clone())).collect()
    }

    async fn graph_json(&self) -> String {
        let natives = self.graph.read().await.clone();
        let browsers = self.browsers().await;
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        for (kind, g) in [("native", &natives), ("browser", &browsers)] {
            for (p, outs) in g {
                nodes.push(serde_json::json!({"id": p.to_string(), "kind": kind}));
                for q in outs {
                    edges.push(serde_json::json!([p.to_string(), q.to_string()]));
                }
            }
        }
        serde_json::json!({"nodes": nodes, "edges": edges}).to_string()
    }

    async fn report(&self, body: &[u8]) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Report {
            peer: String,
            outview: Vec<String>,
        }
        let r: Report = serde_json::from_slice(body).map_err(|e| format!("bad report: {e}"))?;
        let peer = PeerId::from_str(&r.peer).map_err(|e| format!("bad peer id: {e}"))?;
        let outview = r
            .outview
            .iter()
            .take(1024)
            .map(|q| PeerId::from_str(q).map_err(|e| format!("bad peer id: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut b = self.browsers.lock().await;
        if b.len() >= MAX_BROWSERS && !b.contains_key(&peer) {
            return Err("too many browser peers".into());
        }
        b.insert(peer, (Instant::now(), outview));
        Ok(())
    }
}

/// Serves `site` on `127.0.0.1:port` until the process ends.
pub(crate) async fn serve(port: u16, site: Arc<Site>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("page: http://127.0.0.1:{port}/ (a browser peer; the native graph: /graph)");
    loop {
        let (sock, _) = listener.accept().await?;
        let site = site.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(READ_TIMEOUT * 2, answer(sock, &site)).await {
                tracing::debug!(error = %e, "http request timed out");
            }
        });
    }
}

/// Reads one request (head and body, bounded) and answers it.
async fn answer(mut sock: tokio::net::TcpStream, site: &Site) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(READ_TIMEOUT, sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 && buf.len() + n <= MAX_REQUEST => {
                buf.extend_from_slice(&chunk[..n])
            }
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if length > MAX_REQUEST {
        return reply(
            &mut sock,
            "413 Payload Too Large",
            "text/plain",
            b"too large",
        )
        .await;
    }
    while buf.len() < head_end + length {
        match tokio::time::timeout(READ_TIMEOUT, sock.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let body = &buf[head_end..head_end + length];
    let path = path.split('?').next().unwrap_or("/");
    match (method, path) {
        ("GET", "/") | ("GET", "/index.html") => {
            let page = include_str!("index.html")
                .replace("{{SIGNAL_URL}}", &site.signal_url.read().await)
                .replace("{{ROOM}}", &site.room);
            reply(
                &mut sock,
                "200 OK",
                "text/html; charset=utf-8",
                page.as_bytes(),
            )
            .await;
        }
        ("GET", "/graph") => {
            let svg = site.svg.read().await.clone();
            reply(
                &mut sock,
                "200 OK",
                "text/html; charset=utf-8",
                svg.as_bytes(),
            )
            .await;
        }
        ("GET", "/graph.json") => {
            let json = site.graph_json().await;
            reply(&mut sock, "200 OK", "application/json", json.as_bytes()).await;
        }
        ("POST", "/report") => match site.report(body).await {
            Ok(()) => reply(&mut sock, "204 No Content", "text/plain", b"").await,
            Err(e) => reply(&mut sock, "400 Bad Request", "text/plain", e.as_bytes()).await,
        },
        ("GET", p) if p.starts_with("/pkg/") => {
            let name = &p["/pkg/".len()..];
            let kind = match name {
                "n2n_web.js" => "text/javascript",
                "n2n_web_bg.wasm" => "application/wasm",
                "n2n_web.d.ts" => "text/plain",
                _ => return reply(&mut sock, "404 Not Found", "text/plain", b"not found").await,
            };
            match tokio::fs::read(site.pkg.join(name)).await {
                Ok(bytes) => reply(&mut sock, "200 OK", kind, &bytes).await,
                Err(_) => {
                    let msg = "no wasm package: run scripts/build-web";
                    reply(&mut sock, "404 Not Found", "text/plain", msg.as_bytes()).await;
                }
            }
        }
        _ => reply(&mut sock, "404 Not Found", "text/plain", b"not found").await,
    }
}

async fn reply(sock: &mut tokio::net::TcpStream, status: &str, kind: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
    let _ = sock.shutdown().await;
}

/// The SVG page of the native peers' graph.
pub(crate) fn html(graph: &BTreeMap<PeerId, Vec<PeerId>>, title: &str) -> String {
    let n = graph.len().max(1);
    let pos: BTreeMap<PeerId, (f64, f64)> = graph
        .keys()
        .enumerate()
        .map(|(i, p)| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            (*p, (300.0 + 260.0 * a.cos(), 300.0 + 260.0 * a.sin()))
        })
        .collect();
    let mut svg = String::new();
    for (p, outs) in graph {
        for q in outs {
            if let (Some(a), Some(b)) = (pos.get(p), pos.get(q)) {
                let _ = write!(
                    svg,
                    "<line x1='{:.1}' y1='{:.1}' x2='{:.1}' y2='{:.1}' stroke='#7aa' stroke-opacity='0.5' marker-end='url(#a)'/>",
                    a.0, a.1, b.0, b.1
                );
            }
        }
    }
    for (p, (x, y)) in &pos {
        let _ = write!(
            svg,
            "<circle cx='{x:.1}' cy='{y:.1}' r='7' fill='#246'/><text x='{:.1}' y='{:.1}' font-size='9'>{}</text>",
            x + 9.0,
            y + 3.0,
            p.short()
        );
    }
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='2'>\
         <title>n2n spray</title></head><body style='font-family:sans-serif'><h3>{title}</h3>\
         <svg width='600' height='600' xmlns='http://www.w3.org/2000/svg'><defs><marker id='a' \
         viewBox='0 0 10 10' refX='16' refY='5' markerWidth='6' markerHeight='6' orient='auto'>\
         <path d='M0,0 L10,5 L0,10 z' fill='#7aa'/></marker></defs>{svg}</svg></body></html>"
    )
}
