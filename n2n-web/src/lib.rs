//! # n2n-web
//!
//! n2n in the browser (wasm32 only; natively this crate is empty).
#![cfg_attr(not(target_arch = "wasm32"), allow(unused))]
