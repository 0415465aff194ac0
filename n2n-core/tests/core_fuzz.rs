//! Property tests of the node core against a misbehaving neighbour, through
//! the harness ([`n2n_core::harness::adversary`]): arbitrary frames, wire
//! messages (bridge orders, relays with arbitrary signals…) and signals never
//! panic the target, never livelock it, leave no state once their timeouts
//! pass, and an honest peer can still connect to it with exact arc tables.
//! The `cargo fuzz` target `node_core` does the same from raw bytes.

use std::sync::OnceLock;

use n2n_core::harness::adversary::{Action, Adversary, OVERLAY};
use n2n_core::signal::{Role, Signal, SignedSignal};
use n2n_core::time::Duration;
use n2n_core::wire::{BridgeFailure, BridgeMessage, CloseReason, Message, ProtocolId};
use n2n_core::{Keypair, PeerId};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const SEED: u64 = 1;

/// The peers and keys of `Adversary::new(SEED)`.
fn pool() -> &'static (Vec<PeerId>, Vec<Keypair>) {
    static POOL: OnceLock<(Vec<PeerId>, Vec<Keypair>)> = OnceLock::new();
    POOL.get_or_init(|| {
        let adversary = Adversary::new(SEED);
        let keys = adversary.keys().into_iter().cloned().collect();
        (adversary.peers(), keys)
    })
}

fn peer() -> impl Strategy<Value = PeerId> {
    (0..5usize).prop_map(|i| pool().0[i])
}

fn overlay() -> impl Strategy<Value = ProtocolId> {
    prop_oneof![
        3 => Just(OVERLAY),
        1 => Just(ProtocolId::from_name("unknown")),
        1 => any::<u32>().prop_map(ProtocolId::from_hash),
    ]
}

fn job() -> impl Strategy<Value = u64> {
    prop_oneof![0..4u64, any::<u64>()]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn failure() -> impl Strategy<Value = BridgeFailure> {
    prop_oneof![
        Just(BridgeFailure::Timeout),
        Just(BridgeFailure::UnknownJob),
        Just(BridgeFailure::TooManyJobs),
        Just(BridgeFailure::SelfBridge),
        peer().prop_map(BridgeFailure::PeerGone),
        peer().prop_map(BridgeFailure::NotNeighbour),
        bytes(8).prop_map(|b| BridgeFailure::SignalRejected(String::from_utf8_lossy(&b).into())),
    ]
}

/// A signal signed by the evil neighbour, the honest peer, the friend or a
/// stranger,
/// to anyone, carrying a harness hello or arbitrary bytes, possibly altered
/// after signing.
fn signal() -> impl Strategy<Value = SignedSignal> {
    let hello = (any::<bool>(), 0..6u64, any::<u8>()).prop_map(|(offer, node, session)| {
        let mut v = vec![if offer { b'O' } else { b'A' }];
        v.extend_from_slice(&node.to_be_bytes());
        v.extend_from_slice(&u64::from(session).to_be_bytes());
        v
    });
    let payload = prop_oneof![hello, bytes(64)];
    (
        0..4usize,
        peer(),
        prop_oneof![0..4u64, any::<u64>()],
        any::<bool>(),
        0..3u32,
        prop::bool::weighted(0.9),
        payload,
        0..4u8,
        peer(),
    )
        .prop_map(
            |(signer, to, session, dialer, seq, harness, payload, alter, claimed)| {
                let key = &pool().1[signer];
                let signal = Signal {
                    from: key.peer_id(),
                    to,
                    session,
                    role: if dialer { Role::Dialer } else { Role::Acceptor },
                    seq,
                    transport: if harness { "harness" } else { "other" }.into(),
                    payload,
                };
                let mut signed = signal.sign(key).expect("within bounds");
                match alter {
                    0 => signed.signature[7] ^= 0x10,
                    1 => signed.signal.from = claimed,
                    2 => signed.signal.seq ^= 1,
                    _ => {}
                }
                signed
            },
        )
}

fn bridge_message() -> impl Strategy<Value = BridgeMessage> {
    prop_oneof![
        (job(), overlay(), peer(), proptest::option::of(job())).prop_map(
            |(job, overlay, to, request)| BridgeMessage::ConnectTo {
                job,
                overlay,
                to,
                request
            }
        ),
        (job(), overlay(), peer()).prop_map(|(request, overlay, to)| {
            BridgeMessage::BridgeRequest {
                request,
                overlay,
                to,
            }
        }),
        (job(), failure())
            .prop_map(|(request, reason)| BridgeMessage::BridgeRefused { request, reason }),
        (job(), peer(), peer(), signal()).prop_map(|(job, from, to, signal)| {
            BridgeMessage::Relay {
                job,
                from,
                to,
                signal,
            }
        }),
        (job(), failure()).prop_map(|(job, reason)| BridgeMessage::RelayFailed { job, reason }),
        (job(), proptest::option::of(failure())).prop_map(|(job, failure)| {
            BridgeMessage::BridgeResult {
                job,
                result: failure.map_or(Ok(()), Err),
            }
        }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        1 => overlay().prop_map(|overlay| Message::ArcOpen { overlay }),
        1 => overlay().prop_map(|overlay| Message::ArcClose { overlay }),
        3 => bridge_message().prop_map(|m| Message::Bridge(Box::new(m))),
        1 => (overlay(), bytes(32)).prop_map(|(overlay, payload)| Message::Overlay { overlay, payload }),
        1 => (overlay(), bytes(32)).prop_map(|(protocol, payload)| Message::Data { protocol, payload }),
        1 => any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        1 => any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        1 => any::<bool>().prop_map(|idle| Message::Close {
            reason: if idle {
                CloseReason::Idle
            } else {
                CloseReason::Shutdown
            }
        }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        // Arbitrary bytes, and bytes behind the right version byte.
        1 => bytes(64).prop_map(Action::Frame),
        1 => bytes(64).prop_map(|b| Action::Frame([&[1], b.as_slice()].concat())),
        4 => message().prop_map(Action::Message),
        2 => signal().prop_map(Action::Signal),
        1 => (0..100u64).prop_map(|t| Action::Wait(Duration::from_millis(t * 100))),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(15),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_misbehaving_neighbour_cannot_break_the_core(
        actions in proptest::collection::vec(action(), 0..24)
    ) {
        let mut adversary = Adversary::new(SEED);
        for action in actions {
            prop_assert!(adversary.act(action).is_ok(), "livelock");
        }
        prop_assert_eq!(adversary.check(), Ok(()));
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// What the `cargo fuzz` target runs.
    #[test]
    fn raw_fuzzer_bytes_cannot_break_the_core(raw in bytes(512)) {
        let mut adversary = Adversary::new(SEED);
        for action in adversary.actions_from_bytes(&raw, 64) {
            prop_assert!(adversary.act(action).is_ok(), "livelock");
        }
        prop_assert_eq!(adversary.check(), Ok(()));
    }
}
