//! `tracing` in the browser: records at or above the level set with
//! `N2nNode.setLogLevel` (default `warn`) go to the console and to a bounded
//! ring, `globalThis.n2nLog` (the last [`RING`] lines), for tests and bug
//! reports.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Lines kept in `globalThis.n2nLog`.
const RING: u32 = 2000;

/// 0 error, 1 warn, 2 info, 3 debug.
static LEVEL: AtomicU8 = AtomicU8::new(1);

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        _ => 3,
    }
}

/// Sets the level from its name; false for an unknown name.
pub(crate) fn set_level(name: &str) -> bool {
    let r = match name {
        "error" => 0,
        "warn" => 1,
        "info" => 2,
        "debug" => 3,
        _ => return false,
    };
    LEVEL.store(r, Ordering::Relaxed);
    true
}

/// A writer of one record.
pub(crate) struct Line {
    buf: Vec<u8>,
    level: u8,
    on: bool,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.on {
            self.buf.extend_from_slice(b);
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.on || self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        let js = wasm_bindgen::JsValue::from_str(text);
        match self.level {
            0 => web_sys::console::error_1(&js),
            1 => web_sys::console::warn_1(&js),
            _ => web_sys::console::log_1(&js),
        }
        let global = js_sys::global();
        let key = wasm_bindgen::JsValue::from_str("n2nLog");
        let ring = match js_sys::Reflect::get(&global, &key) {
            Ok(v) if js_sys::Array::is_array(&v) => {
                wasm_bindgen::JsCast::unchecked_into::<js_sys::Array>(v)
            }
            _ => {
                let a = js_sys::Array::new();
                let _ = js_sys::Reflect::set(&global, &key, &a);
                a
            }
        };
        ring.push(&js);
        if ring.length() > RING {
            ring.shift();
        }
    }
}

/// Makes a [`Line`] per record.
pub(crate) struct Console;

impl<'a> MakeWriter<'a> for Console {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::new(),
            level: 2,
            on: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        let level = rank(meta.level());
        Line {
            buf: Vec::new(),
            level,
            on: level <= LEVEL.load(Ordering::Relaxed),
        }
    }
}

/// Installs the subscriber (once).
pub(crate) fn install() {
    let _ = tracing_subscriber::fmt()
        .with_writer(Console)
        .without_time()
        .with_ansi(false)
        .with_max_level(Level::DEBUG)
        .try_init();
}
