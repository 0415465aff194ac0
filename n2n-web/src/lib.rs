//! # n2n-web
//!
//! n2n in the browser: the same sans-IO node core (`n2n_core::node::core`)
//! and Spray as native peers, driven by a browser driver (wasm-bindgen
//! futures, `setTimeout`, `performance.now()`), over the browser's WebRTC
//! (`RTCPeerConnection`, one `RTCDataChannel`) speaking the native
//! transport's wire (`n2n_transport_webrtc::frame`,
//! `n2n_transport_webrtc::signal`), joining through the WebSocket server of
//! `n2n-signal-ws` with its join protocol (`n2n_signal_ws::protocol`).
//! A browser peer and a native peer are peers of one overlay.
//!
//! Everything is compiled for `wasm32-unknown-unknown` only (natively this
//! crate is empty); build the package with `scripts/build-web`, which writes
//! `target/wasm/pkg/n2n_web.js` (an ES module), `n2n_web_bg.wasm` and
//! `n2n_web.d.ts`.
//!
//! ```js
//! import init, { N2nNode } from "./n2n_web.js";
//! await init();
//! const node = new N2nNode(N2nNode.storedKey("n2n-key"), { protocols: ["chat"] });
//! node.onEvent((e) => console.log(e.type, e));
//! const contact = await node.join("ws://127.0.0.1:7000", "spray");
//! await node.send(contact, "chat", new TextEncoder().encode("hello"));
//! console.log(node.view(), node.getPeers(3));
//! ```

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod config;
#[cfg(target_arch = "wasm32")]
mod driver;
#[cfg(target_arch = "wasm32")]
mod log;
#[cfg(target_arch = "wasm32")]
mod rtc;
#[cfg(target_arch = "wasm32")]
mod util;
#[cfg(target_arch = "wasm32")]
mod ws;

#[cfg(target_arch = "wasm32")]
pub use api::WebNode;

/// Installs the panic hook (a panic is reported on the console and in
/// `globalThis.n2nPanic` before the module stops) when the module loads.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    log::install();
    std::panic::set_hook(Box::new(|info| {
        let message = format!("n2n-web panicked: {info}");
        web_sys::console::error_1(&message.as_str().into());
        let _ = js_sys::Reflect::set(&js_sys::global(), &"n2nPanic".into(), &message.into());
    }));
}
