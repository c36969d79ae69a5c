//! The wasmtime configuration of skiff's engine, and the size of its pooling allocator.

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The pods a node engine made with [`super::WasmEngine::new`] has room for: the node agent's default
/// `--max-pods`.
pub const DEFAULT_PODS: u32 = 1100;

/// What one running guest of the largest supported kind holds of the pool at once: a WASI preview 2
/// command component as Rust's `wasm32-wasip2` target links it. Measured with `tcp-echo` (a std
/// `TcpListener` server): three core instances (its module and wit-component's shim modules), two
/// tables, one linear memory, one async stack (budgeting one table each, a pool for N of them fails
/// the N-th). One core instance more is budgeted for a guest linked with one more module (they
/// are only counted, not reserved). A preview 1 module needs one of each; an HTTP component holds its
/// instance only while a request runs. `tcp_echo_guests_fill_a_pool_for_that_many` checks this.
pub const LARGEST_GUEST: Pool = Pool { component_instances: 1, core_instances: 4, memories: 1, tables: 2, stacks: 1 };

/// Guests in flight beyond a node's pods: HTTP requests (each instantiates its component for its
/// duration; readiness probes are requests too) and containers that are stopping while their
/// replacements start.
pub const IN_FLIGHT_GUESTS: u32 = 256;

/// How many instances (component and core), memories, tables and async stacks the engine's pool holds
/// at once. Instances are only counted; each memory slot reserves 4 GiB + guard of virtual address
/// space, each table slot its maximum elements, each stack slot its size: committed only as used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub component_instances: u32,
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    pub stacks: u32,
}

impl Pool {
    /// Room for `pods` running guests of the largest supported kind ([`LARGEST_GUEST`]) at once, plus
    /// [`IN_FLIGHT_GUESTS`] more: a node that advertises `pods` pods makes its engine with this, so that
    /// its capacity and the engine's limits agree.
    pub fn for_pods(pods: u32) -> Self {
        Self::for_guests(pods.saturating_add(IN_FLIGHT_GUESTS))
    }

    /// Room for exactly `guests` of the largest supported kind.
    pub fn for_guests(guests: u32) -> Self {
        let g = LARGEST_GUEST;
        Pool {
            component_instances: g.component_instances.saturating_mul(guests),
            core_instances: g.core_instances.saturating_mul(guests),
            memories: g.memories.saturating_mul(guests),
            tables: g.tables.saturating_mul(guests),
            stacks: g.stacks.saturating_mul(guests),
        }
    }

    /// `slots` of everything (the shim's per-pod engine).
    pub fn uniform(slots: u32) -> Self {
        Pool { component_instances: slots, core_instances: slots, memories: slots, tables: slots, stacks: slots }
    }

    /// How many guests of the largest supported kind fit at once.
    pub fn guests(&self) -> u32 {
        let g = LARGEST_GUEST;
        [
            self.component_instances / g.component_instances,
            self.core_instances / g.core_instances,
            self.memories / g.memories,
            self.tables / g.tables,
            self.stacks / g.stacks,
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
    }
}

/// Epoch interruption (CPU share, yielding), and the pooling instance allocator: instances, memories and
/// fiber stacks are reused from preallocated slots instead of an mmap/munmap each (hello-http under wrk on
/// a busy 2-core box, debug build: ~5.2k req/s pooled against ~3.3k on demand), sized by `pool`. Memory
/// slots are virtual address space (4 GiB + guard each: a node engine for 1,100 pods reserves about 5.3
/// TiB of the 128 TiB user space, so keep one engine per process), committed only as used. Each memory still
/// grows to 4 GiB (the wasm32 maximum); `RunSpec::memory_limit` caps it lower. When a kind of slot is all
/// in use, instantiation fails (a run returns `EngineError::Instantiate`, a request gets a 500).
pub(super) fn config(pool: Pool) -> Config {
    let mut limits = PoolingAllocationConfig::new();
    limits
        .total_core_instances(pool.core_instances)
        .total_component_instances(pool.component_instances)
        .total_memories(pool.memories)
        .total_tables(pool.tables)
        .total_stacks(pool.stacks)
        // Room for big guests (many functions, globals, tables, memories).
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .max_memories_per_module(16)
        .max_tables_per_module(16)
        .table_elements(100_000)
        .max_memory_size(1 << 32)
        // Decommit freed memories fully (memset of resident pages measured slower), in batches of madvise.
        .linear_memory_keep_resident(0)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(16);
    let mut config = Config::new();
    config.epoch_interruption(true).allocation_strategy(InstanceAllocationStrategy::Pooling(limits));
    // WASI 0.3 components: async exports and imports, streams and futures of the component model.
    config.wasm_component_model_async(true);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_for_n_pods_holds_n_of_the_largest_guests_and_the_requests_in_flight() {
        for pods in [0, 1, 3, 110, 249, 1000, 1100, 5000] {
            let pool = Pool::for_pods(pods);
            assert_eq!(pool.guests(), pods + IN_FLIGHT_GUESTS, "{pods} pods: {pool:?}");
            assert!(pool.core_instances >= 3 * pods, "a p2 command takes three core instances or more");
        }
        assert_eq!(Pool::for_guests(7).guests(), 7);
        assert_eq!(Pool::uniform(128).guests(), 32, "128 core instances at four a guest");
        assert_eq!(Pool::for_pods(u32::MAX).guests(), u32::MAX / LARGEST_GUEST.core_instances);
    }
}
