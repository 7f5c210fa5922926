//! gpu-mlp: multilayer perceptrons trained on MNIST, on the GPU through wgpu and WGSL compute
//! shaders, with a CPU implementation of the same network as the reference that proves them.
//!
//! The data flows one way: IDX file → [`data::Dataset`] (u8) → batch (f32 in [0,1]) → ops →
//! metrics. [`train::train`] is the training loop, written once over the [`backend::Backend`]
//! and [`backend::BatchOps`] traits that each device implements.

pub mod backend;
#[cfg(feature = "native")]
pub mod bench;
#[cfg(feature = "native")]
pub mod cli;
pub mod cpu;
pub mod data;
pub mod dropout;
pub mod error;
pub mod evaluate;
pub mod footprint;
pub mod gpu;
pub mod init;
pub mod metrics_file;
pub mod model;
pub mod network;
pub mod optim;
#[cfg(feature = "native")]
pub mod plot;
pub mod preprocess;
#[cfg(feature = "native")]
pub mod progress;
pub mod report;
#[cfg(feature = "native")]
pub mod signals;
pub mod train;
