// output_loss — twin of cpu::ops::output_loss (and of cpu::ops::argmax).
// From the logits z (rows × classes): the output non-linearity, each row's loss against its
// one-hot label y, its predicted class, and (when training) dz = ∂(mean loss)/∂z:
//   softmax + ce:   loss = log Σe^z - z_label             dz = (p - y) / rows
//   softmax + mse:  loss = Σ(p - y)²,  g = 2(p - y)        dz = p ⊙ (g - Σ p·g) / rows
//   sigmoid + ce:   loss = Σ softplus(z) - y·z             dz = (p - y) / rows
//   sigmoid + mse:  loss = Σ(p - y)²                       dz = 2(p - y)·p(1 - p) / rows
// One workgroup per batch: each invocation takes every 256th row, then a fixed-order tree
// sums the losses and correct counts (no float atomics, so the result is the same every run)
// into the batch's slot of the metrics buffer.

struct OutputDims {
    classes: u32,
    // 0 softmax, 1 sigmoid
    output: u32,
    // 0 cross-entropy, 1 squared error
    loss: u32,
    // 1 when training: write dz
    with_grad: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(5) var<storage, read> dims: OutputDims;

var<workgroup> partial_loss: array<f32, 256>;
var<workgroup> partial_correct: array<u32, 256>;

fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log(1.0 + exp(-abs(z)));
}

fn one_hot(k: u32, label: u32) -> f32 {
    return select(0.0, 1.0, k == label);
}

// The loss of row r; writes its dz when training. Returns (loss, predicted class).
fn row_loss(r: u32, label: u32, scale: f32) -> vec2<f32> {
    let c = dims.classes;
    let base = r * c;
    // argmax, first index on ties
    var best = 0u;
    for (var k = 1u; k < c; k++) {
        if logits[base + k] > logits[base + best] {
            best = k;
        }
    }
    var loss = 0.0;
    if dims.output == 0u {
        let zmax = logits[base + best];
        var sum = 0.0;
        for (var k = 0u; k < c; k++) {
            sum += exp(logits[base + k] - zmax);
        }
        if dims.loss == 0u {
            loss = log(sum) + zmax - logits[base + label];
            if dims.with_grad == 1u {
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
            if dims.with_grad == 1u {
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
            if dims.loss == 0u {
                loss += softplus(z) - y * z;
                d = p - y;
            } else {
                loss += (p - y) * (p - y);
                d = 2.0 * (p - y) * p * (1.0 - p);
            }
            if dims.with_grad == 1u {
                dz[base + k] = scale * d;
            }
        }
    }
    return vec2<f32>(loss, f32(best));
}

@compute @workgroup_size(256)
fn output_loss(@builtin(local_invocation_index) lid: u32) {
    let scale = 1.0 / f32(batch.rows);
    var loss = 0.0;
    var correct = 0u;
    for (var r = lid; r < batch.rows; r += 256u) {
        let example = order[batch.start + r];
        let label = byte_at(labels[example / 4u], example);
        let result = row_loss(r, label, scale);
        loss += result.x;
        correct += select(0u, 1u, u32(result.y) == label);
    }
    partial_loss[lid] = loss;
    partial_correct[lid] = correct;
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if lid < stride {
            partial_loss[lid] += partial_loss[lid + stride];
            partial_correct[lid] += partial_correct[lid + stride];
        }
    }
    if lid == 0u {
        metrics[2u * batch.slot] = partial_loss[0];
        metrics[2u * batch.slot + 1u] = f32(partial_correct[0]);
    }
}
