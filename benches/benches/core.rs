//! Benchmarks of the protocol cores: wire codec and signal signatures.
//!
//! Run: `cargo bench -p benches --bench core`

use criterion::{Criterion, criterion_group, criterion_main};
use n2n_core::Keypair;
use n2n_core::signal::{Role, Signal};
use n2n_core::wire::{self, Message, ProtocolId};
use rand::SeedableRng;
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for size in [64usize, 1024, 64 * 1024] {
        let m = Message::Data {
            protocol: ProtocolId::from_name("app"),
            payload: vec![7; size],
        };
        let frame = wire::encode(&m).expect("encodes");
        g.throughput(criterion::Throughput::Bytes(size as u64));
        g.bench_function(format!("encode_data_{size}"), |b| {
            b.iter(|| wire::encode(black_box(&m)))
        });
        g.bench_function(format!("decode_data_{size}"), |b| {
            b.iter(|| wire::decode(black_box(&frame)))
        });
    }
    let arc = Message::ArcOpen {
        overlay: ProtocolId::from_name("spray"),
    };
    g.bench_function("encode_arc_open", |b| {
        b.iter(|| wire::encode(black_box(&arc)))
    });
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let a = Keypair::generate(&mut rng);
    let b = Keypair::generate(&mut rng);
    let signal = Signal {
        from: a.peer_id(),
        to: b.peer_id(),
        session: 1,
        role: Role::Dialer,
        seq: 0,
        transport: "webrtc".into(),
        payload: vec![b'x'; 600],
    };
    let signed = signal.clone().sign(&a).expect("signs");
    c.bench_function("signal_sign_600B", |bn| {
        bn.iter(|| black_box(signal.clone()).sign(&a))
    });
    c.bench_function("signal_verify_600B", |bn| {
        bn.iter(|| black_box(&signed).verify(&b.peer_id()).is_ok())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = codec, signatures
}
criterion_main!(benches);
