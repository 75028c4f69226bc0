//! Small helpers shared by the benchmark binaries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins the calling thread (and the threads it starts later) to CPU `core`.
pub fn pin_to_cpu(core: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it and the
    // call only reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(format!("could not pin to CPU {core}"))
    }
}

/// Writes a benchmark's figures to `target/bench/<name>.json` (where `imgfleet capacity`
/// looks first), stamped with the time of the run; returns the path.
pub fn record(name: &str, mut figures: serde_json::Value) -> std::path::PathBuf {
    let now = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    figures["measured_at"] = serde_json::Value::String(now);
    let dir = crate::host::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&figures).expect("json"))
        .expect("writing benchmark output");
    path
}

/// The system allocator, counting live bytes and their high-water mark, so a benchmark can
/// measure the peak memory of one call: `reset_peak()` before, `peak()` after.
pub struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl PeakAlloc {
    /// Starts a new high-water mark at the bytes live now; returns them.
    pub fn reset_peak() -> usize {
        let live = LIVE.load(Ordering::SeqCst);
        PEAK.store(live, Ordering::SeqCst);
        live
    }

    pub fn peak() -> usize {
        PEAK.load(Ordering::SeqCst)
    }

    fn grew(by: usize) {
        let live = LIVE.fetch_add(by, Ordering::SeqCst) + by;
        PEAK.fetch_max(live, Ordering::SeqCst);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

/// Reads `name;dur=X` out of a Server-Timing header.
pub fn server_timing(header: &str, name: &str) -> Option<f64> {
    header
        .split(',')
        .filter_map(|part| part.trim().split_once(";dur="))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_server_timing_entries() {
        let h = "queue;dur=0.5, wasm;dur=12.25, decode;dur=3";
        assert_eq!(super::server_timing(h, "wasm"), Some(12.25));
        assert_eq!(super::server_timing(h, "decode"), Some(3.0));
        assert_eq!(super::server_timing(h, "cpu"), None);
    }
}
