//! The CPU backend: the reference every GPU result is checked against, and a fast trainer in its
//! own right.
//!
//! Parallelism is by data: a batch's rows are cut into contiguous shards, one per thread. Each
//! shard runs the whole forward and backward pass on its rows ([`crate::backend::forward_backward`])
//! into its own partial gradient; the update then sums the shards' gradients in a fixed order.
//! So results depend on the seed and the thread count only, never on timing. Every buffer is
//! allocated up front: a training step allocates nothing.

pub mod ops;

// The backend runs its shards on rayon's threads: native only (the web page trains on the GPU
// and predicts with `ops` on one row).
#[cfg(feature = "native")]
mod backend;
#[cfg(feature = "native")]
pub use backend::*;
