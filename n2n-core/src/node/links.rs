//! The tasks of one connection: a reader that reports every frame to the
//! driver, and a writer that sends control frames before data frames.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::core::ConnectionId;
use super::driver::Report;
use crate::transport::Connection;

/// Aborts a task when dropped, so that a dropped (or killed) node leaves nothing running.
#[derive(Debug)]
pub(super) struct TaskGuard(Option<JoinHandle<()>>);

impl TaskGuard {
    pub(super) fn new(handle: JoinHandle<()>) -> Self {
        Self(Some(handle))
    }

    /// Lets the task run to its end on its own.
    pub(super) fn detach(mut self) {
        self.0.take();
    }

    pub(super) fn is_running(&self) -> bool {
        self.0.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

pub(super) enum WriterCmd {
    Frame(Bytes),
    Close,
}

/// Reads frames from `conn` and reports them, then the loss of the connection.
pub(super) fn spawn_reader(
    conn: Arc<dyn Connection>,
    id: ConnectionId,
    tx: mpsc::Sender<Report>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match conn.recv().await {
                Ok(bytes) => {
                    if tx.send(Report::Frame { conn: id, bytes }).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    let _ = tx.send(Report::ConnLost { conn: id, reason }).await;
                    break;
                }
            }
        }
    })
}

/// Writes control frames first, then data frames, on `conn`; closes it on
/// [`WriterCmd::Close`] once what was queued before is sent.
pub(super) fn spawn_writer(
    conn: Arc<dyn Connection>,
    id: ConnectionId,
    mut control_rx: mpsc::Receiver<WriterCmd>,
    mut data_rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Report>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut data_open = true;
        loop {
            let frame = tokio::select! {
                biased;
                cmd = control_rx.recv() => match cmd {
                    Some(WriterCmd::Frame(f)) => f,
                    Some(WriterCmd::Close) | None => {
                        conn.close().await;
                        break;
                    }
                },
                data = data_rx.recv(), if data_open => match data {
                    Some(f) => f,
                    None => { data_open = false; continue; }
                },
            };
            if let Err(e) = conn.send(frame).await {
                let reason = e.to_string();
                let _ = tx.send(Report::ConnLost { conn: id, reason }).await;
                break;
            }
        }
    })
}
