#!/usr/bin/env python3
"""Load a gpu-mlp model file with numpy and run it on the MNIST test set.

A gpu-mlp model is a plain safetensors file: layers.{i}.weight [outputs, inputs] and
layers.{i}.bias [outputs], float32, as PyTorch's nn.Linear stores them, and a metadata map that
says how to use them (widths, activation, output, loss, input_divisor). This script needs
nothing of gpu-mlp: it reads the IDX test set itself, scales the pixels as the metadata says,
runs the forward pass in numpy and prints the accuracy, which equals `gpu-mlp eval`'s.

    python3 -m pip install numpy safetensors
    python3 scripts/load_model.py model.safetensors [--data-dir data/mnist] [--json]

For a file without gpu-mlp's metadata (saved from PyTorch), pass --activation.
"""

import argparse
import gzip
import json
import os
import sys

try:
    import numpy as np
    from safetensors import safe_open
except ImportError as error:
    sys.exit(
        f"load_model.py needs numpy and safetensors ({error}): python3 -m pip install numpy safetensors"
    )

ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, np.float32(0)),
    "sigmoid": lambda z: np.float32(1) / (np.float32(1) + np.exp(-z)),
    "tanh": np.tanh,
}


def read_idx(folder, names):
    """The bytes of the first of `names` found in `folder`, gunzipped if gzip."""
    for name in names:
        for candidate in (name + ".gz", name):
            path = os.path.join(folder, candidate)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
                return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    sys.exit(f"no {names[0]}(.gz) in {folder}: pass --data-dir with the MNIST files")


def test_set(folder):
    """MNIST's test images (n x 784 uint8) and labels (n)."""
    images = read_idx(folder, ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"])
    labels = read_idx(folder, ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"])
    count, rows, cols = (int.from_bytes(images[i : i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(count, rows * cols)
    return pixels, np.frombuffer(labels, dtype=np.uint8, offset=8)


def load(path, activation=None):
    """The layers [(W [out, in], b [out])], the hidden activation, the input divisor, the
    metadata, and the input statistics (mean, 1/std) of a standardised model, else None."""
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        names = set(f.keys())
        layers = []
        while f"layers.{len(layers)}.weight" in names:
            i = len(layers)
            layers.append((f.get_tensor(f"layers.{i}.weight"), f.get_tensor(f"layers.{i}.bias")))
        standardize = None
        if meta.get("input_scaling") == "standardize":
            standardize = (f.get_tensor("input.mean"), f.get_tensor("input.inv_std"))
    if not layers:
        sys.exit(f"{path} has no layers.0.weight: not a gpu-mlp model")
    activation = activation or meta.get("activation")
    if activation is None and len(layers) > 1:
        sys.exit(f"{path} has no metadata naming its activation: pass --activation")
    divisor = np.float32(meta.get("input_divisor", "255"))
    return layers, activation or "relu", divisor, meta, standardize


def logits(layers, activation, x):
    """The forward pass: Z = A W^T + b per layer, the activation between layers."""
    a = x
    for i, (w, b) in enumerate(layers):
        a = a @ w.T + b
        if i + 1 < len(layers):
            a = ACTIVATIONS[activation](a)
    return a


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="the .safetensors file")
    default_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "mnist")
    parser.add_argument("--data-dir", default=default_data, help="folder with the MNIST files")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), help="for files without metadata")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    layers, activation, divisor, meta, standardize = load(args.model, args.activation)
    pixels, labels = test_set(args.data_dir)
    x = pixels.astype(np.float32) / divisor
    if standardize is not None:
        mean, inv_std = standardize
        x = (x - mean) * inv_std
    predicted = np.argmax(logits(layers, activation, x), axis=1)  # first largest, as gpu-mlp
    correct = int((predicted == labels).sum())
    accuracy = correct / len(labels)
    if args.json:
        print(json.dumps({"accuracy": accuracy, "correct": correct, "examples": len(labels)}))
    else:
        widths = [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers]
        print(f"{args.model}: {'-'.join(map(str, widths))} {activation}, {meta.get('epochs_trained', '?')} epochs")
        print(f"accuracy {100 * accuracy:.2f}% ({correct} of {len(labels)} test images)")


if __name__ == "__main__":
    main()
