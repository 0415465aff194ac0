//! # n2n-transport-webrtc
//!
//! A [`Transport`](n2n_core::Transport) over WebRTC data channels, with the
//! [`webrtc`] crate: each n2n connection is one peer connection carrying one
//! reliable, ordered data channel.
//!
//! - **Signals** ([`signal`]): the dialer's offer, the acceptor's answer, and
//!   the ICE candidates each side trickles as it gathers them. They travel over
//!   any n2n signaling path (a server, or a neighbour relaying them), signed end
//!   to end by the runtime; since the offer and answer carry the DTLS
//!   fingerprints, the data channel is authenticated end to end. The candidates
//!   gathered within [`Config::gather_wait`] travel inside the offer and the
//!   answer, which keeps the set-up at a few round trips (see
//!   [`Config::gather_wait`]); later ones are trickled.
//! - **Candidates.** By default only host candidates on loopback (`127.0.0.1`)
//!   are gathered, no STUN, mDNS off ([`Config::loopback_only`]); set
//!   `loopback_only = false` (and optionally `interfaces`, `ice_servers`) to
//!   reach other machines.
//! - **Messages** ([`frame`]): cut into chunks of [`Config::chunk_size`]
//!   (16 KiB) well below the sizes at which the data channel breaks, and put
//!   back together up to [`Config::max_message`] (default
//!   [`n2n_core::wire::MAX_FRAME`]); larger ones are refused with
//!   [`ConnectionError::TooLarge`](n2n_core::transport::ConnectionError).
//!   Sends wait while more than [`Config::max_buffered`] bytes are
//!   unacknowledged, so a slow receiver slows the sender.
//! - **Failures.** Every handshake is bounded by [`Config::handshake_timeout`];
//!   a remote that vanishes is reported as
//!   [`ConnectionError::Lost`](n2n_core::transport::ConnectionError) after
//!   [`Config::lost_timeout`] of silence. Closing says goodbye and waits
//!   (bounded) for the remote's, so nothing sent before is cut off, then
//!   releases the peer connection and every task ([`WebRtcTransport::stats`]).
//!
//! # Logs
//!
//! This crate logs with `tracing`. The `webrtc` crate logs with `log`, and on
//! every close it logs a few warnings about its own internal tasks ending
//! ("Failed to accept RTP", "failed to read packets on net_conn"); they are
//! expected. Applications that forward `log` records should filter the
//! `webrtc*` targets to `error`.
//!
//! # Features
//!
//! `native` (default): the backend over the [`webrtc`] crate. Without it the
//! crate is only the wire ([`frame`], [`signal`]), with no `webrtc` or tokio:
//! the browser backend of `n2n-web` (wasm32) uses those very modules, so both
//! backends speak one definition of the wire.
//!
//! # Plugin
//!
//! Registered as transport plugin `webrtc`. A plugin crate must be linked to
//! be found: reference it from the binary, e.g. `use n2n_transport_webrtc as _;`.
//!
//! ```toml
//! [transport]
//! name = "webrtc"
//! loopback_only = false
//! ice_servers = ["stun:stun.example.org:3478"]
//! ```

#[cfg(feature = "native")]
pub mod config;
#[cfg(feature = "native")]
mod connection;
pub mod frame;
pub mod signal;
#[cfg(feature = "native")]
mod transport;

#[cfg(feature = "native")]
use std::sync::Arc;

#[cfg(feature = "native")]
use n2n_core::plugin::{PluginContext, PluginError, Settings, TransportPlugin};

#[cfg(feature = "native")]
pub use config::Config;
#[cfg(feature = "native")]
pub use connection::{RECV_QUEUE, WebRtcConnection};
#[cfg(feature = "native")]
pub use transport::{BuildError, TransportStats, WebRtcTransport};
#[cfg(feature = "native")]
pub use webrtc;

/// The plugin (and signal transport) name, on both backends.
pub const PLUGIN_NAME: &str = "webrtc";

/// Label of the one data channel of an n2n connection (created by the dialer,
/// reliable and ordered), on both backends.
pub const CHANNEL_LABEL: &str = "n2n";

/// Candidates accepted from the remote in one handshake, on both backends.
pub const MAX_REMOTE_CANDIDATES: usize = 64;

/// Installs rustls' `ring` crypto provider as the process default, unless one
/// is installed already; returns whether this call installed it.
///
/// webrtc's DTLS asks rustls for the process-wide provider. When another
/// crate of the same build enables a second one (libp2p's QUIC enables
/// `aws-lc-rs`, and cargo unifies features across a workspace), rustls cannot
/// choose and the handshake task panics. [`WebRtcTransport::new`] calls this;
/// code that uses the re-exported [`webrtc`] crate directly should too.
#[cfg(feature = "native")]
pub fn install_default_crypto_provider() -> bool {
    rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
}

#[cfg(feature = "native")]
fn build_plugin(
    _ctx: &PluginContext,
    settings: &Settings,
) -> Result<Arc<dyn n2n_core::Transport>, PluginError> {
    let config = Config::from_settings(settings)?;
    let transport = WebRtcTransport::new(config).map_err(|e| PluginError::Build {
        plugin: PLUGIN_NAME.into(),
        message: e.to_string(),
    })?;
    Ok(Arc::new(transport))
}

#[cfg(feature = "native")]
inventory::submit! {
    TransportPlugin { name: PLUGIN_NAME, build: build_plugin }
}
