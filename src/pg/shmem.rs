//! The shared memory pgauth reserves at server start (only with `shared_preload_libraries`):
//! regions of a fixed size, each a struct that starts as zeros with one lightweight lock. One
//! request hook and one startup hook set up every region; the capabilities own their structs
//! (`login::shared`: attempt counters; `audit::kept`: events kept after a rollback).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// A region: its name (also its lock's tranche), size, and what to do once it is mapped
/// (`fresh`: just zeroed, so the owner fills in what zeros cannot say, e.g. the lock).
pub(crate) struct Region {
    pub name: &'static CStr,
    pub size: usize,
    pub attach: unsafe fn(memory: *mut u8, lock: *mut pg_sys::LWLock, fresh: bool),
}

const REGIONS: [&Region; 2] = [&crate::login::shared::REGION, &crate::audit::kept::REGION];

static mut PREV_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// From `_PG_init` while preloading.
pub(crate) fn install() {
    unsafe {
        PREV_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request);
        PREV_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn request() {
    unsafe {
        if let Some(prev) = PREV_REQUEST {
            prev();
        }
        for r in REGIONS {
            pg_sys::RequestAddinShmemSpace(r.size);
            pg_sys::RequestNamedLWLockTranche(r.name.as_ptr(), 1);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup() {
    unsafe {
        if let Some(prev) = PREV_STARTUP {
            prev();
        }
        // AddinShmemInitLock (lwlocknames.h: 21), as every extension's startup hook takes it.
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for r in REGIONS {
            let mut found = false;
            let memory = pg_sys::ShmemInitStruct(r.name.as_ptr(), r.size, &mut found).cast::<u8>();
            if !found {
                std::ptr::write_bytes(memory, 0, r.size);
            }
            let lock = &raw mut (*pg_sys::GetNamedLWLockTranche(r.name.as_ptr())).lock;
            (r.attach)(memory, lock, !found);
        }
        pg_sys::LWLockRelease(init_lock);
    }
}

/// Run `f` holding `lock` exclusively. `f` must be plain Rust that cannot raise a PostgreSQL
/// error; the lock is released however `f` returns.
///
/// # Safety
/// `lock` must be a lock of a mapped region.
pub(crate) unsafe fn exclusive<R>(lock: *mut pg_sys::LWLock, f: impl FnOnce() -> R) -> R {
    struct Release(*mut pg_sys::LWLock);
    impl Drop for Release {
        fn drop(&mut self) {
            unsafe { pg_sys::LWLockRelease(self.0) };
        }
    }
    unsafe { pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
    let _release = Release(lock);
    f()
}
