//! The CPU backend (see the module above): shards, their ops, the update.

use super::ops;
use crate::backend::{
    self, AfterBatch, Backend, BatchOps, EpochMetrics, OptimizerState, Split, SplitMetrics, Workload,
};
use crate::data::{Dataset, Standardization};
use crate::dropout::{Dropout, Mask};
use crate::error::{Error, Result};
use crate::footprint::{shard_count, shard_rows};
use crate::network::{NetworkSpec, ParamLayout};
use crate::optim::{OptimizerKind, StepConstants, UpdateConstants};
use rayon::prelude::*;
use std::sync::Arc;

/// Parameters updated per parallel task.
const UPDATE_CHUNK: usize = 1 << 14;

/// One thread's share of a batch: its activations, deltas and partial gradient.
struct Shard {
    /// `acts[0] = X`, `acts[l+1] = A_l` (the last one holds the logits), `capacity × width` each.
    acts: Vec<Vec<f32>>,
    /// `deltas[l+1] = dZ_l`; `deltas[0]` stays empty (nothing flows back into the data).
    deltas: Vec<Vec<f32>>,
    labels: Vec<u8>,
    grads: Vec<f32>,
    loss_sum: f32,
    correct: u32,
}

impl Shard {
    fn new(widths: &[usize], capacity: usize, params: usize) -> Shard {
        Shard {
            acts: widths.iter().map(|w| vec![0.0; capacity * w]).collect(),
            deltas: widths
                .iter()
                .enumerate()
                .map(|(l, w)| vec![0.0; if l == 0 { 0 } else { capacity * w }])
                .collect(),
            labels: vec![0; capacity],
            grads: vec![0.0; params],
            loss_sum: 0.0,
            correct: 0,
        }
    }
}

/// The ops of [`BatchOps`] on one shard's rows.
struct ShardOps<'s> {
    spec: &'s NetworkSpec,
    layout: &'s ParamLayout,
    params: &'s [f32],
    data: &'s Dataset,
    /// The shard's examples: indices into `data`.
    index: &'s [u32],
    /// 1 / rows of the whole batch: the shard's part of the mean loss's gradient.
    scale: f32,
    /// The shard's first row in the whole batch (the dropout masks are per batch row).
    row0: usize,
    /// In training: the dropout layers and the step whose masks apply; None in evaluation.
    dropout: Option<(Dropout, u32)>,
    standardize: Option<&'s Standardization>,
    shard: &'s mut Shard,
}

impl ShardOps<'_> {
    fn rows(&self) -> usize {
        self.index.len()
    }

    /// The mask of dropout layer `layer` (0: the input, l: hidden layer l's output) in this
    /// training step, if it drops anything.
    fn mask(&self, layer: usize) -> Option<Mask> {
        let (dropout, step) = self.dropout?;
        dropout.mask(layer, step)
    }
}

