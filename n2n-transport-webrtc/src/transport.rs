//! The [`Transport`]: one peer connection with one data channel per n2n
//! connection, negotiated by offer, answer and trickled ICE candidates over
//! the [`SignalPipe`] the runtime hands in.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use n2n_core::PeerId;
use n2n_core::transport::{Connection, SignalPipe, Transport, TransportError};
use tokio::sync::{mpsc, watch};
use tracing::debug;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

use crate::config::Config;
use crate::connection::{Limits, WebRtcConnection};
use crate::signal::Signal;
use crate::{CHANNEL_LABEL, MAX_REMOTE_CANDIDATES, PLUGIN_NAME};

/// Local candidates that may wait for the offer or answer to go out first.
const MAX_LOCAL_CANDIDATES: usize = 32;

/// How long closing a peer connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a [`WebRtcTransport`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The settings are invalid.
    #[error("invalid settings: {0}")]
    Config(String),
}

/// What a transport holds, for leak checks: everything here returns to zero
/// once every connection is closed and every handshake is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Open connections.
    pub connections: usize,
    /// Handshakes in progress.
    pub handshakes: usize,
    /// Tasks of this crate alive (connection readers, background closes).
    pub tasks: usize,
}

/// The transport's own tables.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    next_id: AtomicU64,
    connections: Mutex<BTreeMap<u64, PeerId>>,
    handshakes: AtomicUsize,
    tasks: Arc<AtomicUsize>,
}

/// Counts one live task (or handshake) until dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard(Arc<AtomicUsize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tables {
    pub(crate) fn add_connection(&self, remote: PeerId) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections
            .lock()
            .expect("tables lock")
            .insert(id, remote);
        id
    }

    pub(crate) fn remove_connection(&self, id: u64) {
        self.connections.lock().expect("tables lock").remove(&id);
    }

    pub(crate) fn task(&self) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(Arc::clone(&self.tasks))
    }

    fn stats(&self) -> TransportStats {
        TransportStats {
            connections: self.connections.lock().expect("tables lock").len(),
            handshakes: self.handshakes.load(Ordering::Acquire),
            tasks: self.tasks.load(Ordering::Acquire),
        }
    }
}

/// Closes a peer connection, bounded in time; its errors are expected on a
/// connection the remote already tore down, so they are only debug logs.
pub(crate) async fn close_peer_connection(pc: &RTCPeerConnection) {
    match tokio::time::timeout(CLOSE_TIMEOUT, pc.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "peer connection closed with complaints"),
        Err(_) => debug!("closing the peer connection timed out"),
    }
}

/// Closes `pc` in a background task (from a `Drop`), if a runtime is running.
pub(crate) fn spawn_close(pc: Arc<RTCPeerConnection>, task: TaskGuard) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _task = task;
            close_peer_connection(&pc).await;
        });
    }
}

/// Closes the handshake's peer connection unless the handshake succeeded.
struct PcGuard {
    pc: Option<Arc<RTCPeerConnection>>,
    tables: Arc<Tables>,
}

impl Drop for PcGuard {
    fn drop(&mut self) {
        if let Some(pc) = self.pc.take() {
            spawn_close(pc, self.tables.task());
        }
    }
}

/// Decrements the handshake count when the handshake ends (or is dropped).
struct HandshakeGuard(Arc<Tables>);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialer,
    Acceptor,
}

/// A [`Transport`] over WebRTC data channels (crate `webrtc`).
pub struct WebRtcTransport {
    api: API,
    config: Config,
    tables: Arc<Tables>,
}

