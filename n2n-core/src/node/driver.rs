//! The tokio driver of [`NodeCore`]: one task that feeds the core and carries
//! out its outputs.
//!
//! The driver owns no protocol state. It supervises tasks (connection readers
//! and writers, handshakes, signaling listeners and senders), which only move
//! bytes and report back through one bounded channel; it reads the clock, and
//! sleeps until the core's next timeout. Inputs are taken in order: local
//! commands first, then reports from the network, then the timer.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::core::{Completion, ConnectionId, NodeCore, Output, PathId, SessionId, Ticket};
use super::events::{self, EventSink};
use super::handle::{Command, Published, Reply, Shared};
use super::links::{self, TaskGuard, WriterCmd};
use super::{Event, Snapshot};
use crate::identity::PeerId;
use crate::signal::{Role, SignedSignal};
use crate::signaling::Signaling;
use crate::time::Instant;
use crate::transport::{Connection, PipeError, PipeSender, SignalPipe, Transport, TransportError};
use crate::wire::BridgeFailure;

/// Capacity of the channel from spawned tasks to the driver.
const INTERNAL_CAPACITY: usize = 1024;

/// Signals waiting to be sent on one signaling path.
const SIGNALING_QUEUE: usize = 256;

/// What the spawned tasks report.
pub(super) enum Report {
    Frame {
        conn: ConnectionId,
        bytes: Bytes,
    },
    ConnLost {
        conn: ConnectionId,
        reason: String,
    },
    SessionSignal {
        session: SessionId,
        payload: Vec<u8>,
    },
    SessionDone {
        session: SessionId,
        result: Result<Box<dyn Connection>, TransportError>,
    },
    Signal {
        path: PathId,
        signal: SignedSignal,
    },
}

/// The I/O of one connection.
struct Link {
    conn: Arc<dyn Connection>,
    control: mpsc::Sender<WriterCmd>,
    data: mpsc::Sender<Bytes>,
    reader: TaskGuard,
    writer: TaskGuard,
}

/// The I/O of one handshake.
struct Handshake {
    inbound: PipeSender,
    _task: TaskGuard,
}

struct AttachedSignaling {
    signaling: Arc<dyn Signaling>,
    /// Outgoing signals, sent in order by one task.
    outgoing: mpsc::Sender<SignedSignal>,
    _listener: TaskGuard,
    _sender: TaskGuard,
}

/// Someone waiting on a ticket.
enum Pending {
    Connect(Reply<Result<(), super::ConnectError>>),
    Bridge(Reply<Result<(), BridgeFailure>>),
}

