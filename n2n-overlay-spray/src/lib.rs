//! `n2n-overlay-spray`: filled in by its own issue.
