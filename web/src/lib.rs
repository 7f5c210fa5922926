//! gpu-mlp in the browser: the library's GPU backend and WGSL kernels on WebGPU (the page and
//! its exports come in the next commits).
