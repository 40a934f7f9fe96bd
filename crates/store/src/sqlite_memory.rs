//! SQLite's memory, set up once per process before its first connection.
//!
//! - **The allocator:** SQLite allocates through the process's Rust global allocator (the
//!   binary's choice: mimalloc for `confsync`), not through libc's `malloc`. Under
//!   `bench service --rate 500`, glibc's `malloc`/`free` (`_int_malloc`, `malloc_consolidate`,
//!   `unlink_chunk`) were 13% of SQLite's connection threads' CPU in `perf`: every statement
//!   allocates and frees cursors, records and values.
//! - **No memory statistics:** `SQLITE_CONFIG_MEMSTATUS` off. With it on (the default), every
//!   allocation and free takes a process-wide mutex to keep counters nobody here reads.
//!
//! Both are `sqlite3_config` settings, which SQLite accepts only before it initialises. The
//! store calls [`configure`] before it opens any connection; if something else in the process
//! initialised SQLite first, the settings are refused and SQLite keeps its defaults (logged).

use std::alloc::Layout;
use std::ffi::{c_int, c_void};
use std::sync::Once;

use libsqlite3_sys as ffi;

/// Each block starts with its total size (SQLite's `xSize` and `xFree` need it; Rust's
/// allocator needs the layout back). 16 bytes keep the caller's part 16-byte aligned.
const HEADER: usize = 16;
const ALIGN: usize = 16;

fn layout(total: usize) -> Option<Layout> {
    Layout::from_size_align(total, ALIGN).ok()
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    let Some(total) = usize::try_from(n).ok().and_then(|n| n.checked_add(HEADER)) else {
        return std::ptr::null_mut();
    };
    let Some(layout) = layout(total) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout's size is at least HEADER (non-zero).
    let base = unsafe { std::alloc::alloc(layout) };
    if base.is_null() {
        return base.cast();
    }
    // SAFETY: the block holds at least HEADER bytes and is 16-byte aligned.
    unsafe {
        base.cast::<usize>().write(total);
        base.add(HEADER).cast()
    }
}

/// The block's start and total size, from the pointer handed to SQLite.
///
/// # Safety
/// `p` came from [`x_malloc`] or [`x_realloc`] and was not freed.
unsafe fn block(p: *mut c_void) -> (*mut u8, usize) {
    // SAFETY: per the contract, HEADER bytes before `p` hold the total size.
    unsafe {
        let base = p.cast::<u8>().sub(HEADER);
        (base, base.cast::<usize>().read())
    }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: SQLite frees only what its xMalloc/xRealloc gave it.
    unsafe {
        let (base, total) = block(p);
        std::alloc::dealloc(base, Layout::from_size_align_unchecked(total, ALIGN));
    }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    if p.is_null() {
        // SAFETY: as malloc.
        return unsafe { x_malloc(n) };
    }
    let Some(total) = usize::try_from(n).ok().and_then(|n| n.checked_add(HEADER)) else {
        return std::ptr::null_mut();
    };
    if layout(total).is_none() {
        return std::ptr::null_mut();
    }
    // SAFETY: `p` is SQLite's block from x_malloc/x_realloc; the new size is non-zero and its
    // layout valid (checked above). On failure the old block stays valid, as SQLite expects.
    unsafe {
        let (base, old) = block(p);
        let grown = std::alloc::realloc(base, Layout::from_size_align_unchecked(old, ALIGN), total);
        if grown.is_null() {
            return std::ptr::null_mut();
        }
        grown.cast::<usize>().write(total);
        grown.add(HEADER).cast()
    }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: as x_free.
    let (_, total) = unsafe { block(p) };
    c_int::try_from(total - HEADER).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // SQLite asks how much a request of n really gets; 8-byte multiples, as its own default.
    n.saturating_add(7) & !7
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

/// Sets SQLite's allocator and turns its memory statistics off, once per process, before the
/// first connection (see the module's documentation).
pub(crate) fn configure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: sqlite3_config is called before SQLite initialises, from one thread (the
        // Once), with the arguments each option documents: an int for MEMSTATUS, a pointer
        // to a sqlite3_mem_methods for MALLOC (SQLite copies it before returning). If SQLite already
        // initialised, it answers SQLITE_MISUSE and changes nothing.
        let (memstatus, malloc) = unsafe {
            (
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
                ffi::sqlite3_config(
                    ffi::SQLITE_CONFIG_MALLOC,
                    &methods as *const ffi::sqlite3_mem_methods,
                ),
            )
        };
        if memstatus != ffi::SQLITE_OK || malloc != ffi::SQLITE_OK {
            tracing::info!(
                memstatus,
                malloc,
                "SQLite was initialised before the store configured it: it keeps libc's malloc and its memory statistics"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_size_across_realloc_and_free() {
        // SAFETY: the functions are used as SQLite uses them: sizes > 0, pointers they made.
        unsafe {
            let p = x_malloc(10);
            assert!(!p.is_null());
            assert_eq!(p as usize % ALIGN, 0, "16-byte aligned");
            assert_eq!(x_size(p), 10);
            p.cast::<u8>().write_bytes(0xab, 10);
            let q = x_realloc(p, 5000);
            assert!(!q.is_null());
            assert_eq!(x_size(q), 5000);
            assert_eq!(std::slice::from_raw_parts(q.cast::<u8>(), 10), &[0xab; 10]);
            let r = x_realloc(q, 3);
            assert_eq!(x_size(r), 3);
            assert_eq!(*r.cast::<u8>(), 0xab);
            x_free(r);
            x_free(std::ptr::null_mut());
            assert_eq!(x_size(std::ptr::null_mut()), 0);
            assert!(x_malloc(-1).is_null(), "a negative size is refused");
            assert_eq!(x_roundup(1), 8);
            assert_eq!(x_roundup(16), 16);
        }
    }
}
