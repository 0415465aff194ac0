//! `n2n-sim`: filled in by its own issue.