impl BatchOps for ShardOps<'_> {
    fn gather_batch(&mut self) {
        let (rows, features) = (self.rows(), self.data.features);
        let mask = self.mask(0);
        let x = &mut self.shard.acts[0][..rows * features];
        ops::gather_batch(
            x,
            &mut self.shard.labels[..rows],
            &self.data.images,
            &self.data.labels,
            self.index,
            self.standardize,
        );
        if let Some(mask) = mask {
            ops::dropout_forward(x, features, self.row0, &mask);
        }
    }

    fn dense_forward(&mut self, layer: usize) {
        let rows = self.rows();
        let shape = self.layout.layers[layer];
        let mask = self.mask(layer + 1);
        let (inputs, outputs) = self.shard.acts.split_at_mut(layer + 1);
        let inp = &inputs[layer][..rows * shape.inputs];
        let out = &mut outputs[0][..rows * shape.outputs];
        ops::matmul_forward(out, inp, shape.weights(self.params), shape.bias(self.params), rows);
        if layer + 1 < self.layout.layers.len() {
            ops::activation_forward(self.spec.activation, out);
            if let Some(mask) = mask {
                ops::dropout_forward(out, shape.outputs, self.row0, &mask);
            }
        }
    }

    fn output_loss(&mut self, with_grad: bool) {
        let rows = self.rows();
        let last = self.layout.layers.len();
        let classes = self.spec.widths[last];
        let shard = &mut *self.shard;
        let logits = shard.acts[last][..rows * classes].chunks_exact(classes);
        let mut grads = shard.deltas[last][..rows * classes].chunks_exact_mut(classes);
        let (mut loss_sum, mut correct) = (0.0, 0);
        for (z, &label) in logits.zip(&shard.labels[..rows]) {
            let grad = if with_grad { grads.next() } else { None };
            let (loss, predicted) =
                ops::output_loss(self.spec.output, self.spec.loss, z, label as usize, self.scale, grad);
            loss_sum += loss;
            correct += (predicted == label as usize) as u32;
        }
        shard.loss_sum = loss_sum;
        shard.correct = correct;
    }

    fn dense_backward_weights(&mut self, layer: usize) {
        let rows = self.rows();
        let shape = self.layout.layers[layer];
        let (weights, biases) = self.shard.grads.split_at_mut(self.layout.weight_count);
        let dweight = &mut weights[shape.weight_offset..shape.weight_offset + shape.weight_len()];
        let dbias = &mut biases[shape.bias_offset - self.layout.weight_count..][..shape.outputs];
        let dout = &self.shard.deltas[layer + 1][..rows * shape.outputs];
        let inp = &self.shard.acts[layer][..rows * shape.inputs];
        ops::matmul_backward_weights(dweight, dbias, dout, inp, rows);
    }

    fn dense_backward_input(&mut self, layer: usize) {
        let rows = self.rows();
        let shape = self.layout.layers[layer];
        let (before, after) = self.shard.deltas.split_at_mut(layer + 1);
        let dinp = &mut before[layer][..rows * shape.inputs];
        let dout = &after[0][..rows * shape.outputs];
        ops::matmul_backward_input(dinp, dout, shape.weights(self.params), rows, shape.outputs);
        // acts[layer] is hidden layer `layer`'s output: dropout layer `layer`.
        let a = &self.shard.acts[layer][..rows * shape.inputs];
        match self.dropout.and_then(|(dropout, step)| dropout.mask(layer, step)) {
            Some(mask) => {
                ops::dropout_activation_backward(self.spec.activation, dinp, a, shape.inputs, self.row0, &mask)
            }
            None => ops::activation_backward(self.spec.activation, dinp, a),
        }
    }
}

/// The CPU trainer: parameters and every workspace in host memory.
pub struct CpuBackend<'a> {
    work: Workload<'a>,
    layout: ParamLayout,
    params: Vec<f32>,
    shards: Vec<Shard>,
    /// Shared so an epoch can run inside it while the backend is borrowed (see `train_batches`).
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    permutation: Vec<u32>,
    /// The constants of each step of the epoch (`steps[batch]`).
    steps: Vec<StepConstants>,
    /// 0, 1, 2, …: the evaluation order.
    identity: Vec<u32>,
    state: StateBuffers,
    /// Steps taken so far (t of the last step), for a checkpoint.
    steps_taken: u64,
    metrics: EpochMetrics,
}

/// The optimiser's state buffers (flat, the parameters' layout), chunked like the parameters for
/// the parallel update. A rule with fewer than two buffers gets stand-ins of one element per
/// chunk, never read, so that every update chunk zips with two slices whatever the rule.
struct StateBuffers {
    buffers: [Vec<f32>; 2],
    used: usize,
}

impl StateBuffers {
    fn new(used: usize, total: usize) -> StateBuffers {
        let chunks = total.div_ceil(UPDATE_CHUNK);
        let buffer = |i: usize| vec![0.0; if i < used { total } else { chunks }];
        StateBuffers {
            buffers: [buffer(0), buffer(1)],
            used,
        }
    }

