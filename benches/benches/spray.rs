//! The Spray state machine (`n2n_overlay_spray::spray::State`) driven
//! directly, without a runtime: steps (inputs handled, outputs drained) per
//! second.
//!
//! - `spray/shuffle_exchange`: one whole shuffle between two peers with
//!   partial views of 10 arcs (about ln 10k): the initiator's shuffle timer
//!   fires (it ages its arcs, samples half its view and sends `Exchange`),
//!   the partner handles the `Exchange` (samples, answers, gives its sample
//!   away as bridges and arc closes), and the initiator handles the
//!   `ExchangeReply` (gives its own sample away). Three steps; criterion
//!   reports steps per second. The two peers are built outside the timed part.
//! - `spray/message_decode`: decoding the `Exchange` message of that shuffle.
//!
//! Run: `cargo bench -p benches --bench spray`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use n2n_core::arc::Direction;
use n2n_core::overlay::{Input, Output, Overlay};
use n2n_overlay_spray::spray;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type Peer = spray::State<u32, ChaCha8Rng>;

const VIEW: u32 = 10;
const INITIATOR: u32 = 0;
const PARTNER: u32 = 1;

fn drain(peer: &mut Peer) -> Option<(u32, Vec<u8>)> {
    let mut sent = None;
    while let Some(o) = peer.poll_output() {
        if let Output::Send { to, payload } = o {
            sent = Some((to, payload));
        }
    }
    sent
}

/// A peer with `outview` arcs out and `inview` arcs in.
fn peer(id: u32, outview: impl Iterator<Item = u32>, inview: &[u32], now: Instant) -> Peer {
    let mut p = spray::State::new(
        id,
        spray::Config::default(),
        ChaCha8Rng::seed_from_u64(u64::from(id)),
    );
    for peer in outview {
        p.handle(
            now,
            Input::ArcOpened {
                peer,
                direction: Direction::Outgoing,
            },
        );
    }
    for &peer in inview {
        p.handle(
            now,
            Input::ArcOpened {
                peer,
                direction: Direction::Incoming,
            },
        );
    }
    drain(&mut p);
    p
}

/// The initiator (its oldest arc goes to the partner) and the partner (which
/// holds the initiator's arc in its inview).
fn pair(now: Instant) -> (Peer, Peer) {
    let initiator = peer(INITIATOR, PARTNER..PARTNER + VIEW, &[], now);
    let partner = peer(PARTNER, 100..100 + VIEW, &[INITIATOR], now);
    (initiator, partner)
}

/// One shuffle exchange; returns the `Exchange` message.
fn exchange(initiator: &mut Peer, partner: &mut Peer, now: Instant) -> Vec<u8> {
    initiator.handle(now, Input::Timer(spray::Timer::Shuffle));
    let (to, offer) = drain(initiator).expect("initiator sends Exchange");
    assert_eq!(to, PARTNER, "the oldest arc goes to the partner");
    partner.handle(
        now,
        Input::Message {
            from: INITIATOR,
            payload: offer.clone(),
        },
    );
    let (to, reply) = drain(partner).expect("partner answers");
    assert_eq!(to, INITIATOR);
    initiator.handle(
        now,
        Input::Message {
            from: PARTNER,
            payload: reply,
        },
    );
    drain(initiator);
    offer
}

fn spray(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("spray");
    g.throughput(Throughput::Elements(3));
    g.bench_function("shuffle_exchange", |b| {
        b.iter_batched_ref(
            || pair(now),
            |(initiator, partner)| exchange(initiator, partner, now),
            BatchSize::SmallInput,
        )
    });
    let (mut initiator, mut partner) = pair(now);
    let offer = exchange(&mut initiator, &mut partner, now);
    g.throughput(Throughput::Elements(1));
    g.bench_function("message_decode", |b| {
        b.iter(|| spray::Message::<u32>::decode(black_box(&offer)).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, spray);
criterion_main!(benches);
