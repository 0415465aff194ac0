//! `n2n-transport-webrtc`: filled in by its own issue.
