//! `n2n-signal-neighbor`: filled in by its own issue.
