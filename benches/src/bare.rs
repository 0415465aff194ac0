//! The bare `webrtc` crate (0.17, the one the n2n transport wraps), set up as
//! the n2n transport sets it up: host candidates on loopback only, UDP over
//! IPv4, no mDNS, no STUN. Offer and answer are handed over in memory once
//! gathering is complete (candidates inside them), the usual way to use the
//! crate without a signaling server.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use n2n_transport_webrtc::webrtc;
use tokio::sync::mpsc;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;

use crate::within;

/// An API object with loopback-only host candidates. With `detach`, open data
/// channels are read and written directly ([`RTCDataChannel::detach`]) instead
/// of through `on_message` callbacks.
pub fn api(detach: bool) -> API {
    // The workspace build links a second rustls provider (libp2p's).
    n2n_transport_webrtc::install_default_crypto_provider();
    let mut se = SettingEngine::default();
    if detach {
        se.detach_data_channels();
    }
    se.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    se.set_network_types(vec![NetworkType::Udp4]);
    se.set_include_loopback_candidate(true);
    se.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    APIBuilder::new().with_setting_engine(se).build()
}

/// Two peer connections joined by one open data channel.
pub struct Pair {
    /// The offering side.
    pub pa: Arc<RTCPeerConnection>,
    /// The answering side.
    pub pb: Arc<RTCPeerConnection>,
    /// The channel at the offering side (open).
    pub ca: Arc<RTCDataChannel>,
    /// The channel at the answering side (open).
    pub cb: Arc<RTCDataChannel>,
}

fn on_open(dc: &Arc<RTCDataChannel>, tx: mpsc::Sender<Arc<RTCDataChannel>>) {
    let weak = Arc::downgrade(dc);
    dc.on_open(Box::new(move || {
        if let Some(dc) = weak.upgrade() {
            let _ = tx.try_send(dc);
        }
        Box::pin(async {})
    }));
}

/// Opens a connection: offer and answer are handed over in memory after
/// gathering; returns once the channel is open at both ends.
///
/// # Errors
/// A failure of the crate.
///
/// # Panics
/// If the channel is not open at both ends within [`crate::WAIT`].
pub async fn connect(api: &API) -> anyhow::Result<Pair> {
    within("bare connect", open(api)).await
}

async fn open(api: &API) -> anyhow::Result<Pair> {
    let pa = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let pb = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let (ta, mut ra) = mpsc::channel(1);
    let (tb, mut rb) = mpsc::channel(1);
    let dc = pa.create_data_channel("bench", None).await?;
    on_open(&dc, ta);
    pb.on_data_channel(Box::new(move |dc| {
        on_open(&dc, tb.clone());
        Box::pin(async {})
    }));
    let offer = pa.create_offer(None).await?;
    let mut gathered = pa.gathering_complete_promise().await;
    pa.set_local_description(offer).await?;
    let _ = gathered.recv().await;
    let offer = pa.local_description().await.context("offer")?;
    pb.set_remote_description(offer).await?;
    let answer = pb.create_answer(None).await?;
    let mut gathered = pb.gathering_complete_promise().await;
    pb.set_local_description(answer).await?;
    let _ = gathered.recv().await;
    let answer = pb.local_description().await.context("answer")?;
    pa.set_remote_description(answer).await?;
    let (ca, cb) = (ra.recv().await, rb.recv().await);
    Ok(Pair {
        pa,
        pb,
        ca: ca.ok_or_else(|| anyhow!("channel a"))?,
        cb: cb.ok_or_else(|| anyhow!("channel b"))?,
    })
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair").finish_non_exhaustive()
    }
}

impl Pair {
    /// The detached channels `(a, b)`, for an [`api`] built with `detach`.
    ///
    /// # Errors
    /// If the API was built without `detach`.
    pub async fn detach(&self) -> anyhow::Result<(Arc<DataChannel>, Arc<DataChannel>)> {
        Ok((self.ca.detach().await?, self.cb.detach().await?))
    }

    /// Closes both peer connections.
    ///
    /// # Panics
    /// If closing takes longer than [`crate::WAIT`].
    pub async fn close(&self) {
        let _ = within("bare close", self.pa.close()).await;
        let _ = within("bare close", self.pb.close()).await;
    }
}