pub(super) struct Driver {
    core: NodeCore,
    transport: Arc<dyn Transport>,
    links: BTreeMap<ConnectionId, Link>,
    handshakes: BTreeMap<SessionId, Handshake>,
    signalings: Vec<AttachedSignaling>,
    pending: BTreeMap<Ticket, Pending>,
    next_ticket: u64,
    reports_tx: mpsc::Sender<Report>,
    reports_rx: mpsc::Receiver<Report>,
    /// The node's event stream (events of protocols without subscribers).
    events: EventSink,
    /// What the handles read without asking the task.
    shared: Arc<Shared>,
    /// The views or neighbours changed since they were last published.
    views_dirty: bool,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub(super) fn new(
        core: NodeCore,
        transport: Arc<dyn Transport>,
        events: EventSink,
        shared: Arc<Shared>,
    ) -> Self {
        let (reports_tx, reports_rx) = mpsc::channel(INTERNAL_CAPACITY);
        Self {
            core,
            transport,
            links: BTreeMap::new(),
            handshakes: BTreeMap::new(),
            signalings: Vec::new(),
            pending: BTreeMap::new(),
            next_ticket: 0,
            reports_tx,
            reports_rx,
            events,
            shared,
            views_dirty: true,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let local = self.core.local_peer_id();
        info!(peer = %local.short(), transport = self.transport.name(), "node started");
        loop {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        if let Some(done) = self.on_command(cmd) {
                            self.core.shutdown(now());
                            self.drain();
                            self.signalings.clear();
                            self.stop();
                            let _ = done.send(());
                            break;
                        }
                    }
                    None => {
                        self.core.shutdown(now());
                        self.drain();
                        self.stop();
                        break;
                    }
                },
                Some(report) = self.reports_rx.recv() => self.on_report(report),
                () = sleep_until(deadline) => self.core.handle_timeout(now()),
            }
            self.drain();
            self.publish();
        }
        info!(peer = %local.short(), "node stopped");
    }

    /// Carries out the outputs of a command and publishes the views, so that
    /// a caller reading them after its reply sees the command's effect.
    fn settle_before_reply(&mut self) {
        self.drain();
        self.views_dirty = true;
        self.publish();
    }

    /// Ends the event streams and forgets the data queues.
    fn stop(&mut self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.data_queues().clear();
        self.publish();
        events::close_all(&self.shared.subscriptions, &self.events);
    }

    /// Publishes the views and neighbours for the handles' synchronous reads.
    fn publish(&mut self) {
        if !std::mem::take(&mut self.views_dirty) {
            return;
        }
        let snapshot = self.core.snapshot();
        let published = Published {
            views: snapshot.views,
            neighbours: snapshot.neighbours.iter().map(|n| n.peer).collect(),
        };
        *self
            .shared
            .published
            .write()
            .unwrap_or_else(|e| e.into_inner()) = published;
    }

    /// Hands an event to its stream; never waits (a full stream drops it and
    /// tells its reader, see [`Event::Lagged`]).
    fn deliver(&mut self, event: Event) {
        if matches!(
            event,
            Event::Connected { .. }
                | Event::Disconnected { .. }
                | Event::ArcOpened { .. }
                | Event::ArcClosed { .. }
        ) {
            self.views_dirty = true;
        }
        events::route(&self.shared.subscriptions, &self.events, event);
    }

    fn ticket(&mut self, pending: Pending) -> Ticket {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        self.pending.insert(ticket, pending);
        ticket
    }

    /// Handles a command; returns the reply to send once shut down.
    fn on_command(&mut self, cmd: Command) -> Option<Reply<()>> {
        let now = now();
        match cmd {
            Command::AttachSignaling(sig) => {
                self.attach(sig);
            }
            Command::Connect {
                peer,
                signaling,
                overlay,
                reply,
            } => {
                let path = self.attach(signaling);
                let ticket = self.ticket(Pending::Connect(reply));
                self.core.connect(now, peer, path, overlay, Some(ticket));
            }
            Command::JoinOverlay {
                overlay,
                contact,
                reply,
            } => {
                let result = self.core.join_overlay(now, overlay, contact);
                self.settle_before_reply();
                let _ = reply.send(result);
            }
            Command::OpenArc {
                overlay,
                peer,
                reply,
            } => {
                let result = self.core.open_arc(now, overlay, peer);
                self.settle_before_reply();
                let _ = reply.send(result);
            }
            Command::CloseArc {
                overlay,
                peer,
                reply,
            } => {
                let result = self.core.close_arc(now, overlay, peer);
                self.settle_before_reply();
                let _ = reply.send(result);
            }
            Command::Bridge {
                overlay,
                from,
                to,
                reply,
            } => {
                let ticket = self.ticket(Pending::Bridge(reply));
                self.core.bridge(now, overlay, from, to, Some(ticket));
            }
            Command::RequestBridge {
                overlay,
                via,
                to,
                reply,
            } => {
                let ticket = self.ticket(Pending::Connect(reply));
                self.core
                    .request_bridge(now, overlay, via, to, Some(ticket));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Peers { overlay, k, reply } => {
                let _ = reply.send(self.core.peers(overlay, k));
            }
            Command::Leave(overlay) => {
                if let Err(e) = self.core.leave(now, overlay) {
                    debug!(error = %e, "leave ignored");
                }
            }
            Command::Overlay(run) => {
                // The closure answers itself; what it changed is published first.
                self.views_dirty = true;
                self.publish();
                run(&mut self.core, now);
            }
            Command::Shutdown(reply) => return Some(reply),
        }
        None
    }

    fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.core.snapshot();
        snapshot.connection_tasks = self
            .links
            .values()
            .map(|l| usize::from(l.reader.is_running()) + usize::from(l.writer.is_running()))
            .sum();
        snapshot
    }

    fn on_report(&mut self, report: Report) {
        let now = now();
        match report {
            Report::Frame { conn, bytes } => self.core.handle_frame(now, conn, &bytes),
            Report::ConnLost { conn, reason } => {
                self.core.handle_connection_lost(now, conn, reason);
            }
            Report::SessionSignal { session, payload } => {
                self.core.handle_handshake_signal(now, session, payload);
            }
            Report::SessionDone { session, result } => {
                self.handshakes.remove(&session);
                let (result, conn) = match result {
                    Ok(conn) => (Ok(()), Some(conn)),
                    Err(e) => (Err(e), None),
                };
                let id = self.core.handle_handshake_done(now, session, result);
                if let Some(conn) = conn {
                    match id {
                        Some(id) => self.add_link(id, conn),
                        None => {
                            tokio::spawn(async move { conn.close().await });
                        }
                    }
                }
            }
            Report::Signal { path, signal } => self.core.handle_signal(now, path, signal),
        }
    }

    /// Carries out every output of the core.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Transmit { conn, frame } => {
                    let full = self
                        .links
                        .get(&conn)
                        .is_some_and(|l| l.control.try_send(WriterCmd::Frame(frame)).is_err());
                    if full {
                        // The peer does not read fast enough to keep up with control traffic.
                        let reason = "control queue full (peer too slow)".to_string();
                        self.core.handle_connection_lost(now(), conn, reason);
                    }
                }
                Output::Close { conn, flush } => self.close_link(conn, flush),
                Output::StartHandshake {
                    session,
                    remote,
                    role,
                    first,
                } => self.start_handshake(session, remote, role, first),
                Output::HandshakeSignal { session, payload } => {
                    if let Some(h) = self.handshakes.get(&session) {
                        match h.inbound.try_send(payload) {
                            Ok(()) => {}
                            Err(PipeError::Full) => {
                                warn!(?session, "handshake signal queue full; signal dropped");
                            }
                            Err(_) => {
                                trace!(?session, "signal after the transport finished ignored");
                            }
                        }
                    }
                }
                Output::AbortHandshake { session } => {
                    self.handshakes.remove(&session);
                }
                Output::SendSignal { path, signal } => {
                    if let Some(s) = self.signalings.get(path.0)
                        && s.outgoing.try_send(signal).is_err()
                    {
                        warn!("signaling queue full; signal dropped (the handshake will time out)");
                    }
                }
                Output::Event(event) => self.deliver(event),
                Output::Done { ticket, result } => {
                    // Whoever waits sees the views as of the outcome.
                    self.views_dirty = true;
                    self.publish();
                    match (self.pending.remove(&ticket), result) {
                        (Some(Pending::Connect(reply)), Completion::Connect(r)) => {
                            let _ = reply.send(r);
                        }
                        (Some(Pending::Bridge(reply)), Completion::Bridge(r)) => {
                            let _ = reply.send(r);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn attach(&mut self, sig: Arc<dyn Signaling>) -> PathId {
        if let Some(i) = self
            .signalings
            .iter()
            .position(|a| Arc::ptr_eq(&a.signaling, &sig))
        {
            return PathId(i);
        }
        let path = PathId(self.signalings.len());
        let tx = self.reports_tx.clone();
        let listener = sig.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(signal) => {
                        if tx.send(Report::Signal { path, signal }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "signaling listener ended");
                        break;
                    }
                }
            }
        });
        let (outgoing, mut queue) = mpsc::channel::<SignedSignal>(SIGNALING_QUEUE);
        let sender = {
            let sig = sig.clone();
            tokio::spawn(async move {
                while let Some(signal) = queue.recv().await {
                    if let Err(e) = sig.send(signal).await {
                        debug!(error = %e, "signal not delivered");
                    }
                }
            })
        };
        self.signalings.push(AttachedSignaling {
            signaling: sig,
            outgoing,
            _listener: TaskGuard::new(task),
            _sender: TaskGuard::new(sender),
        });
        path
    }

    fn add_link(&mut self, id: ConnectionId, conn: Box<dyn Connection>) {
        let conn: Arc<dyn Connection> = Arc::from(conn);
        let config = self.core.config();
        let (control_tx, control_rx) = mpsc::channel::<WriterCmd>(config.control_queue);
        let (data_tx, data_rx) = mpsc::channel::<Bytes>(config.data_queue);
        self.shared
            .data_queues()
            .insert(conn.remote(), data_tx.clone());
        let reader = links::spawn_reader(conn.clone(), id, self.reports_tx.clone());
        let writer = links::spawn_writer(
            conn.clone(),
            id,
            control_rx,
            data_rx,
            self.reports_tx.clone(),
        );
        self.links.insert(
            id,
            Link {
                conn,
                control: control_tx,
                data: data_tx,
                reader: TaskGuard::new(reader),
                writer: TaskGuard::new(writer),
            },
        );
    }

    fn close_link(&mut self, id: ConnectionId, flush: bool) {
        let Some(link) = self.links.remove(&id) else {
            return;
        };
        {
            let mut queues = self.shared.data_queues();
            let peer = link.conn.remote();
            if queues
                .get(&peer)
                .is_some_and(|q| q.same_channel(&link.data))
            {
                queues.remove(&peer);
            }
        }
        if flush {
            // The writer sends what is queued, then closes the connection.
            let _ = link.control.try_send(WriterCmd::Close);
            link.writer.detach();
        } else {
            let conn = link.conn.clone();
            tokio::spawn(async move { conn.close().await });
        }
    }

    fn start_handshake(
        &mut self,
        session: SessionId,
        remote: PeerId,
        role: Role,
        first: Option<Vec<u8>>,
    ) {
        let (pipe, ends) = SignalPipe::new(self.core.local_peer_id(), remote);
        let mut outbound = ends.outbound;
        if let Some(first) = first {
            let _ = ends.inbound.try_send(first);
        }
        let transport = self.transport.clone();
        let tx = self.reports_tx.clone();
        let task = tokio::spawn(async move {
            let fut = match role {
                Role::Dialer => transport.dial(pipe),
                Role::Acceptor => transport.accept(pipe),
            };
            tokio::pin!(fut);
            let result = loop {
                tokio::select! {
                    result = &mut fut => break result,
                    Some(payload) = outbound.recv() => {
                        if tx.send(Report::SessionSignal { session, payload }).await.is_err() {
                            return;
                        }
                    }
                }
            };
            // Signals the transport queued while finishing still go out.
            while let Ok(payload) = outbound.try_recv() {
                let _ = tx.send(Report::SessionSignal { session, payload }).await;
            }
            let _ = tx.send(Report::SessionDone { session, result }).await;
        });
        self.handshakes.insert(
            session,
            Handshake {
                inbound: ends.inbound,
                _task: TaskGuard::new(task),
            },
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
