//! # n2n-signal-ws
//!
//! WebSocket signaling for joining an n2n network: a server (library
//! [`server::Server`] and binary `n2n-signal`) and a client
//! ([`WsSignaling`], a [`Signaling`](n2n_core::Signaling) registered as plugin
//! `ws`). A newcomer uses it once, to reach one contact; afterwards its
//! neighbours relay its signals.
//!
//! # The join protocol
//!
//! One WebSocket connection per client, JSON text frames, one message each,
//! tagged by `type` ([`protocol`]). Peer ids are 64 hex digits; byte strings
//! (signal payloads, signatures) are hex.
//!
//! 1. Server → client `{"type":"challenge","nonce":"<64 hex>","version":1}`.
//! 2. Client → server `{"type":"hello","peer":"<peer id>","room":"<name>","signature":"<128 hex>"}`:
//!    the ed25519 signature, by the peer's key, of `"n2n/ws-join/v1" ‖ nonce ‖
//!    u32-le(len(room)) ‖ room` ([`protocol::challenge_bytes`]). A wrong
//!    signature (someone else's peer id) gets `authentication_failed` and a close.
//! 3. Server → client `{"type":"welcome","contact":"<peer id>"|null}`: a member of
//!    the room chosen at random, or `null` for the first peer.
//! 4. Either way, `{"type":"signal","signal":{...}}` carries a
//!    [`SignedSignal`](n2n_core::SignedSignal): the client sends signals it
//!    authored to a member of its room; the server checks the signature and the
//!    author, and hands the frame to the recipient unchanged. Signals are signed
//!    end to end, so the server cannot alter one without the recipient noticing.
//! 5. A refused frame gets `{"type":"error","code":"<code>","message":"..."}`
//!    ([`protocol::ErrorCode`]: `bad_frame`, `frame_too_large`, `bad_signature`,
//!    `impersonation`, `unknown_peer`, `rate_limited`, `room_full`, `server_full`,
//!    `idle_timeout`, `recipient_busy`, `replaced`, `shutting_down`,
//!    `unexpected`, `slow_reader`, `join_rate_limited`); fatal ones are followed
//!    by a close frame whose reason is the code. The server forgets a peer when
//!    its socket closes.
//!
//! # Limits
//!
//! [`server::Config`] lists every limit with its default: frame size (160 KiB,
//! enough for the largest signal n2n-core allows), signals per second per
//! client, clients per room and in total, rooms, a pool of connections not yet
//! joined apart from the clients, connections per source address, joins per
//! second per source and per room (`join_rate_limited`), one deadline for the
//! upgrade and the hello, the idle timeout, and per-client queues bounded in
//! frames and in bytes (a client that reads too slowly is closed with
//! `slow_reader`). A misbehaving client only ever loses its own connection;
//! refusals that are not its fault (`unknown_peer`, `recipient_busy`) do not
//! count against its error budget. Any frame, a WebSocket ping included,
//! counts as activity for the idle timeout; the client pings every
//! `keepalive_ms` so that a quiet member stays joined.
//!
//! Keys are checked strictly: a weak (small-order) ed25519 key cannot join,
//! and the hello signature is verified with `verify_strict`. Close codes follow
//! RFC 6455: 1007 for a text frame that is not UTF-8, 1002 for a WebSocket
//! protocol violation, 1009 for a frame over the limit, 1008 for other faults,
//! 1013 for a full server or a join rate limit; a client's close is echoed.
//!
//! `n2n-signal --metrics ADDR` serves the counters (connections accepted and
//! refused by reason, joins, refusals by code, signals and bytes relayed, queue
//! drops, suppressed log lines) at `http://ADDR/metrics` in the Prometheus
//! text format.
//!
//! # Running the server by hand
//!
//! ```sh
//! cargo run --release -p n2n-signal-ws --bin n2n-signal -- --listen 127.0.0.1:7000
//! # with Prometheus counters at http://127.0.0.1:9100/metrics (keep it private)
//! cargo run --release -p n2n-signal-ws --bin n2n-signal -- --listen 0.0.0.0:7000 --metrics 127.0.0.1:9100
//! ```
//!
//! # Features
//!
//! `native` (default): the server, the tokio client and the plugin. Without
//! it the crate is only [`protocol`], the frames of the join protocol, which
//! the browser client of `n2n-web` (wasm32) uses as they are.
//!
//! # Plugin
//!
//! Linking this crate registers the signaling plugin `ws`
//! (`use n2n_signal_ws as _;`):
//!
//! ```toml
//! [signaling]
//! name = "ws"
//! url = "ws://127.0.0.1:7000"
//! room = "spray"
//! connect_timeout_ms = 5000   # connect, authenticate and join within this
//! keepalive_ms = 30000        # ping period; a server silent for 3 periods is lost
//! reconnect = true            # rejoin the same room after the connection drops
//! backoff_min_ms = 100        # first reconnection delay, doubling up to
//! backoff_max_ms = 10000
//! ```

#[cfg(feature = "native")]
pub mod client;
pub mod join;
pub mod protocol;
#[cfg(feature = "native")]
pub mod server;

#[cfg(feature = "native")]
use std::sync::Arc;

#[cfg(feature = "native")]
pub use client::{ClientConfig, WsSignaling};
#[cfg(feature = "native")]
use n2n_core::plugin::{PluginContext, PluginError, Settings, SignalingPlugin};
pub use protocol::ErrorCode;
#[cfg(feature = "native")]
pub use server::{Config as ServerConfig, Server};

#[cfg(feature = "native")]
fn build_plugin(
    ctx: PluginContext,
    mut settings: Settings,
) -> n2n_core::plugin::BoxFuture<'static, Result<Arc<dyn n2n_core::Signaling>, PluginError>> {
    Box::pin(async move {
        let bad = |message: String| PluginError::Settings {
            plugin: "ws".into(),
            message,
        };
        let url = match settings.remove("url") {
            Some(toml::Value::String(url)) => url,
            Some(_) => return Err(bad("`url` must be a string".into())),
            None => return Err(bad("`url` is required, e.g. \"ws://127.0.0.1:7000\"".into())),
        };
        let room = match settings.remove("room") {
            Some(toml::Value::String(room)) => room,
            Some(_) => return Err(bad("`room` must be a string".into())),
            None => "n2n".to_string(),
        };
        let config: ClientConfig = toml::Value::Table(settings)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
        let client = WsSignaling::connect(&url, &room, &ctx.keypair, config)
            .await
            .map_err(|e| PluginError::Build {
                plugin: "ws".into(),
                message: e.to_string(),
            })?;
        let client: Arc<dyn n2n_core::Signaling> = client;
        Ok(client)
    })
}

#[cfg(feature = "native")]
inventory::submit! {
    SignalingPlugin { name: "ws", build: build_plugin }
}
