//! Cache prefetch hints.

/// Asks the CPU to bring the cache line at `p` closer, without waiting for
/// it. A hint only: nothing is read, whatever `p` is.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` never faults and has no effect the program can
    // observe, whatever the address; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
