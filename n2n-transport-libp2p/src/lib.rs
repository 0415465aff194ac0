//! # n2n-transport-libp2p
//!
//! A [`Transport`](n2n_core::Transport) over [libp2p](https://libp2p.io), for
//! native peers across machines: TCP secured by Noise and multiplexed by Yamux,
//! and QUIC. Each n2n connection is one libp2p stream carrying length-prefixed
//! messages; all connections of a transport share one swarm (and one libp2p
//! connection per remote).
//!
//! - **Identity.** The swarm's key is the node's own ed25519 key, so the libp2p
//!   peer id and the n2n [`PeerId`](n2n_core::PeerId) name the same peer
//!   ([`identity`] converts between them). The libp2p handshake proves the
//!   remote's key; a remote that is not the peer the signals came from fails
//!   with [`TransportError::IdentityMismatch`](n2n_core::transport::TransportError).
//! - **Signals** ([`signal`]): the dialer sends a session nonce and its
//!   addresses, the acceptor answers with its own; the dialer dials and opens a
//!   stream that presents the nonce. Signals travel over any n2n signaling path
//!   (a server, or a neighbour relaying them), signed end to end by the runtime.
//!   If the acceptor cannot be reached, it dials the dialer back.
//! - **Settings** ([`Config`]): protocols, listen and announce addresses,
//!   message size limit, timeouts. The default listens on `127.0.0.1` only.
//!
//! # Plugin
//!
//! Registered as transport plugin `libp2p`. A plugin crate must be linked to
//! be found: reference it from the binary, e.g. `use n2n_transport_libp2p as _;`.
//!
//! ```toml
//! [transport]
//! name = "libp2p"
//! protocols = ["tcp", "quic"]
//! listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
//! ```

pub mod config;
mod connection;
pub mod identity;
pub mod signal;
mod swarm;
mod transport;

use std::sync::Arc;

use n2n_core::plugin::{PluginContext, PluginError, Settings, TransportPlugin};

pub use config::{Config, Protocol};
pub use connection::{Libp2pConnection, RECV_QUEUE};
pub use libp2p;
pub use libp2p::Multiaddr;
pub use transport::{BuildError, Libp2pTransport, MAX_PENDING_ACCEPTS, STREAM_PROTOCOL};

/// The plugin (and signal transport) name.
pub const PLUGIN_NAME: &str = "libp2p";

fn build_plugin(
    ctx: &PluginContext,
    settings: &Settings,
) -> Result<Arc<dyn n2n_core::Transport>, PluginError> {
    let config = Config::from_settings(settings)?;
    let transport =
        Libp2pTransport::with_seed(&ctx.keypair, config, Some(ctx.seed)).map_err(|e| {
            PluginError::Build {
                plugin: PLUGIN_NAME.into(),
                message: e.to_string(),
            }
        })?;
    Ok(Arc::new(transport))
}

inventory::submit! {
    TransportPlugin { name: PLUGIN_NAME, build: build_plugin }
}
