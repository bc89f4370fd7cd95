//! Counting the GPU work a step submits, for `nas bench --count-launches`: CUPTI's callback
//! API (libcupti, loaded at run time; NAS_CUPTI_LIB names the file when it is not on the
//! loader's path) reports every CUDA driver call, and the counter tallies kernel launches,
//! memsets and memory copies by the driver function's name, whoever makes them (our kernels,
//! candle's, cuBLAS's).

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Kernel launches, memsets and copies since the counter started (or was reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub kernels: u64,
    pub memsets: u64,
    pub copies: u64,
}

static KERNELS: AtomicU64 = AtomicU64::new(0);
static MEMSETS: AtomicU64 = AtomicU64::new(0);
static COPIES: AtomicU64 = AtomicU64::new(0);

/// CUpti_CallbackData (cupti_callbacks.h), the fields up to the function name.
#[repr(C)]
struct CallbackData {
    callback_site: u32,
    function_name: *const c_char,
}

const DOMAIN_DRIVER_API: u32 = 1;
const SITE_ENTER: u32 = 0;

extern "C" fn on_driver_call(_user: *mut c_void, domain: u32, _cbid: u32, data: *const c_void) {
    if domain != DOMAIN_DRIVER_API || data.is_null() {
        return;
    }
    // SAFETY: for the driver-API domain CUPTI passes a CUpti_CallbackData, whose first two
    // fields are the call site and the function's name (a static C string).
    let data = unsafe { &*(data as *const CallbackData) };
    if data.callback_site != SITE_ENTER || data.function_name.is_null() {
        return;
    }
    // SAFETY: as above.
    let name = unsafe { CStr::from_ptr(data.function_name) }.to_bytes();
    let counter = if name.starts_with(b"cuLaunch") {
        &KERNELS
    } else if name.starts_with(b"cuMemset") {
        &MEMSETS
    } else if name.starts_with(b"cuMemcpy") {
        &COPIES
    } else {
        return;
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

type Subscribe =
    unsafe extern "C" fn(*mut *mut c_void, extern "C" fn(*mut c_void, u32, u32, *const c_void), *mut c_void) -> i32;
type EnableDomain = unsafe extern "C" fn(u32, *mut c_void, u32) -> i32;
type Unsubscribe = unsafe extern "C" fn(*mut c_void) -> i32;

/// A CUPTI subscription counting driver calls until dropped.
pub struct LaunchCounter {
    lib: libloading::Library,
    subscriber: *mut c_void,
}

impl LaunchCounter {
    /// Loads CUPTI and starts counting; the error says why counting is unavailable.
    pub fn start() -> Result<Self, String> {
        let names: Vec<String> = match std::env::var("NAS_CUPTI_LIB") {
            Ok(p) => vec![p],
            Err(_) => ["libcupti.so", "libcupti.so.13", "libcupti.so.12"].map(String::from).to_vec(),
        };
        let mut last = String::new();
        for name in &names {
            // SAFETY: loading CUPTI runs its initialisers, which only register the library.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::subscribe(lib),
                Err(e) => last = format!("{name}: {e}"),
            }
        }
        Err(format!("cannot load CUPTI ({last}); set NAS_CUPTI_LIB"))
    }

    fn subscribe(lib: libloading::Library) -> Result<Self, String> {
        let mut subscriber = std::ptr::null_mut();
        // SAFETY: the symbols have CUPTI's documented signatures; the callback is a plain
        // function that only reads the data CUPTI hands it.
        unsafe {
            let sub: libloading::Symbol<Subscribe> = lib.get(b"cuptiSubscribe").map_err(|e| e.to_string())?;
            let enable: libloading::Symbol<EnableDomain> = lib.get(b"cuptiEnableDomain").map_err(|e| e.to_string())?;
            let r = sub(&mut subscriber, on_driver_call, std::ptr::null_mut());
            if r != 0 {
                return Err(format!("cuptiSubscribe failed ({r})"));
            }
            let r = enable(1, subscriber, DOMAIN_DRIVER_API);
            if r != 0 {
                return Err(format!("cuptiEnableDomain failed ({r})"));
            }
        }
        let c = Self { lib, subscriber };
        c.reset();
        Ok(c)
    }

    pub fn reset(&self) {
        for c in [&KERNELS, &MEMSETS, &COPIES] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            kernels: KERNELS.load(Ordering::Relaxed),
            memsets: MEMSETS.load(Ordering::Relaxed),
            copies: COPIES.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LaunchCounter {
    fn drop(&mut self) {
        // SAFETY: the subscriber came from cuptiSubscribe of this library.
        unsafe {
            if let Ok(unsub) = self.lib.get::<Unsubscribe>(b"cuptiUnsubscribe") {
                unsub(self.subscriber);
            }
        }
    }
}