impl std::fmt::Debug for WebRtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcTransport")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WebRtcTransport {
    /// A transport with `config`.
    ///
    /// Installs rustls' `ring` crypto provider as the process default if the
    /// process has none yet ([`crate::install_default_crypto_provider`]); an
    /// application that wants another one installs it before creating the
    /// transport.
    ///
    /// # Errors
    /// [`BuildError::Config`] if the settings do not hang together.
    pub fn new(config: Config) -> Result<Self, BuildError> {
        config.validate().map_err(BuildError::Config)?;
        crate::install_default_crypto_provider();
        let mut se = SettingEngine::default();
        se.detach_data_channels();
        se.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        se.set_network_types(if config.ipv6 {
            vec![NetworkType::Udp4, NetworkType::Udp6]
        } else {
            vec![NetworkType::Udp4]
        });
        se.set_ice_timeouts(
            Some(config.lost_timeout),
            Some(config.lost_timeout),
            Some(config.keepalive_interval),
        );
        if config.loopback_only {
            se.set_include_loopback_candidate(true);
            se.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        } else if !config.interfaces.is_empty() {
            let names = config.interfaces.clone();
            se.set_interface_filter(Box::new(move |name| names.iter().any(|n| n == name)));
        }
        let api = APIBuilder::new().with_setting_engine(se).build();
        Ok(Self {
            api,
            config,
            tables: Arc::new(Tables::default()),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the transport holds right now (connections, handshakes, tasks).
    pub fn stats(&self) -> TransportStats {
        self.tables.stats()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_message: self.config.max_message,
            chunk_size: self.config.chunk_size,
            max_buffered: self.config.max_buffered,
            send_timeout: self.config.send_timeout,
        }
    }

    fn rtc_configuration(&self) -> RTCConfiguration {
        let ice_servers = if self.config.ice_servers.is_empty() {
            Vec::new()
        } else {
            vec![RTCIceServer {
                urls: self.config.ice_servers.clone(),
                username: self.config.ice_username.clone(),
                credential: self.config.ice_credential.clone(),
            }]
        };
        RTCConfiguration {
            ice_servers,
            ..RTCConfiguration::default()
        }
    }

    async fn handshake(
        &self,
        signals: SignalPipe,
        role: Role,
    ) -> Result<Box<dyn Connection>, TransportError> {
        self.tables.handshakes.fetch_add(1, Ordering::AcqRel);
        let _counted = HandshakeGuard(Arc::clone(&self.tables));
        let timeout = self.config.handshake_timeout;
        let remote = signals.remote();
        let pc = Arc::new(
            self.api
                .new_peer_connection(self.rtc_configuration())
                .await
                .map_err(|e| TransportError::Other(format!("new peer connection: {e}")))?,
        );
        let mut guard = PcGuard {
            pc: Some(Arc::clone(&pc)),
            tables: Arc::clone(&self.tables),
        };
        let result = tokio::time::timeout(timeout, self.negotiate(&pc, signals, role)).await;
        let (dc, state) = match result {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                debug!(peer = %remote.short(), ?role, error = %e, "handshake failed");
                return Err(e);
            }
            Err(_) => {
                debug!(peer = %remote.short(), ?role, "handshake timed out");
                return Err(TransportError::Timeout(timeout));
            }
        };
        guard.pc = None;
        debug!(peer = %remote.short(), ?role, "data channel open");
        Ok(Box::new(WebRtcConnection::new(
            remote,
            pc,
            dc,
            state,
            self.limits(),
            Arc::clone(&self.tables),
        )))
    }

    /// Runs the signal exchange until the data channel is open.
    async fn negotiate(
        &self,
        pc: &Arc<RTCPeerConnection>,
        mut signals: SignalPipe,
        role: Role,
    ) -> Result<(Arc<DataChannel>, watch::Receiver<RTCPeerConnectionState>), TransportError> {
        let stack = |what: &'static str| {
            move |e: webrtc::Error| TransportError::Other(format!("{what}: {e}"))
        };
        let bad = |what: &'static str| {
            move |e: webrtc::Error| TransportError::BadSignal(format!("{what}: {e}"))
        };

        let (state_tx, mut state_rx) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));

        // Candidates found before the offer or answer went out wait here.
        let (cand_tx, mut cand_rx) = mpsc::channel::<Signal>(MAX_LOCAL_CANDIDATES);
        pc.on_ice_candidate(Box::new(move |c| {
            let signal = match c.map(|c| c.to_json()) {
                None => Some(Signal::EndOfCandidates),
                Some(Ok(init)) => Some(Signal::Candidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                }),
                Some(Err(e)) => {
                    debug!(error = %e, "unserializable local candidate");
                    None
                }
            };
            if let Some(s) = signal
                && cand_tx.try_send(s).is_err()
            {
                debug!("local candidate dropped (handshake over or queue full)");
            }
            Box::pin(async {})
        }));

        let (open_tx, mut open_rx) = mpsc::channel::<Opened>(1);
        let mut remote_set = false;
        let local_sdp = match role {
            Role::Dialer => {
                let dc = pc
                    .create_data_channel(
                        CHANNEL_LABEL,
                        Some(RTCDataChannelInit {
                            ordered: Some(true),
                            ..RTCDataChannelInit::default()
                        }),
                    )
                    .await
                    .map_err(stack("create data channel"))?;
                notify_open(&dc, open_tx);
                let offer = pc.create_offer(None).await.map_err(stack("create offer"))?;
                let sdp = self.describe(pc, offer).await?;
                signals
                    .send(Signal::Offer { sdp: sdp.clone() }.encode())
                    .await?;
                sdp
            }
            Role::Acceptor => {
                let first = signals
                    .recv()
                    .await
                    .ok_or(TransportError::SignalingClosed)?;
                let sdp = Signal::expect_offer(&first)?;
                let taken = Arc::new(AtomicBool::new(false));
                pc.on_data_channel(Box::new(move |dc| {
                    if dc.label() == CHANNEL_LABEL && !taken.swap(true, Ordering::AcqRel) {
                        notify_open(&dc, open_tx.clone());
                    } else {
                        debug!(label = dc.label(), "ignoring an extra data channel");
                    }
                    Box::pin(async {})
                }));
                let offer = RTCSessionDescription::offer(sdp).map_err(bad("offer"))?;
                pc.set_remote_description(offer)
                    .await
                    .map_err(bad("offer"))?;
                remote_set = true;
                let answer = pc
                    .create_answer(None)
                    .await
                    .map_err(stack("create answer"))?;
                let sdp = self.describe(pc, answer).await?;
                signals
                    .send(Signal::Answer { sdp: sdp.clone() }.encode())
                    .await?;
                sdp
            }
        };

        let mut early: Vec<RTCIceCandidateInit> = Vec::new();
        let mut remote_candidates = 0usize;
        // Once both descriptions are set, the signaling path may go away
        // (the remote finished first and dropped its end, a relay left):
        // ICE and DTLS go on without it, bounded by the handshake timeout.
        let mut signaling_open = true;
        loop {
            tokio::select! {
                Some(opened) = open_rx.recv() => {
                    let dc = opened
                        .map_err(|e| TransportError::Other(format!("detach data channel: {e}")))?;
                    return Ok((dc, state_rx));
                }
                Some(local) = cand_rx.recv() => {
                    // Candidates gathered in time went out inside the description.
                    let known = matches!(&local, Signal::Candidate { candidate, .. }
                        if local_sdp.contains(&format!("a={candidate}\r\n")));
                    if !known && signaling_open {
                        match signals.send(local.encode()).await {
                            Ok(()) => {}
                            Err(_) if remote_set => signaling_open = false,
                            Err(e) => return Err(e),
                        }
                    }
                }
                payload = signals.recv(), if signaling_open => {
                    let Some(payload) = payload else {
                        if remote_set {
                            signaling_open = false;
                            continue;
                        }
                        return Err(TransportError::SignalingClosed);
                    };
                    let signal = Signal::decode_remote(&payload)?;
                    match signal {
                        Signal::Answer { sdp } if role == Role::Dialer && !remote_set => {
                            let answer = RTCSessionDescription::answer(sdp).map_err(bad("answer"))?;
                            pc.set_remote_description(answer).await.map_err(bad("answer"))?;
                            remote_set = true;
                            for c in early.drain(..) {
                                add_candidate(pc, c).await;
                            }
                        }
                        Signal::Candidate { candidate, sdp_mid, sdp_mline_index } => {
                            remote_candidates += 1;
                            if remote_candidates > MAX_REMOTE_CANDIDATES {
                                return Err(TransportError::BadSignal(format!(
                                    "more than {MAX_REMOTE_CANDIDATES} candidates"
                                )));
                            }
                            let init = RTCIceCandidateInit {
                                candidate,
                                sdp_mid,
                                sdp_mline_index,
                                username_fragment: None,
                            };
                            if remote_set {
                                add_candidate(pc, init).await;
                            } else {
                                early.push(init);
                            }
                        }
                        Signal::EndOfCandidates => {}
                        other => {
                            return Err(TransportError::BadSignal(format!(
                                "unexpected {} signal",
                                other.kind()
                            )));
                        }
                    }
                }
                changed = state_rx.changed() => {
                    let s = *state_rx.borrow_and_update();
                    if changed.is_err() || matches!(s, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                        return Err(TransportError::Other(format!("peer connection {s} during the handshake")));
                    }
                }
            }
        }
    }
}

