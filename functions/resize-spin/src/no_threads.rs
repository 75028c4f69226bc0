//! Thread creation for the `wasm32-wasip1` build made by Debian's toolchain (path B in
//! docs/BUILDING.md), whose wasi-libc predates its single-threaded pthread stubs.
//!
//! The AVIF encoder's scene detection links rayon, and rayon starts its pool with
//! `std::thread`; a function has one thread. Creation fails with ENOSYS, which std reports
//! as `ErrorKind::Unsupported`, on which rayon runs its work on the calling thread — what
//! rustup's wasi-libc (path A) does on its own. The attribute calls succeed because std
//! asserts that they do before it tries to create the thread.

use std::ffi::{c_int, c_void};

/// ENOSYS in wasi-libc's numbering.
const ENOSYS: c_int = 52;

#[unsafe(no_mangle)]
pub extern "C" fn pthread_attr_init(_attr: *mut c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn pthread_attr_setstacksize(_attr: *mut c_void, _size: usize) -> c_int {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn pthread_attr_destroy(_attr: *mut c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn pthread_create(
    _thread: *mut c_void,
    _attr: *const c_void,
    _start: *const c_void,
    _arg: *mut c_void,
) -> c_int {
    ENOSYS
}

#[unsafe(no_mangle)]
pub extern "C" fn pthread_detach(_thread: usize) -> c_int {
    ENOSYS
}
