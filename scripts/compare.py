#!/usr/bin/env python3
"""Time gpu-mlp's training epochs beside numpy and PyTorch doing the same work on the CPU.

Every framework trains the same networks the way `gpu-mlp bench` does:

* ReLU hidden layers, a softmax output and the cross-entropy loss (mean over the batch);
* He initialisation (W ~ N(0, 2/fan_in), b = 0) and plain SGD (lr 0.05, no momentum,
  no weight decay), float32 throughout;
* batches of 100 gathered from a fresh random permutation of the 60,000 MNIST training
  images every epoch (the shuffle itself is outside the timed region, as in gpu-mlp);
* one warm-up epoch, then N timed epochs (default 3) of training only (no evaluation);
  the median epoch is reported.

The images are pre-loaded once as a float32 array scaled by 1/255, and each batch is gathered
by indexing that array with the batch's slice of the permutation. (gpu-mlp keeps the u8 pixels
and converts each gathered batch to f32 / 255 instead.)

numpy runs a hand-written forward/backward pass (the same math as gpu-mlp: Z = A·W + b,
ReLU, stable softmax + cross-entropy gradient, dW = Aᵀ·dZ, dA = dZ·Wᵀ ⊙ relu', no dX for the
first layer, then the SGD step). PyTorch runs nn.Sequential + F.cross_entropy +
torch.optim.SGD. Each framework runs in its own subprocess per thread count, with
OPENBLAS/OMP/MKL_NUM_THREADS set before numpy or torch is imported (and torch.set_num_threads),
so that "1T" really is one thread. The numpy worker also unsets OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (they override what OpenBLAS detects and slow current numpy on some
processors) and reports the BLAS kernel numpy runs on, as threadpoolctl sees it
(`pip install threadpoolctl`; without it the script says the kernel is unknown).

gpu-mlp's numbers come from `cargo run --release -- bench --device cpu --json` (add `--gpu`
to also time `--device gpu`) in the repository this script lives in; it uses all cores.

Reproduce (from the repository root; MNIST's gzip IDX files must be in data/mnist/):

    pip install numpy threadpoolctl torch   # PyPI's Linux torch wheel pulls in ~4 GB of CUDA
                                            # libraries it needs in order to import, even for
                                            # the CPU; a venv keeps them apart
    python3 scripts/compare.py                 # all three networks, 3 timed epochs
    python3 scripts/compare.py --markdown      # the same, as a Markdown table for the README

The numbers come from one run. On a busy machine they are noisy (the 2-thread peers worst of
all: OpenMP/OpenBLAS threads that spin-wait slow down many-fold when the cores are shared), so
the script ends by saying how many cores other processes used while it ran: rerun if not ~0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NETWORKS = "784-64-10,784-128-10,784-512-512-10"
BATCH_SIZE = 100
LR = 0.05
SEED = 1
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS overrides of its own processor detection: set, they slow current numpy on some
# processors, so the numpy worker runs without them.
OPENBLAS_OVERRIDE_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_mnist_train(data_dir: Path):
    """The 60,000 training images as float32 in [0, 1] (n × 784) and their labels (uint8)."""
    import numpy as np

    with gzip.open(data_dir / "train-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    magic, n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != 0x803:
        sys.exit(f"{data_dir}: train images have magic {magic:#x}, not 0x803")
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows * cols)
    with gzip.open(data_dir / "train-labels-idx1-ubyte.gz", "rb") as f:
        raw = f.read()
    magic, count = (int.from_bytes(raw[i : i + 4], "big") for i in (0, 4))
    if magic != 0x801 or count != n:
        sys.exit(f"{data_dir}: train labels have magic {magic:#x} and {count} entries")
    labels = np.frombuffer(raw, np.uint8, offset=8)
    return images.astype(np.float32) / np.float32(255.0), labels.copy()


def parse_widths(network: str) -> list[int]:
    return [int(w) for w in network.split("-")]


# --------------------------------------------------------------------------------------------
# Workers: each runs in its own subprocess, its thread count fixed by the environment
# --------------------------------------------------------------------------------------------


def numpy_network(widths: list[int], x, y, epochs: int) -> dict:
    """Trains one network with hand-written numpy; returns per-epoch seconds and losses."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    params = [
        (
            rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)),
            np.zeros(fan_out, np.float32),
        )
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True)
    ]
    lr = np.float32(LR)
    n = len(x)
    last = len(params) - 1
    seconds, losses = [], []
    for _ in range(epochs + 1):
        permutation = rng.permutation(n)
        started = time.perf_counter()
        loss_sum = 0.0
        for start in range(0, n, BATCH_SIZE):
            index = permutation[start : start + BATCH_SIZE]
            a, labels = x[index], y[index]
            rows = np.arange(len(index))
            # Forward: acts[i] is the input of layer i (post-ReLU), the last z the logits.
            acts = [a]
            for i, (w, b) in enumerate(params):
                z = acts[-1] @ w
                z += b
                if i < last:
                    np.maximum(z, 0.0, out=z)
                acts.append(z)
            # Stable softmax + cross-entropy, and its gradient (p - onehot) / rows.
            z = acts.pop()
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            loss_sum += float(np.log(s[:, 0]).sum() - z[rows, labels].sum())
            dz = e / s
            dz[rows, labels] -= 1.0
            dz *= np.float32(1.0 / len(index))
            # Backward and SGD step, last layer first; no dX for the first layer.
            for i in range(last, -1, -1):
                w, b = params[i]
                a = acts[i]
                dw = a.T @ dz
                db = dz.sum(axis=0)
                if i > 0:
                    da = dz @ w.T
                    da *= a > 0
                w -= lr * dw
                b -= lr * db
                if i > 0:
                    dz = da
        seconds.append(time.perf_counter() - started)
        losses.append(loss_sum / n)
    return {"seconds": seconds, "losses": losses}


