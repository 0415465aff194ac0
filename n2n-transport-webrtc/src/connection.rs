//! One n2n connection: one reliable, ordered WebRTC data channel on its own
//! peer connection.
//!
//! Messages are cut into chunks ([`crate::frame`]); a reader task owns the
//! channel's read side, puts messages back together and fills a bounded queue,
//! so [`Connection::recv`] is cancel safe and a slow consumer stalls SCTP flow
//! control rather than growing memory. Sends wait while the channel holds more
//! than [`Config::max_buffered`](crate::Config::max_buffered) bytes not yet
//! acknowledged by the remote. The peer connection's state is watched: ICE
//! disconnected or failed ends the connection as lost.
//!
//! Closing is a goodbye exchange: the closer sends a goodbye chunk and waits
//! (bounded) for the remote's, which comes after everything the closer sent
//! (the channel is ordered), then closes the peer connection. Waiting for the
//! SCTP acknowledgement instead would cost the remote's 200 ms delayed-ack
//! timer on every close; closing without waiting could cut off the last
//! messages, which the `webrtc` crate drops when its association closes.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use n2n_core::PeerId;
use n2n_core::transport::{Connection, ConnectionError};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, trace};
use webrtc::data::data_channel::DataChannel;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

use crate::frame::{self, MAX_WIRE_CHUNK, Reassembler, Received};
use crate::transport::{Tables, TaskGuard, close_peer_connection};

/// Messages read ahead of [`Connection::recv`] at most.
pub const RECV_QUEUE: usize = 16;

/// How long [`Connection::close`] waits for the remote's goodbye.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// How often a blocked send re-checks the channel besides its wake-ups.
const SEND_POLL: Duration = Duration::from_millis(50);

/// Message ids abandoned by cancelled sends, waiting to be announced.
const MAX_ABANDONED: usize = 64;

/// The limits a connection applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_message: usize,
    pub(crate) chunk_size: usize,
    pub(crate) max_buffered: usize,
    pub(crate) send_timeout: Duration,
}

/// A [`Connection`] over one WebRTC data channel.
pub struct WebRtcConnection {
    remote: PeerId,
    id: u64,
    limits: Limits,
    pc: Arc<RTCPeerConnection>,
    dc: Arc<DataChannel>,
    /// Taken once per chunk, so concurrent messages interleave chunk by chunk.
    writer: AsyncMutex<()>,
    next_message: AtomicU32,
    abandoned: Arc<Mutex<Vec<u32>>>,
    low: Arc<Notify>,
    state: watch::Receiver<RTCPeerConnectionState>,
    inbound: AsyncMutex<mpsc::Receiver<Result<Bytes, ConnectionError>>>,
    closed: AtomicBool,
    goodbye: Arc<Goodbye>,
    reader: JoinHandle<()>,
    tables: Arc<Tables>,
}

/// The goodbye exchange that ends a connection cleanly, shared by the
/// connection and its reader task.
#[derive(Debug, Default)]
struct Goodbye {
    /// This side sent its goodbye (each side sends at most one).
    sent: AtomicBool,
    /// The remote's goodbye arrived (or its side of the channel ended).
    received: watch::Sender<bool>,
    /// [`Connection::close`] started: the reader drops messages instead of
    /// queueing them, so that it keeps reading until the remote's goodbye.
    closing: watch::Sender<bool>,
}

impl Goodbye {
    /// Claims the right to send this side's goodbye.
    fn claim(&self) -> bool {
        !self.sent.swap(true, Ordering::AcqRel)
    }
}

impl std::fmt::Debug for WebRtcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcConnection")
            .field("remote", &self.remote)
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn is_down(s: RTCPeerConnectionState) -> bool {
    matches!(
        s,
        RTCPeerConnectionState::Disconnected
            | RTCPeerConnectionState::Failed
            | RTCPeerConnectionState::Closed
    )
}

/// Resolves once the peer connection is down, with a reason.
async fn until_down(state: &mut watch::Receiver<RTCPeerConnectionState>) -> String {
    loop {
        let s = *state.borrow_and_update();
        if is_down(s) {
            return format!("peer connection {s}");
        }
        if state.changed().await.is_err() {
            return "peer connection gone".into();
        }
    }
}

