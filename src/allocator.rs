//! Settings of the binary's allocator (mimalloc).

/// `mi_option_purge_delay` in mimalloc's option enum (2.x and 3.x alike): how many milliseconds
/// freed memory waits before it is given back to the OS (`-1`: never).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its defaults (mimalloc 2: 10 ms, 3: 1 s), by which [`tune`] recognizes the option before
/// changing it.
const PURGE_DELAY_DEFAULTS: [std::ffi::c_long; 2] = [10, 1000];

/// Keeps freed memory in the process instead of giving it back after a delay. The streaming
/// operators free and allocate small values all the time; each page given back and taken again
/// costs a page fault that zeroes a whole (transparent huge) page, ~12% of the stream
/// benchmark's time (`perf`: `clear_page_erms`). Peak memory is unchanged: it is what the
/// process holds at its largest either way.
pub fn tune() {
    // SAFETY: plain calls into mimalloc's option table, valid at any time; the value is only
    // changed when the option at that index has the purge delay's default, so a mimalloc
    // whose enum differs is left alone.
    unsafe {
        if PURGE_DELAY_DEFAULTS.contains(&libmimalloc_sys::mi_option_get(PURGE_DELAY)) {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Fails when the linked mimalloc has another option at that index (its value differs),
    /// so that an upgrade that moves the option is noticed rather than silently untuned.
    #[test]
    fn the_option_at_the_index_has_the_purge_delays_default_and_takes_the_setting() {
        // SAFETY: reads of mimalloc's option table.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert!(
            super::PURGE_DELAY_DEFAULTS.contains(&before) || before == -1,
            "option {} of this mimalloc is {before}: not the purge delay",
            super::PURGE_DELAY
        );
        super::tune();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) },
            -1
        );
    }
}
