//! Engine configuration and the epoch clock that enforces deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeConfig;

/// One epoch tick. Deadlines are enforced to within one tick; epoch checks cost a few
/// percent, far less than fuel metering.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each linear memory kept resident between instances (per pooled memory slot
/// that has held a memory: at most this times the pool's instances, e.g. 1.5 GiB for the
/// 96 instances of a 32-core host, in practice the pages resizes actually touch).
const KEEP_RESIDENT: usize = 16 << 20;

pub fn build(config: &RuntimeConfig) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // Each component instance holds a handful of core instances (the adapter's included).
    let instances = config.max_instances.max(4);
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 4)
        .total_tables(instances * 8)
        .total_stacks(instances)
        .max_memory_size(config.memory_limit_bytes)
        // The pages an invocation dirtied are zeroed in place for the next one instead of
        // being handed back to the kernel: a fresh instance then takes no page faults for
        // the first megabytes it uses (a 300 px resize touches about 4 MiB).
        .linear_memory_keep_resident(KEEP_RESIDENT);

    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        // Pooling + copy-on-write memory images: no mmap/munmap per request, which is
        // what caps throughput on many cores.
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true);
    Ok(Engine::new(&c)?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