def torch_network(widths: list[int], x, y, epochs: int) -> dict:
    """Trains one network with PyTorch; returns per-epoch seconds and losses."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        linear = nn.Linear(fan_in, fan_out)
        nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    n = len(x)
    seconds, losses = [], []
    for _ in range(epochs + 1):
        permutation = torch.randperm(n)
        started = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, BATCH_SIZE):
            index = permutation[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
        losses.append(loss_sum.item() / n)
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds, "losses": losses}


def blas_kernels() -> list[str]:
    """The BLAS libraries loaded in this process as threadpoolctl reports them: the library
    (internal_api), its version, and the kernel architecture and threading layer it runs."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["unknown (threadpoolctl is not installed: pip install threadpoolctl)"]
    kernels = [
        f"{lib.get('internal_api', '?')} {lib.get('version') or '?'} "
        f"(architecture {lib.get('architecture') or '-'}, threading {lib.get('threading_layer') or '-'})"
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    return kernels or ["none found by threadpoolctl"]


def worker(framework: str, threads: int, networks: list[str], epochs: int, data_dir: Path) -> None:
    """Runs in the subprocess: times every network, prints one JSON object per network."""
    unset = []
    if framework == "numpy":
        # Before numpy (and so OpenBLAS) is first imported: OpenBLAS reads them as it loads.
        unset = [f"{var}={os.environ.pop(var)}" for var in OPENBLAS_OVERRIDE_ENV if var in os.environ]
    images, labels = load_mnist_train(data_dir)
    blas = []
    if framework == "numpy":
        import numpy as np

        version = np.__version__
        blas = blas_kernels()
        train = numpy_network
        x, y = images, labels.astype(np.intp)
    else:
        import torch

        torch.set_num_threads(threads)
        torch.set_grad_enabled(True)
        version = torch.__version__
        train = torch_network
        x, y = torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))
    for network in networks:
        result = train(parse_widths(network), x, y, epochs)
        timed = result["seconds"][1:]
        row = {
            "framework": framework,
            "version": version,
            "threads": threads,
            "network": network,
            "epoch_seconds": statistics.median(timed),
            "timed_seconds": timed,
            "warmup_seconds": result["seconds"][0],
            "train_loss": result["losses"][-1],
        }
        if framework == "numpy":
            row["blas"] = blas
            row["unset_env"] = unset
        print(json.dumps(row), flush=True)


# --------------------------------------------------------------------------------------------
# The parent: run the workers and gpu-mlp, print the table
# --------------------------------------------------------------------------------------------


def have_module(name: str) -> bool:
    """Whether `name` imports, checked in a throwaway subprocess (so this one stays clean)."""
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
    return probe.returncode == 0


