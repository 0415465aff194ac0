//! The swarm driver: one tokio task owns the libp2p [`Swarm`] and serves
//! commands from the transport over a bounded channel.
//!
//! It listens, reports the listen addresses once every listener has settled,
//! dials with an expected peer id (so Noise or QUIC/TLS proves the remote's
//! identity), and tells waiters when a peer is connected in either direction.
//! Streams are opened and accepted outside this task, through
//! [`libp2p_stream::Control`].

use std::collections::BTreeMap;

use futures_util::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::ListenerId;
use libp2p::core::transport::{Boxed, OptionalTransport};
use libp2p::core::upgrade::Version;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, Transport as _};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

use crate::config::{Config, Protocol};

/// Commands waiting for the swarm task at most.
pub(crate) const COMMAND_QUEUE: usize = 256;
/// Dials, peer waiters and address waiters the task tracks at most, each.
const MAX_WAITERS: usize = 1024;

/// Why a dial failed.
#[derive(Debug, Clone)]
pub(crate) enum DialFailure {
    /// The remote proved to be another peer.
    WrongPeer(PeerId),
    /// No address worked (or none was usable).
    Unreachable(String),
    /// Too many dials in flight.
    Busy,
}

pub(crate) type Reply<T> = oneshot::Sender<T>;

#[derive(Debug)]
pub(crate) enum Command {
    /// The addresses to hand to remotes, once every listener has settled.
    ListenAddrs(Reply<Result<Vec<Multiaddr>, String>>),
    /// Dials `peer` at `addrs` unless connected; replies once connected or failed.
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<Result<(), DialFailure>>,
    },
    /// Replies once `peer` is connected (at once if it is).
    AwaitPeer { peer: PeerId, reply: Reply<()> },
}

/// Builds the swarm for `config`: TCP+Noise+Yamux and/or QUIC, one stream
/// behaviour.
pub(crate) fn build(
    keypair: libp2p::identity::Keypair,
    config: &Config,
) -> Result<Swarm<libp2p_stream::Behaviour>, String> {
    let tcp = if config.protocols.contains(&Protocol::Tcp) {
        let noise = libp2p::noise::Config::new(&keypair).map_err(|e| e.to_string())?;
        OptionalTransport::some(
            libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::new().nodelay(true))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(libp2p::yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer))),
        )
    } else {
        OptionalTransport::none()
    };
    let quic = if config.protocols.contains(&Protocol::Quic) {
        OptionalTransport::some(
            libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(&keypair))
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn))),
        )
    } else {
        OptionalTransport::none()
    };
    let transport: Boxed<(PeerId, StreamMuxerBox)> = tcp
        .or_transport(quic)
        .map(|either, _| either.into_inner())
        .boxed();
    let swarm_config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.idle_connection_timeout);
    Ok(Swarm::new(
        transport,
        libp2p_stream::Behaviour::new(),
        keypair.public().to_peer_id(),
        swarm_config,
    ))
}

#[derive(Debug, Default)]
struct Listener {
    addrs: Vec<Multiaddr>,
    settled: bool,
}

