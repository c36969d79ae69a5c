//! The wasmtime configuration of skiff's engine.

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Instances (core and component), memories, tables and async stacks a node's pool holds at once.
pub const NODE_POOL_SLOTS: u32 = 1000;

/// Epoch interruption (CPU share, yielding), and the pooling instance allocator: instances, memories and
/// fiber stacks are reused from preallocated slots instead of an mmap/munmap each (hello-http under wrk on
/// a busy 2-core box, debug build: ~5.2k req/s pooled against ~3.3k on demand). `slots` of each; they are virtual
/// address space (a memory slot reserves 4 GiB + guard: one engine reserves ~4 TiB of the 128 TiB user
/// space, so keep one engine per process), committed only as used. Each memory still grows to 4 GiB (the
/// wasm32 maximum); `RunSpec::memory_limit` caps it lower. When every slot is in use, instantiation fails
/// (a run returns `EngineError::Instantiate`, a request gets a 500).
pub(super) fn config(slots: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_component_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
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
    config.epoch_interruption(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}