def run_worker(framework: str, threads: int, args) -> list[dict]:
    """Runs one framework at one thread count in a subprocess; returns its rows."""
    env = dict(os.environ)
    env.update({var: str(threads) for var in THREAD_ENV})
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--worker", framework, "--threads", str(threads)]
    command += ["--epochs", str(args.epochs), "--networks", args.networks, "--data-dir", str(args.data_dir)]
    print(f"  {framework}, {threads} thread{'s' * (threads > 1)} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{framework} with {threads} threads failed (exit {done.returncode})")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def cargo_run(subcommand: str, flags: dict, *switches: str) -> list[str]:
    """`cargo run --release -- SUBCOMMAND --flag value ... --switch ...` as an argument list."""
    command = ["cargo", "run", "--release", "--quiet", "--", subcommand]
    for flag, value in flags.items():
        command += [flag, str(value)]
    return command + list(switches)


def run_gpu_mlp(device: str, args) -> list[dict]:
    """`cargo run --release -- bench --device DEVICE --json` in the repository root."""
    flags = {
        "--device": device,
        "--epochs": args.epochs,
        "--networks": args.networks,
        "--batch-size": BATCH_SIZE,
        "--data-dir": args.data_dir,
    }
    command = cargo_run("bench", flags, "--json")
    print(f"  gpu-mlp --device {device} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"gpu-mlp bench --device {device} failed (exit {done.returncode})")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if not rows:
        print(f"  gpu-mlp bench --device {device} printed no rows", file=sys.stderr)
    return rows


def run_gpu_mlp_loss(device: str, args) -> dict[str, float]:
    """Last-epoch training loss of each network from an untimed `gpu-mlp train --json` run with
    the bench's settings (the bench's own JSON carries no loss). Its shuffles come from the
    seed's stream after the weights, so the loss matches the bench's in size, not to the bit."""
    losses = {}
    print(f"  gpu-mlp train --device {device} (untimed, for the loss) ...", file=sys.stderr, flush=True)
    for network in args.networks.split(","):
        flags = {
            "--device": device,
            "--layers": network.replace("-", ","),
            "--activation": "relu",
            "--output": "softmax",
            "--loss": "ce",
            "--init": "he",
            "--lr": LR,
            "--batch-size": BATCH_SIZE,
            "--epochs": args.epochs + 1,
            "--test-examples": 1,
            "--seed": SEED,
            "--data-dir": args.data_dir,
        }
        command = cargo_run("train", flags, "--json")
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"gpu-mlp train --device {device} failed (exit {done.returncode})")
        epochs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        losses[network] = epochs[-1]["train_loss"]
    return losses


