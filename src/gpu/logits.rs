//! The logits of a held-out split, read back to the host: the forward pass of each evaluation
//! chunk, as `evaluate` records it, each followed by a copy of its logits into one readback
//! buffer; one submit, one readback. What eval, predict and the confusion matrix use.

use super::{GpuBackend, Part};
use crate::backend::Split;
use crate::error::Result;
use wgpu::BufferUsages as U;

impl GpuBackend {
    /// `Backend::logits`: examples × classes, row-major, without blocking.
    pub async fn logits_async(&mut self, split: Split) -> Result<Vec<f32>> {
        assert!(self.pass.is_none(), "logits are read between epochs");
        let part = Part::HeldOut(split);
        let Some(data) = self.splits.get(part) else {
            return Ok(Vec::new());
        };
        let (batches, batch_size, examples) = (data.plan.batches, data.plan.batch_size, data.plan.examples);
        let classes = self.spec.widths[self.layout.layers.len()] as u64;
        let row_bytes = classes * 4;
        let readback = self.ctx.buffer(
            "logits readback",
            examples as u64 * row_bytes,
            U::MAP_READ | U::COPY_DST,
        )?;
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("logits") });
        for chunk in 0..batches {
            let pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("logits"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            self.pass = Some(pass);
            self.record_batch(part, chunk);
            drop(self.pass.take());
            let start = chunk * batch_size;
            let rows = batch_size.min(examples - start) as u64;
            encoder.copy_buffer_to_buffer(&self.logits, 0, &readback, start as u64 * row_bytes, rows * row_bytes);
        }
        self.ctx.submit(encoder.finish());
        let mut logits: Vec<f32> = self.ctx.map_read_async(&readback, "reading the logits").await?;
        logits.truncate(examples * classes as usize);
        Ok(logits)
    }
}
