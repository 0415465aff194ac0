//! Browser time and timers: sleeps and deadlines over `setTimeout`, the clock
//! from `performance.now()` (through [`n2n_core::time::Instant`]).

use std::future::Future;
use std::time::Duration;

use futures_util::future::{Either, select};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The clock (`performance.now()` on wasm32).
pub(crate) fn now() -> n2n_core::time::Instant {
    n2n_core::time::Instant::now()
}

/// Milliseconds for `setTimeout`, clamped to what it accepts.
pub(crate) fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Calls `f` after `d`; returns the timer id, or `None` without a window.
pub(crate) fn set_timeout(f: &js_sys::Function, d: Duration) -> Option<i32> {
    let global = js_sys::global().unchecked_into::<web_sys::Window>();
    global
        .set_timeout_with_callback_and_timeout_and_arguments_0(f, millis(d))
        .ok()
}

/// Cancels a timer of [`set_timeout`].
pub(crate) fn clear_timeout(id: i32) {
    let global = js_sys::global().unchecked_into::<web_sys::Window>();
    global.clear_timeout_with_handle(id);
}

/// Resolves after `d`.
pub(crate) async fn sleep(d: Duration) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let _ = set_timeout(&resolve, d);
    });
    let _ = JsFuture::from(promise).await;
}

/// `fut`, or `None` if it takes longer than `d`.
pub(crate) async fn timeout<F: Future>(d: Duration, fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let timer = std::pin::pin!(sleep(d));
    match select(fut, timer).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// A JavaScript value as text, for error messages.
pub(crate) fn js_text(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// Awaits a promise, its rejection as text.
pub(crate) async fn promise(p: js_sys::Promise) -> Result<JsValue, String> {
    JsFuture::from(p).await.map_err(|e| js_text(&e))
}

/// Sets `key` on a plain object.
pub(crate) fn set(obj: &js_sys::Object, key: &str, value: impl Into<JsValue>) {
    let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), &value.into());
}