def machine_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all cores, all processes), from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this script and the subprocesses it has waited for."""
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rustc_version() -> str:
    try:
        done = subprocess.run(["rustc", "--version"], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() or "?"
    except OSError:
        return "rustc not found"


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def build_table(networks, results, peers, gpu_devices):
    """Header and rows of the comparison table, as lists of strings."""
    header = ["network"] + [f"gpu-mlp {d} s" for d in gpu_devices]
    header += [f"{label} s" for label, _ in peers] + ["best peer", "speedup"]
    rows = []
    for network in networks:
        ours = [results.get(("gpu-mlp", d, network)) for d in gpu_devices]
        timed = [(label, results.get(key + (network,))) for label, key in peers]
        present = [(label, t) for label, t in timed if t is not None]
        row = [network] + [fmt(t) for t in ours] + [fmt(t) for _, t in timed]
        cpu = ours[0] if gpu_devices and gpu_devices[0] == "cpu" else None
        if present:
            best_label, best = min(present, key=lambda p: p[1])
            row.append(f"{best_label} {best:.3f}")
            row.append(f"{best / cpu:.2f}x" if cpu else "-")
        else:
            row += ["-", "-"]
        rows.append(row)
    return header, rows


def print_text_table(header, rows):
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        # The network left-aligned, the numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def print_markdown_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Time gpu-mlp's training epochs beside numpy and PyTorch on the same work."
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs after 1 warm-up (median reported) [3]"
    )
    parser.add_argument(
        "--networks", default=DEFAULT_NETWORKS, help=f"comma-separated widths [{DEFAULT_NETWORKS}]"
    )
    parser.add_argument("--threads-list", default="1,2", help="thread counts for numpy and torch [1,2]")
    parser.add_argument("--skip-numpy", action="store_true", help="do not time numpy")
    parser.add_argument("--skip-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--skip-gpu-mlp", action="store_true", help="do not run gpu-mlp's bench")
    parser.add_argument(
        "--skip-gpu-mlp-loss",
        action="store_true",
        help="skip the untimed gpu-mlp train run that only reports its loss",
    )
    parser.add_argument("--gpu", action="store_true", help="also time gpu-mlp --device gpu")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--data-dir", type=Path, default=REPO / "data" / "mnist", help="MNIST gzip IDX files [data/mnist]"
    )
    parser.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    args.networks = ",".join(networks)
    if args.worker:
        worker(args.worker, args.threads, networks, args.epochs, args.data_dir)
        return

    started = time.perf_counter()
    busy_before, ours_before = machine_cpu_seconds(), own_cpu_seconds()
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    thread_counts = [int(t) for t in args.threads_list.split(",")]
    frameworks = []
    for name, skip in (("numpy", args.skip_numpy), ("torch", args.skip_torch)):
        if skip:
            continue
        if have_module(name):
            frameworks.append(name)
        else:
            print(f"{name} is not installed (pip install {name}): skipping it", file=sys.stderr)

    results: dict[tuple, float] = {}
    losses: dict[str, dict[str, float]] = {}
    versions: dict[str, str] = {}
    blas: dict[str, list[str]] = {}
    unset_env: set[str] = set()
    gpu_devices = [] if args.skip_gpu_mlp else ["cpu"] + (["gpu"] if args.gpu else [])
    adapters: dict[str, str] = {}
    print("timing (one run; progress on stderr):", file=sys.stderr)
    for device in gpu_devices:
        for row in run_gpu_mlp(device, args):
            results[("gpu-mlp", device, row["network"])] = row["epoch_seconds"]
            adapters[device] = row.get("adapter", "?")
            if "train_loss" in row:
                losses.setdefault(f"gpu-mlp {device}", {})[row["network"]] = row["train_loss"]
        if f"gpu-mlp {device}" not in losses and not args.skip_gpu_mlp_loss:
            losses[f"gpu-mlp {device}*"] = run_gpu_mlp_loss(device, args)
    peers = []
    for framework in frameworks:
        for threads in thread_counts:
            label = f"{framework} {threads}T"
            peers.append((label, (framework, threads)))
            for row in run_worker(framework, threads, args):
                results[(framework, threads, row["network"])] = row["epoch_seconds"]
                losses.setdefault(label, {})[row["network"]] = row["train_loss"]
                versions[framework] = row["version"]
                if "blas" in row:
                    blas[framework] = row["blas"]
                    unset_env.update(row["unset_env"])
    elapsed = time.perf_counter() - started
    busy_after, ours_after = machine_cpu_seconds(), own_cpu_seconds()

    header, rows = build_table(networks, results, peers, gpu_devices)
    print()
    print(
        f"median of {args.epochs} timed epochs after 1 warm-up; 60,000 MNIST images, batch {BATCH_SIZE}, "
        f"SGD lr {LR}, float32; seconds per epoch"
    )
    print("speedup = best peer's epoch time / gpu-mlp cpu's (above 1: gpu-mlp is faster)")
    print()
    if args.markdown:
        print_markdown_table(header, rows)
    else:
        print_text_table(header, rows)

    loss_header = ["network"] + list(losses)
    loss_rows = [
        [network] + [f"{losses[label][network]:.4f}" if network in losses[label] else "-" for label in losses]
        for network in networks
    ]
    if losses:
        print()
        print(f"training loss of the last epoch (epoch {args.epochs + 1}), same work => similar values:")
        (print_markdown_table if args.markdown else print_text_table)(loss_header, loss_rows)
    if any(label.endswith("*") for label in losses):
        print(
            "* from an untimed `gpu-mlp train --json` run with the bench's settings "
            "(`bench --json` reports no loss)"
        )

    print()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    if busy_before is not None and busy_after is not None:
        others = max(0.0, (busy_after - busy_before) - (ours_after - ours_before)) / elapsed
        print(f"other processes used {others:.2f} cores on average during the run (0: the machine was ours)")
    for device, adapter in adapters.items():
        print(f"gpu-mlp {device}: {adapter}")
    print(
        "versions: "
        + ", ".join(
            [f"numpy {versions['numpy']}" if "numpy" in versions else "numpy -"]
            + [f"torch {versions['torch']}" if "torch" in versions else "torch -"]
            + [rustc_version()]
        )
    )
    for framework, kernels in blas.items():
        print(f"{framework} BLAS: " + "; ".join(kernels))
    if unset_env:
        print("numpy ran with these unset: " + ", ".join(sorted(unset_env)))
    print(
        "data: float32 images pre-loaded (/255), batches gathered by indexing with a permutation slice; "
        "gpu-mlp gathers u8 and converts to f32 per batch"
    )
    print(f"command: python3 {command}  (took {elapsed:.0f} s)")


if __name__ == "__main__":
    main()
