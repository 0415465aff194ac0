//! One n2n connection: one libp2p stream carrying length-prefixed messages.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes, at most
//! the configured `max_message`. A reader task owns the read half and fills a
//! bounded queue (so [`Connection::recv`] is cancel safe and a slow consumer
//! stalls the stream's flow control, not memory); writes go straight to the
//! write half under a lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use libp2p::Stream;
use n2n_core::PeerId;
use n2n_core::transport::{Connection, ConnectionError};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

/// Messages read ahead of [`Connection::recv`] at most.
pub const RECV_QUEUE: usize = 16;

/// How long [`Connection::close`] waits for queued bytes to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages up to this size are written with their header in one write.
const COALESCE: usize = 64 * 1024;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The stream ended cleanly between frames.
    #[error("stream closed")]
    Eof,
    /// The remote announced a frame larger than allowed.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// The stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Bytes a frame's buffer grows by as its body arrives.
const READ_STEP: usize = 64 * 1024;

/// How long one frame may take to be written before the connection is
/// declared lost (a remote that stops reading cannot hold a sender for ever).
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads one frame of at most `limit` bytes.
pub(crate) async fn read_frame<R: futures_util::io::AsyncRead + Unpin>(
    io: &mut R,
    limit: usize,
) -> Result<Bytes, FrameError> {
    let mut header = [0u8; 4];
    // A clean end is only possible before the first header byte.
    let n = io.read(&mut header).await?;
    if n == 0 {
        return Err(FrameError::Eof);
    }
    io.read_exact(&mut header[n..]).await?;
    let size = u32::from_be_bytes(header) as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    // Grows with what actually arrives, not with what the header announced:
    // a remote that announces 1 MiB and sends nothing costs one step.
    let mut body = Vec::with_capacity(size.min(READ_STEP));
    while body.len() < size {
        let start = body.len();
        body.resize(start + (size - start).min(READ_STEP), 0);
        io.read_exact(&mut body[start..]).await?;
    }
    Ok(Bytes::from(body))
}

/// Writes one frame and flushes it.
pub(crate) async fn write_frame<W: futures_util::io::AsyncWrite + Unpin>(
    io: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    let header = (message.len() as u32).to_be_bytes();
    if message.len() <= COALESCE {
        let mut buf = Vec::with_capacity(4 + message.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(message);
        io.write_all(&buf).await?;
    } else {
        io.write_all(&header).await?;
        io.write_all(message).await?;
    }
    io.flush().await
}

struct Writer {
    half: Option<WriteHalf<Stream>>,
    /// Set when a send was cancelled mid-frame: the stream is no longer framed.
    broken: bool,
}

/// A [`Connection`] over one libp2p stream.
pub struct Libp2pConnection {
    remote: PeerId,
    max_message: usize,
    writer: Mutex<Writer>,
    inbound: Mutex<mpsc::Receiver<Result<Bytes, ConnectionError>>>,
    closed: AtomicBool,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for Libp2pConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libp2pConnection")
            .field("remote", &self.remote)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Libp2pConnection {
    /// Wraps an established, acknowledged stream to `remote`.
    pub(crate) fn new(remote: PeerId, stream: Stream, max_message: usize) -> Self {
        let (read, write) = stream.split();
        let (tx, rx) = mpsc::channel(RECV_QUEUE);
        let reader = tokio::spawn(read_loop(read, tx, max_message, remote));
        Self {
            remote,
            max_message,
            writer: Mutex::new(Writer {
                half: Some(write),
                broken: false,
            }),
            inbound: Mutex::new(rx),
            closed: AtomicBool::new(false),
            reader,
        }
    }
}

async fn read_loop(
    mut read: ReadHalf<Stream>,
    tx: mpsc::Sender<Result<Bytes, ConnectionError>>,
    limit: usize,
    remote: PeerId,
) {
    loop {
        let item = match read_frame(&mut read, limit).await {
            Ok(message) => Ok(message),
            Err(FrameError::Eof) => {
                debug!(peer = %remote.short(), "libp2p stream closed by remote");
                return;
            }
            Err(e) => {
                debug!(peer = %remote.short(), error = %e, "libp2p stream failed");
                Err(ConnectionError::Lost(e.to_string()))
            }
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Clears the writer if a send is dropped before its frame is fully written.
struct CancelGuard<'a> {
    writer: &'a mut Writer,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.writer.broken = true;
            self.writer.half = None;
        }
    }
}

#[async_trait]
impl Connection for Libp2pConnection {
    fn remote(&self) -> PeerId {
        self.remote
    }

    async fn send(&self, message: Bytes) -> Result<(), ConnectionError> {
        if message.len() > self.max_message {
            return Err(ConnectionError::TooLarge {
                size: message.len(),
                limit: self.max_message,
            });
        }
        let mut writer = self.writer.lock().await;
        if writer.broken {
            return Err(ConnectionError::Lost(
                "an earlier send was cancelled mid-message".into(),
            ));
        }
        if writer.half.is_none() {
            return Err(ConnectionError::Closed);
        }
        let mut guard = CancelGuard {
            writer: &mut writer,
            armed: true,
        };
        let half = guard.writer.half.as_mut().expect("checked above");
        let Ok(result) = tokio::time::timeout(SEND_TIMEOUT, write_frame(half, &message)).await
        else {
            // Cut mid-frame: the armed guard marks the stream broken.
            return Err(ConnectionError::Lost(format!(
                "a message made no progress for {} s",
                SEND_TIMEOUT.as_secs()
            )));
        };
        guard.armed = false;
        match result {
            Ok(()) => {
                trace!(peer = %self.remote.short(), len = message.len(), "sent");
                Ok(())
            }
            Err(e) => {
                guard.writer.half = None;
                Err(ConnectionError::Lost(e.to_string()))
            }
        }
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
        self.reader.abort();
        let half = {
            let mut writer = self.writer.lock().await;
            writer.half.take()
        };
        if let Some(mut half) = half {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, half.close()).await;
        }
        self.inbound.lock().await.close();
    }
}

impl Drop for Libp2pConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
