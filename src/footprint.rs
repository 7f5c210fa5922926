//! What a run will allocate, computed before anything is: every large buffer the chosen backend
//! asks for, with checked arithmetic, held against the memory the machine can give. A run that
//! cannot fit is refused up front, with the amount needed, the amount available and what to
//! change, instead of aborting halfway with "memory allocation failed".
//!
//! The CPU backend sizes its buffers with the same functions ([`shard_rows`], [`shard_count`]),
//! so the estimate and the allocations cannot drift apart.

use crate::backend::Workload;
use crate::error::{ConfigError, WidthsFlag};

/// Fewer rows than this per shard and the CPU threads cost more than they save.
pub const MIN_ROWS_PER_SHARD: usize = 16;
/// The CPU backend never cuts a batch into more shards than this.
pub const MAX_SHARDS: usize = 64;

/// How many shards the CPU backend cuts a batch of `rows` into on `threads` threads.
pub fn shard_count(rows: usize, threads: usize) -> usize {
    rows.div_ceil(MIN_ROWS_PER_SHARD).clamp(1, threads.clamp(1, MAX_SHARDS))
}

/// The most rows one shard ever holds, for batches of up to `max_rows` rows.
pub fn shard_rows(max_rows: usize, threads: usize) -> usize {
    // Shards of a smaller batch can be larger than those of a bigger one (fewer shards), so
    // take the largest over every batch size a run can see.
    (1..=max_rows.max(1))
        .map(|rows| rows.div_ceil(shard_count(rows, threads)))
        .max()
        .unwrap_or(1)
}

/// One large allocation: what it is, and its size in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub what: &'static str,
    pub bytes: u64,
    /// What to change to make it smaller.
    pub fix: String,
}

/// Every large allocation of a run on one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Footprint {
    pub items: Vec<Item>,
}

/// `a × b × …` in u64, or None when it overflows.
fn product(factors: &[usize]) -> Option<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f as u64))
}

impl Footprint {
    fn add(&mut self, what: &'static str, fix: impl Into<String>, factors: &[usize]) -> Result<(), ConfigError> {
        let bytes = product(factors).ok_or(ConfigError::Unaddressable { what })?;
        self.items.push(Item {
            what,
            bytes,
            fix: fix.into(),
        });
        Ok(())
    }

    /// Bytes of every item together (saturating: a sum past u64 is as good as infinite).
    pub fn total(&self) -> u64 {
        self.items.iter().fold(0u64, |sum, item| sum.saturating_add(item.bytes))
    }

    /// The host memory the CPU backend allocates for `work` on `threads` threads, beside the
    /// data already loaded; `widths` names the flag the layer widths came from.
    pub fn cpu(
        work: &Workload,
        widths: WidthsFlag,
        threads: usize,
        optimizer_buffers: usize,
    ) -> Result<Footprint, ConfigError> {
        let params = work
            .spec
            .parameter_count()
            .ok_or(ConfigError::Unaddressable { what: "parameters" })?;
        let shards = shard_count(work.max_rows(), threads);
        let rows = shard_rows(work.max_rows(), threads);
        let width_sum: usize = work.spec.widths.iter().sum();
        let eval = [work.validation, work.test]
            .iter()
            .flatten()
            .map(|d| d.len())
            .max()
            .unwrap_or(0);
        let mut f = Footprint::default();
        f.add("parameters", format!("{widths}"), &[params, 4])?;
        f.add("optimiser state", format!("{widths}"), &[params, optimizer_buffers, 4])?;
        f.add(
            "per-thread gradients",
            format!("{widths} or --threads"),
            &[params, shards, 4],
        )?;
        f.add(
            "activations and deltas",
            format!("--batch-size or {widths}"),
            &[width_sum, rows, shards, 2, 4],
        )?;
        f.add("example orders", "data set", &[work.train.len() + eval, 3, 4])?;
        f.add("per-batch records", "--batch-size", &[work.batches(), 8])?;
        Ok(f)
    }