impl WebRtcConnection {
    /// Wraps an open, detached data channel on `pc` to `remote`.
    pub(crate) fn new(
        remote: PeerId,
        pc: Arc<RTCPeerConnection>,
        dc: Arc<DataChannel>,
        state: watch::Receiver<RTCPeerConnectionState>,
        limits: Limits,
        tables: Arc<Tables>,
    ) -> Self {
        let low = Arc::new(Notify::new());
        dc.set_buffered_amount_low_threshold(limits.max_buffered / 2);
        {
            let low = Arc::clone(&low);
            dc.on_buffered_amount_low(Box::new(move || {
                low.notify_one();
                Box::pin(async {})
            }));
        }
        let (tx, rx) = mpsc::channel(RECV_QUEUE);
        let id = tables.add_connection(remote);
        let goodbye = Arc::new(Goodbye::default());
        let reader = tokio::spawn(read_loop(
            Arc::clone(&dc),
            state.clone(),
            tx,
            Arc::clone(&goodbye),
            limits.max_message,
            remote,
            tables.task(),
        ));
        Self {
            remote,
            id,
            limits,
            pc,
            dc,
            writer: AsyncMutex::new(()),
            next_message: AtomicU32::new(0),
            abandoned: Arc::new(Mutex::new(Vec::new())),
            low,
            state,
            inbound: AsyncMutex::new(rx),
            closed: AtomicBool::new(false),
            goodbye,
            reader,
            tables,
        }
    }

    fn check_alive(&self) -> Result<(), ConnectionError> {
        if self.closed.load(Ordering::Acquire) || *self.goodbye.received.borrow() {
            return Err(ConnectionError::Closed);
        }
        let s = *self.state.borrow();
        if is_down(s) {
            return Err(ConnectionError::Lost(format!("peer connection {s}")));
        }
        Ok(())
    }

    /// Waits until `len` more bytes fit in the channel's send buffer.
    async fn wait_for_room(&self, len: usize) -> Result<(), ConnectionError> {
        let mut last = self.dc.buffered_amount();
        let mut progress = Instant::now();
        loop {
            let buffered = self.dc.buffered_amount();
            if buffered == 0 || buffered + len <= self.limits.max_buffered {
                return Ok(());
            }
            self.check_alive()?;
            if buffered < last {
                progress = Instant::now();
            }
            last = buffered;
            if progress.elapsed() > self.limits.send_timeout {
                return Err(ConnectionError::Lost(format!(
                    "remote acknowledged nothing for {:?}",
                    self.limits.send_timeout
                )));
            }
            let _ = tokio::time::timeout(SEND_POLL, self.low.notified()).await;
        }
    }

    async fn write_chunk(&self, chunk: &Bytes) -> Result<(), ConnectionError> {
        self.wait_for_room(chunk.len()).await?;
        self.dc.write(chunk).await.map(|_| ()).map_err(|e| {
            if self.closed.load(Ordering::Acquire) {
                ConnectionError::Closed
            } else {
                ConnectionError::Lost(e.to_string())
            }
        })
    }

    /// Announces messages whose send was cancelled half-way.
    async fn flush_abandoned(&self) -> Result<(), ConnectionError> {
        let ids = std::mem::take(&mut *self.abandoned.lock().expect("abandoned lock"));
        for id in ids {
            self.write_chunk(&frame::abort(id)).await?;
        }
        Ok(())
    }
}

/// Records a message as abandoned if its send is dropped half-way.
struct Abandon<'a> {
    list: &'a Mutex<Vec<u32>>,
    id: u32,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut list = self.list.lock().expect("abandoned lock");
            if list.len() < MAX_ABANDONED {
                list.push(self.id);
            }
        }
    }
}

