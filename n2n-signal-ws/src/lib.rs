//! `n2n-signal-ws`: filled in by its own issue.