    /// Elements of buffer `i` that go with one update chunk.
    fn chunk(&self, i: usize) -> usize {
        if i < self.used {
            UPDATE_CHUNK
        } else {
            1
        }
    }
}

/// One rule's update of one chunk of the parameters (`first` is its global index).
fn update_chunk(
    kind: OptimizerKind,
    k: &UpdateConstants,
    params: &mut [f32],
    grads: &[f32],
    [s0, s1]: [&mut [f32]; 2],
    first: usize,
) {
    match kind {
        OptimizerKind::Sgd => ops::sgd_update(params, grads, k.lr, k.l2, k.weight_count as usize, first),
        OptimizerKind::Momentum => ops::momentum_update(params, grads, s0, k, first),
        OptimizerKind::Rmsprop => ops::rmsprop_update(params, grads, s0, k, first),
        OptimizerKind::Adam => ops::adam_update(params, grads, s0, s1, k, first),
        OptimizerKind::Adamw => ops::adamw_update(params, grads, s0, s1, k, first),
    }
}

impl<'a> CpuBackend<'a> {
    /// A backend for `work`, starting from `params`, running on `threads` threads.
    pub fn new(work: Workload<'a>, params: Vec<f32>, threads: usize) -> Result<CpuBackend<'a>> {
        let layout = work.spec.layout();
        assert_eq!(
            params.len(),
            layout.total,
            "parameter buffer does not match the network"
        );
        let threads = threads.max(1);
        // Sized as crate::footprint estimates them: the shards of the largest batch.
        let capacity = shard_rows(work.max_rows(), threads);
        let shards = (0..shard_count(work.max_rows(), threads))
            .map(|_| Shard::new(&work.spec.widths, capacity, layout.total))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gpu-mlp-cpu-{i}"))
            .build()
            .map_err(|e| Error::Threads {
                threads,
                message: e.to_string(),
            })?;
        let eval_len = [work.validation, work.test]
            .iter()
            .flatten()
            .map(|d| d.len())
            .max()
            .unwrap_or(0);
        let state = StateBuffers::new(work.optimizer.state_buffers(), layout.total);
        Ok(CpuBackend {
            work,
            layout,
            params,
            shards,
            pool: Arc::new(pool),
            threads,
            permutation: Vec::with_capacity(work.train.len()),
            steps: Vec::new(),
            identity: (0..eval_len as u32).collect(),
            state,
            steps_taken: 0,
            metrics: EpochMetrics::default(),
        })
    }

    /// Forward of `index`'s examples of `data` and, when `train` holds the step's constants,
    /// backward and the optimiser's update. Returns the summed loss and correct count.
    fn run_batch(&mut self, data: &Dataset, index: &[u32], train: Option<StepConstants>) -> (f32, u32) {
        let rows = index.len();
        let used = shard_count(rows, self.threads);
        let per_shard = rows.div_ceil(used);
        let (spec, layout, work) = (self.work.spec, &self.layout, &self.work);
        let scale = 1.0 / rows as f32;
        let (params, shards, state) = (&mut self.params, &mut self.shards[..used], &mut self.state);
        let threaded = used > 1 || (train.is_some() && params.len() > 4 * UPDATE_CHUNK);
        let dropout = train.map(|step| (work.dropout, step.step));
        let mut step = move || {
            // 1. Every shard runs the forward (and backward) pass on its own rows.
            let run = |(s, (shard, index)): (usize, (&mut Shard, &[u32]))| {
                let mut ops = ShardOps {
                    spec,
                    layout,
                    params,
                    data,
                    index,
                    scale,
                    row0: s * per_shard,
                    dropout,
                    standardize: work.standardize,
                    shard,
                };
                if train.is_some() {
                    backend::forward_backward(&mut ops, layout.layers.len());
                } else {
                    backend::forward(&mut ops, layout.layers.len());
                }
            };
            if used == 1 {
                run((0, (&mut shards[0], index)));
            } else {
                shards
                    .par_iter_mut()
                    .zip(index.par_chunks(per_shard))
                    .enumerate()
                    .for_each(run);
            }
            let Some(step) = train else { return };
            // 2. Sum the shards' partial gradients into shard 0's, in order, and update.
            let k = work.optimizer.update_constants(&step, work.l2, layout.weight_count);
            let kind = work.optimizer.kind;
            let (first, others) = shards.split_at_mut(1);
            type Chunk<'c> = (usize, (((&'c mut [f32], &'c mut [f32]), &'c mut [f32]), &'c mut [f32]));
            let update = |(c, (((params, grads), s0), s1)): Chunk| {
                let start = c * UPDATE_CHUNK;
                for other in others.iter() {
                    ops::add_assign(grads, &other.grads[start..start + grads.len()]);
                }
                update_chunk(kind, &k, params, grads, [s0, s1], start);
            };
            let sizes = [state.chunk(0), state.chunk(1)];
            let [s0, s1] = &mut state.buffers;
            if threaded {
                params
                    .par_chunks_mut(UPDATE_CHUNK)
                    .zip(first[0].grads.par_chunks_mut(UPDATE_CHUNK))
                    .zip(s0.par_chunks_mut(sizes[0]))
                    .zip(s1.par_chunks_mut(sizes[1]))
                    .enumerate()
                    .for_each(update);
            } else {
                params
                    .chunks_mut(UPDATE_CHUNK)
                    .zip(first[0].grads.chunks_mut(UPDATE_CHUNK))
                    .zip(s0.chunks_mut(sizes[0]))
                    .zip(s1.chunks_mut(sizes[1]))
                    .enumerate()
                    .for_each(update);
            }
        };
        // One hand-over to the thread pool per batch; a single-shard batch stays on this thread.
        if threaded {
            self.pool.install(step);
        } else {
            step();
        }
        let shards = &self.shards[..used];
        shards
            .iter()
            .fold((0.0, 0), |(loss, correct), s| (loss + s.loss_sum, correct + s.correct))
    }

