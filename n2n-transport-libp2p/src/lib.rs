//! `n2n-transport-libp2p`: filled in by its own issue.