impl WebRtcTransport {
    /// Sets `description` as the local one and returns its SDP, with the local
    /// candidates gathered within [`Config::gather_wait`].
    ///
    /// Candidates that travel with the description reach the remote together
    /// with its ICE credentials. Trickled separately, they arrive after the
    /// remote's first connectivity checks, whose source the controlling agent
    /// then records as a peer-reflexive candidate; the `webrtc` crate waits a
    /// full second before it nominates a pair with such a candidate.
    async fn describe(
        &self,
        pc: &RTCPeerConnection,
        description: RTCSessionDescription,
    ) -> Result<String, TransportError> {
        let mut gathered = pc.gathering_complete_promise().await;
        let fallback = description.sdp.clone();
        pc.set_local_description(description)
            .await
            .map_err(|e| TransportError::Other(format!("set local description: {e}")))?;
        let _ = tokio::time::timeout(self.config.gather_wait, gathered.recv()).await;
        Ok(pc.local_description().await.map_or(fallback, |d| d.sdp))
    }
}

/// The data channel, detached, once it is open.
type Opened = Result<Arc<DataChannel>, String>;

/// Detaches the channel as soon as it opens (inside the open handler, as the
/// `webrtc` crate expects) and sends it on `tx`. The handler holds the channel
/// weakly: the channel owns the handler, so a strong reference would be a cycle.
fn notify_open(dc: &Arc<RTCDataChannel>, tx: mpsc::Sender<Opened>) {
    let weak = Arc::downgrade(dc);
    dc.on_open(Box::new(move || {
        let (weak, tx) = (weak.clone(), tx.clone());
        Box::pin(async move {
            if let Some(dc) = weak.upgrade() {
                let _ = tx.try_send(dc.detach().await.map_err(|e| e.to_string()));
            }
        })
    }));
}

/// Adds a remote candidate; one this side cannot use (an mDNS name, a TCP
/// candidate) is skipped, not fatal.
async fn add_candidate(pc: &RTCPeerConnection, init: RTCIceCandidateInit) {
    if let Err(e) = pc.add_ice_candidate(init).await {
        debug!(error = %e, "remote candidate skipped");
    }
}

#[async_trait]
impl Transport for WebRtcTransport {
    fn name(&self) -> &str {
        PLUGIN_NAME
    }

    async fn dial(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        self.handshake(signals, Role::Dialer).await
    }

    async fn accept(&self, signals: SignalPipe) -> Result<Box<dyn Connection>, TransportError> {
        self.handshake(signals, Role::Acceptor).await
    }
}

// The chunk limits sit below the message sizes that break the data channel
// (64 KiB messages closed it, 65,000-byte ones stalled it).
const _: () = assert!(crate::frame::MAX_WIRE_CHUNK < 65_000);