/// The swarm task's state.
pub(crate) struct Driver {
    swarm: Swarm<libp2p_stream::Behaviour>,
    /// Few (one per listen address): a list keeps them in start order.
    listeners: Vec<(ListenerId, Listener)>,
    announce: Vec<Multiaddr>,
    addr_waiters: Vec<Reply<Result<Vec<Multiaddr>, String>>>,
    dials: BTreeMap<ConnectionId, Reply<Result<(), DialFailure>>>,
    peer_waiters: BTreeMap<PeerId, Vec<Reply<()>>>,
    /// Inbound connections open, and their bound.
    inbound: std::collections::BTreeSet<ConnectionId>,
    max_inbound: usize,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local", self.swarm.local_peer_id())
            .field("listeners", &self.listeners.len())
            .field("dials", &self.dials.len())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Starts listening on `listen`.
    ///
    /// # Errors
    /// An address the swarm refuses at once.
    pub(crate) fn new(
        mut swarm: Swarm<libp2p_stream::Behaviour>,
        listen: Vec<Multiaddr>,
        announce: Vec<Multiaddr>,
        max_inbound: usize,
    ) -> Result<Self, String> {
        let mut listeners = Vec::new();
        for addr in listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            listeners.push((id, Listener::default()));
        }
        Ok(Self {
            swarm,
            listeners,
            announce,
            addr_waiters: Vec::new(),
            dials: BTreeMap::new(),
            peer_waiters: BTreeMap::new(),
            inbound: std::collections::BTreeSet::new(),
            max_inbound,
        })
    }

    /// Runs until every command sender is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        info!(peer = %self.swarm.local_peer_id(), "libp2p swarm started");
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        debug!(peer = %self.swarm.local_peer_id(), "libp2p swarm stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                self.addr_waiters.retain(|w| !w.is_closed());
                if self.addr_waiters.len() >= MAX_WAITERS {
                    let _ = reply.send(Err("too many address requests".into()));
                    return;
                }
                self.addr_waiters.push(reply);
                self.answer_addr_waiters();
            }
            Command::Dial { peer, addrs, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                self.dials.retain(|_, w| !w.is_closed());
                if self.dials.len() >= MAX_WAITERS {
                    let _ = reply.send(Err(DialFailure::Busy));
                    return;
                }
                // Every dial gets its own attempt and its own outcome, even when
                // another one to the same peer is under way.
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::Always)
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        trace!(%peer, ?id, "dialing");
                        self.dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(dial_failure(&e)));
                    }
                }
            }
            Command::AwaitPeer { peer, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(());
                    return;
                }
                let total: usize = self.peer_waiters.values().map(Vec::len).sum();
                if total >= MAX_WAITERS {
                    self.peer_waiters.retain(|_, ws| {
                        ws.retain(|w| !w.is_closed());
                        !ws.is_empty()
                    });
                }
                let total: usize = self.peer_waiters.values().map(Vec::len).sum();
                if total < MAX_WAITERS {
                    self.peer_waiters.entry(peer).or_default().push(reply);
                }
                // Over the bound the reply is dropped: the waiter sees a closed channel.
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<()>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(%address, "listening");
                let l = self.listener(listener_id);
                l.addrs.push(address);
                l.settled = true;
                self.answer_addr_waiters();
            }
            SwarmEvent::ExpiredListenAddr {
                listener_id,
                address,
            } => {
                self.listener(listener_id).addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                warn!(?listener_id, ?reason, "listener closed");
                let l = self.listener(listener_id);
                l.addrs.clear();
                l.settled = true;
                self.answer_addr_waiters();
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                warn!(?listener_id, %error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                debug!(peer = %peer_id, ?connection_id, addr = %endpoint.get_remote_address(), "connection established");
                if endpoint.is_listener() {
                    if self.inbound.len() >= self.max_inbound {
                        debug!(peer = %peer_id, max = self.max_inbound, "inbound connection over the limit closed");
                        self.swarm.close_connection(connection_id);
                        return;
                    }
                    self.inbound.insert(connection_id);
                }
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                for w in self.peer_waiters.remove(&peer_id).unwrap_or_default() {
                    let _ = w.send(());
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(?peer_id, ?connection_id, %error, "dial failed");
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(dial_failure(&error)));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                debug!(%send_back_addr, %error, "inbound connection failed");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                self.inbound.remove(&connection_id);
                debug!(peer = %peer_id, ?cause, "connection closed");
            }
            other => trace!(?other, "swarm event"),
        }
    }

    fn listener(&mut self, id: ListenerId) -> &mut Listener {
        let i = match self.listeners.iter().position(|(l, _)| *l == id) {
            Some(i) => i,
            None => {
                self.listeners.push((id, Listener::default()));
                self.listeners.len() - 1
            }
        };
        &mut self.listeners[i].1
    }

    fn answer_addr_waiters(&mut self) {
        if self.addr_waiters.is_empty() {
            return;
        }
        let result = if !self.announce.is_empty() {
            Ok(self.announce.clone())
        } else if self.listeners.iter().all(|(_, l)| l.settled) {
            let addrs = announceable(
                self.listeners
                    .iter()
                    .flat_map(|(_, l)| l.addrs.iter().cloned())
                    .collect(),
            );
            if addrs.is_empty() {
                Err("no listener is up".to_string())
            } else {
                Ok(addrs)
            }
        } else {
            return;
        };
        for w in self.addr_waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

/// The listen addresses worth handing to a remote. Loopback addresses are left
/// out when there are others: on the remote's host they name the remote's own
/// loopback, where another peer may listen on the same port. IPv6 link-local
/// addresses are left out too (unusable without a scope).
pub(crate) fn announceable(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    use libp2p::multiaddr::Protocol as Segment;
    let is_loopback = |a: &Multiaddr| match a.iter().next() {
        Some(Segment::Ip4(ip)) => ip.is_loopback(),
        Some(Segment::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    };
    let is_link_local = |a: &Multiaddr| matches!(a.iter().next(), Some(Segment::Ip6(ip)) if ip.is_unicast_link_local());
    let usable: Vec<Multiaddr> = addrs.into_iter().filter(|a| !is_link_local(a)).collect();
    if usable.iter().all(is_loopback) {
        return usable;
    }
    usable.into_iter().filter(|a| !is_loopback(a)).collect()
}

fn dial_failure(error: &DialError) -> DialFailure {
    match error {
        DialError::WrongPeerId { obtained, .. } => DialFailure::WrongPeer(*obtained),
        other => DialFailure::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn loopback_is_announced_only_when_alone() {
        let only_loopback = addrs(&["/ip4/127.0.0.1/tcp/1", "/ip6/::1/udp/2/quic-v1"]);
        assert_eq!(announceable(only_loopback.clone()), only_loopback);
        assert_eq!(
            announceable(addrs(&[
                "/ip4/127.0.0.1/tcp/1",
                "/ip4/10.77.12.1/tcp/1",
                "/ip6/fe80::1/tcp/1",
                "/ip6/::1/tcp/1",
            ])),
            addrs(&["/ip4/10.77.12.1/tcp/1"])
        );
        assert!(announceable(Vec::new()).is_empty());
    }
}