async fn read_loop(
    dc: Arc<DataChannel>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    tx: mpsc::Sender<Result<Bytes, ConnectionError>>,
    goodbye: Arc<Goodbye>,
    max_message: usize,
    remote: PeerId,
    _task: TaskGuard,
) {
    let mut buf = vec![0u8; MAX_WIRE_CHUNK];
    let mut reassembler = Reassembler::new(max_message);
    let mut closing = goodbye.closing.subscribe();
    loop {
        let item = tokio::select! {
            read = dc.read(&mut buf) => match read {
                // Chunks are never empty: zero bytes is the stream being reset.
                Ok(0) => {
                    debug!(peer = %remote.short(), "data channel closed by remote");
                    goodbye.received.send_replace(true);
                    Err(ConnectionError::Closed)
                }
                Ok(n) => match reassembler.handle_chunk(&buf[..n]) {
                    Ok(Received::Nothing) => continue,
                    Ok(Received::Message(m)) => Ok(m),
                    Ok(Received::Goodbye) => {
                        debug!(peer = %remote.short(), "remote closed the connection");
                        if goodbye.claim() {
                            // Tells the closer that everything it sent arrived.
                            let _ = dc.write(&frame::goodbye()).await;
                        }
                        goodbye.received.send_replace(true);
                        Err(ConnectionError::Closed)
                    }
                    Err(e) => {
                        debug!(peer = %remote.short(), error = %e, "protocol violation");
                        Err(ConnectionError::Lost(format!("protocol violation: {e}")))
                    }
                },
                Err(e) => {
                    debug!(peer = %remote.short(), error = %e, "data channel failed");
                    Err(ConnectionError::Lost(e.to_string()))
                }
            },
            why = until_down(&mut state) => {
                debug!(peer = %remote.short(), %why, "connection lost");
                Err(ConnectionError::Lost(why))
            }
        };
        let end = item.is_err();
        let delivered = tokio::select! {
            sent = tx.send(item) => sent.is_ok(),
            // Closing locally: nobody will read this, keep reading for the goodbye.
            _ = closing.wait_for(|c| *c) => true,
        };
        if !delivered || end {
            return;
        }
    }
}

#[async_trait]
impl Connection for WebRtcConnection {
    fn remote(&self) -> PeerId {
        self.remote
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if message.len() > self.limits.max_message {
            return Err(ConnectionError::TooLarge {
                size: message.len(),
                limit: self.limits.max_message,
            });
        }
        self.check_alive()?;
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        let mut guard = Abandon {
            list: &self.abandoned,
            id,
            armed: false,
        };
        let single = message.len() <= self.limits.chunk_size;
        for chunk in frame::chunks(id, &message, self.limits.chunk_size) {
            let _turn = self.writer.lock().await;
            self.flush_abandoned().await?;
            guard.armed = !single;
            self.write_chunk(&chunk).await?;
        }
        guard.armed = false;
        trace!(peer = %self.remote.short(), len = message.len(), "sent");
        Ok(())
    }

    async fn recv(&self) -> Result<Bytes, ConnectionError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ConnectionError::Closed);
        }
        let mut inbound = self.inbound.lock().await;
        match inbound.recv().await {
            Some(item) => item,
            None => Err(ConnectionError::Closed),
        }
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.goodbye.closing.send_replace(true);
        let connected = *self.state.borrow() == RTCPeerConnectionState::Connected;
        if connected && self.goodbye.claim() {
            // Best effort, bounded: say goodbye and wait for the remote's, which
            // arrives after everything this side sent (the channel is ordered),
            // so no message is cut off by closing the peer connection.
            let mut received = self.goodbye.received.subscribe();
            let mut state = self.state.clone();
            let _ = tokio::time::timeout(CLOSE_DRAIN, async {
                let said = {
                    let _turn = self.writer.lock().await;
                    self.dc.write(&frame::goodbye()).await.is_ok()
                };
                if said {
                    tokio::select! {
                        _ = received.wait_for(|r| *r) => {}
                        _ = until_down(&mut state) => {}
                    }
                }
            })
            .await;
        }
        self.reader.abort();
        self.inbound.lock().await.close();
        close_peer_connection(&self.pc).await;
        self.tables.remove_connection(self.id);
        debug!(peer = %self.remote.short(), "connection closed");
    }
}

impl Drop for WebRtcConnection {
    fn drop(&mut self) {
        self.reader.abort();
        if !self.closed.swap(true, Ordering::AcqRel) {
            // Dropped without close: release the peer connection in the background.
            let pc = Arc::clone(&self.pc);
            crate::transport::spawn_close(pc, self.tables.task());
        }
        self.tables.remove_connection(self.id);
    }
}