    fn split(&self, split: Split) -> Option<&'a Dataset> {
        match split {
            Split::Validation => self.work.validation,
            Split::Test => self.work.test,
        }
    }
}

impl Backend for CpuBackend<'_> {
    fn device(&self) -> &'static str {
        "cpu"
    }

    fn adapter(&self) -> String {
        format!(
            "cpu ({} thread{})",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn begin_epoch(&mut self, permutation: &[u32], steps: &[StepConstants]) -> Result<()> {
        self.permutation.clear();
        self.permutation.extend_from_slice(permutation);
        self.steps.clear();
        self.steps.extend_from_slice(steps);
        let batches = self.work.batches();
        self.metrics = EpochMetrics {
            batch_loss: Vec::with_capacity(batches),
            batch_correct: Vec::with_capacity(batches),
            ..EpochMetrics::default()
        };
        Ok(())
    }

    fn train_batch(&mut self, batch: usize) -> Result<()> {
        let size = self.work.batch_size;
        let start = batch * size;
        let end = (start + size).min(self.permutation.len());
        let index = std::mem::take(&mut self.permutation);
        let step = self.steps[batch];
        let (loss, correct) = self.run_batch(self.work.train, &index[start..end], Some(step));
        self.steps_taken = step.step as u64 + 1;
        self.permutation = index;
        self.metrics.batch_loss.push(loss);
        self.metrics.batch_correct.push(correct);
        Ok(())
    }

    /// The whole epoch's steps run inside the thread pool: the steps' own hand-overs to the pool
    /// then cost nothing, and the threads stay awake between steps.
    fn train_batches(&mut self, batches: std::ops::Range<usize>, after_batch: &mut AfterBatch) -> Result<usize> {
        let pool = Arc::clone(&self.pool);
        pool.install(|| backend::step_batches(self, batches, after_batch))
    }

    fn evaluate(&mut self, split: Split) -> Result<()> {
        let Some(data) = self.split(split) else { return Ok(()) };
        let identity = std::mem::take(&mut self.identity);
        let mut result = SplitMetrics {
            examples: data.len() as u64,
            ..SplitMetrics::default()
        };
        for chunk in identity[..data.len()].chunks(self.work.eval_rows()) {
            let (loss, correct) = self.run_batch(data, chunk, None);
            result.loss_sum += loss as f64;
            result.correct += correct as u64;
        }
        self.identity = identity;
        match split {
            Split::Validation => self.metrics.validation = Some(result),
            Split::Test => self.metrics.test = Some(result),
        }
        Ok(())
    }

    fn end_epoch(&mut self) -> Result<EpochMetrics> {
        Ok(std::mem::take(&mut self.metrics))
    }

    fn parameters(&mut self) -> Result<Vec<f32>> {
        Ok(self.params.clone())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let optimizer = &self.work.optimizer;
        let names = optimizer.state_names();
        Ok(OptimizerState {
            name: optimizer.kind.to_string(),
            // The bias-corrected rules count steps; SGD keeps nothing.
            step: if names.is_empty() { 0 } else { self.steps_taken },
            buffers: names
                .iter()
                .zip(&self.state.buffers)
                .map(|(name, buffer)| (name.to_string(), buffer.clone()))
                .collect(),
        })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.check_fits(&self.work.optimizer, self.layout.total)?;
        for ((_, values), buffer) in state.buffers.iter().zip(self.state.buffers.iter_mut()) {
            buffer.copy_from_slice(values);
        }
        self.steps_taken = state.step;
        Ok(())
    }

    /// The evaluation's forward pass, chunk by chunk, gathering each shard's logits in order.
    fn logits(&mut self, split: Split) -> Result<Vec<f32>> {
        let Some(data) = self.split(split) else {
            return Ok(Vec::new());
        };
        let last = self.layout.layers.len();
        let classes = self.work.spec.widths[last];
        let mut logits = Vec::with_capacity(data.len() * classes);
        let identity = std::mem::take(&mut self.identity);
        for chunk in identity[..data.len()].chunks(self.work.eval_rows()) {
            self.run_batch(data, chunk, None);
            // run_batch cut the chunk into these shards.
            let per_shard = chunk.len().div_ceil(shard_count(chunk.len(), self.threads));
            for (shard, rows) in self.shards.iter().zip(chunk.chunks(per_shard)) {
                logits.extend_from_slice(&shard.acts[last][..rows.len() * classes]);
            }
        }
        self.identity = identity;
        Ok(logits)
    }
}

/// The mean loss of `index`'s examples of `data` under `params`, and its gradient: one
/// single-threaded forward and backward pass. For gradient checks and parity tests.
pub fn loss_and_gradient(spec: &NetworkSpec, params: &[f32], data: &Dataset, index: &[u32]) -> (f32, Vec<f32>) {
    loss_and_gradient_with(spec, params, data, index, None)
}

/// [`loss_and_gradient`] with the dropout masks of training step `step`: with the masks fixed,
/// the loss is a smooth function of the parameters, so its gradient can be checked too.
pub fn loss_and_gradient_with(
    spec: &NetworkSpec,
    params: &[f32],
    data: &Dataset,
    index: &[u32],
    dropout: Option<(Dropout, u32)>,
) -> (f32, Vec<f32>) {
    let layout = spec.layout();
    let mut shard = Shard::new(&spec.widths, index.len(), layout.total);
    let scale = 1.0 / index.len() as f32;
    let mut ops = ShardOps {
        spec,
        layout: &layout,
        params,
        data,
        index,
        scale,
        row0: 0,
        dropout,
        standardize: None,
        shard: &mut shard,
    };
    backend::forward_backward(&mut ops, layout.layers.len());
    (shard.loss_sum / index.len() as f32, shard.grads)
}
