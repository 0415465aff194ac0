//! Benchmarks of n2n: see `benches/README.md`.
