//! Helpers of the browser tests.

pub(crate) mod native;
pub(crate) mod webdriver;
