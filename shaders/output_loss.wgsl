// output_loss — twin of cpu::ops::output_loss (and of cpu::ops::argmax).
// From the logits z (rows × classes): the output non-linearity, each row's loss against its
// one-hot label y, its predicted class, and (when training) dz = ∂(mean loss)/∂z:
//   softmax + ce:   loss = log Σe^z - z_label             dz = (p - y) / rows
//   softmax + mse:  loss = Σ(p - y)²,  g = 2(p - y)        dz = p ⊙ (g - Σ p·g) / rows
//   sigmoid + ce:   loss = Σ softplus(z) - y·z             dz = (p - y) / rows
//   sigmoid + mse:  loss = Σ(p - y)²                       dz = 2(p - y)·p(1 - p) / rows
// One workgroup per batch: each invocation takes every OUTPUT_LOSS_WORKGROUP-th row, then a
// fixed-order tree sums the losses and correct counts (no float atomics, so the result is the
// same every run) into the batch's slot of the metrics buffer: METRICS_PER_BATCH floats, the
// loss sum then the correct count.
// Bindings (declared from `OutputLossBindings` in src/gpu/kernels/output_loss.rs):
// logits, labels, order, dz (read_write), metrics (read_write), params.

// `OutputLossParams` in src/gpu/kernels/output_loss.rs.
struct OutputLossParams {
    classes: u32,
    // OUTPUT_* code
    output: u32,
    // LOSS_* code
    loss: u32,
    // 1 when training: write dz
    with_grad: u32,
}

// The tree below halves the workgroup at each step.
const_assert 0u == (OUTPUT_LOSS_WORKGROUP & (OUTPUT_LOSS_WORKGROUP - 1u));

var<workgroup> partial_loss: array<f32, OUTPUT_LOSS_WORKGROUP>;
var<workgroup> partial_correct: array<u32, OUTPUT_LOSS_WORKGROUP>;

fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log(1.0 + exp(-abs(z)));
}

fn one_hot(k: u32, label: u32) -> f32 {
    return select(0.0, 1.0, k == label);
}

// The loss of row r; writes its dz when training. Returns (loss, predicted class).
fn row_loss(r: u32, label: u32, scale: f32) -> vec2<f32> {
    let c = params.classes;
    let base = r * c;
    // argmax, first index on ties
    var best = 0u;
    for (var k = 1u; k < c; k++) {
        if logits[base + k] > logits[base + best] {
            best = k;
        }
    }
    var loss = 0.0;
    if params.output == OUTPUT_SOFTMAX {
        let zmax = logits[base + best];
        var sum = 0.0;
        for (var k = 0u; k < c; k++) {
            sum += exp(logits[base + k] - zmax);
        }
        if params.loss == LOSS_CE {
            loss = log(sum) + zmax - logits[base + label];
            if params.with_grad == 1u {
                for (var k = 0u; k < c; k++) {
                    let p = exp(logits[base + k] - zmax) / sum;
                    dz[base + k] = scale * (p - one_hot(k, label));
                }
            }
        } else {
            var dot = 0.0;
            for (var k = 0u; k < c; k++) {
                let p = exp(logits[base + k] - zmax) / sum;
                let e = p - one_hot(k, label);
                loss += e * e;
                dot += p * 2.0 * e;
            }
            if params.with_grad == 1u {
                for (var k = 0u; k < c; k++) {
                    let p = exp(logits[base + k] - zmax) / sum;
                    dz[base + k] = scale * p * (2.0 * (p - one_hot(k, label)) - dot);
                }
            }
        }
    } else {
        for (var k = 0u; k < c; k++) {
            let z = logits[base + k];
            let p = sigmoid(z);
            let y = one_hot(k, label);
            var d: f32;
            if params.loss == LOSS_CE {
                loss += softplus(z) - y * z;
                d = p - y;
            } else {
                loss += (p - y) * (p - y);
                d = 2.0 * (p - y) * p * (1.0 - p);
            }
            if params.with_grad == 1u {
                dz[base + k] = scale * d;
            }
        }
    }
    return vec2<f32>(loss, f32(best));
}

@compute @workgroup_size(OUTPUT_LOSS_WORKGROUP)
fn output_loss(@builtin(local_invocation_index) lid: u32) {
    let scale = 1.0 / f32(batch.rows);
    var loss = 0.0;
    var correct = 0u;
    for (var r = lid; r < batch.rows; r += OUTPUT_LOSS_WORKGROUP) {
        let example = order[batch.start + r];
        let label = byte_at(labels[example / 4u], example);
        let result = row_loss(r, label, scale);
        loss += result.x;
        correct += select(0u, 1u, u32(result.y) == label);
    }
    partial_loss[lid] = loss;
    partial_correct[lid] = correct;
    for (var stride = OUTPUT_LOSS_WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if lid < stride {
            partial_loss[lid] += partial_loss[lid + stride];
            partial_correct[lid] += partial_correct[lid + stride];
        }
    }
    if lid == 0u {
        metrics[METRICS_PER_BATCH * batch.metrics_slot] = partial_loss[0];
        metrics[METRICS_PER_BATCH * batch.metrics_slot + 1u] = f32(partial_correct[0]);
    }
}