    /// What the GPU backend allocates for `work`: its device buffers (on a software adapter
    /// they are host memory too) and the host copies made while uploading.
    pub fn gpu(work: &Workload, widths: WidthsFlag, optimizer_buffers: usize) -> Result<Footprint, ConfigError> {
        let params = work
            .spec
            .parameter_count()
            .ok_or(ConfigError::Unaddressable { what: "parameters" })?;
        let width_sum: usize = work.spec.widths.iter().sum();
        let splits = [Some(work.train), work.validation, work.test];
        let examples: usize = splits.iter().flatten().map(|d| d.len()).sum();
        let pixels: usize = splits.iter().flatten().map(|d| d.images.len()).sum();
        let entries = work.batches() + examples.div_ceil(work.eval_rows());
        let mut f = Footprint::default();
        f.add("parameters and gradients", format!("{widths}"), &[params, 2, 4])?;
        f.add("optimiser state", format!("{widths}"), &[params, optimizer_buffers, 4])?;
        f.add(
            "activations and deltas",
            format!("--batch-size or {widths}"),
            &[width_sum, work.max_rows(), 2, 4],
        )?;
        // Uploaded packed, after a packed host copy.
        f.add("images", "data set", &[pixels, 2])?;
        f.add("labels and example orders", "data set", &[examples, 3, 4])?;
        f.add("batch table and metrics", "--batch-size", &[entries, 256 + 16])?;
        Ok(f)
    }

    /// Refuses the run when it needs more than `available` bytes, naming the amounts and the
    /// largest item's flag.
    pub fn check(&self, available: Memory) -> Result<(), ConfigError> {
        let needed = self.total();
        if needed <= available.bytes {
            return Ok(());
        }
        let largest = self.items.iter().max_by_key(|item| item.bytes).expect("items");
        Err(ConfigError::OutOfMemory {
            needed,
            available: available.bytes,
            limited_by: available.limited_by,
            largest: largest.what,
            largest_bytes: largest.bytes,
            fix: largest.fix.clone(),
        })
    }
}

/// Memory the process can still take, and what limits it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    pub bytes: u64,
    pub limited_by: &'static str,
}

impl Memory {
    /// What this process can allocate now (native only: the web has no such query): the machine's available memory, or less where a
    /// cgroup or an address-space limit (`ulimit -v`, `prlimit --as`) says so.
    #[cfg(feature = "native")]
    pub fn available() -> Memory {
        use sysinfo::{MemoryRefreshKind, RefreshKind, System};
        let system =
            System::new_with_specifics(RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()));
        let mut best = Memory {
            bytes: system.available_memory(),
            limited_by: "available memory",
        };
        if let Some(cgroup) = system.cgroup_limits() {
            if cgroup.free_memory < best.bytes {
                best = Memory {
                    bytes: cgroup.free_memory,
                    limited_by: "the cgroup's memory limit",
                };
            }
        }
        if let Some(left) = address_space_left() {
            if left < best.bytes {
                best = Memory {
                    bytes: left,
                    limited_by: "the address-space limit (ulimit -v)",
                };
            }
        }
        best
    }
}

/// Bytes of address space left under RLIMIT_AS, if one is set.
#[cfg(feature = "native")]
fn address_space_left() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    // The first field of /proc/self/statm is the virtual size in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(limit.rlim_cur.saturating_sub(pages.saturating_mul(page)))
}

/// "1.5 GB", "312 MB", "20 kB": a byte count for messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_never_exceed_the_threads_or_the_cap() {
        assert_eq!(shard_count(100, 2), 2);
        assert_eq!(shard_count(100, 1000), 7);
        assert_eq!(shard_count(1_000_000, 1000), MAX_SHARDS);
        assert_eq!(shard_count(1, 8), 1);
        // 100 rows on 8 threads: 7 shards of at most 15 rows; but 16 rows make 1 shard of 16.
        assert_eq!(shard_rows(100, 8), 16);
    }

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(999), "999 bytes");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
        assert_eq!(human_bytes(313_600_000_000), "313.6 GB");
    }

    #[test]
    fn a_product_past_u64_is_unaddressable() {
        assert_eq!(product(&[1 << 40, 1 << 30]), None);
        assert_eq!(product(&[784, 100_000_000, 4]), Some(313_600_000_000));
    }
}
