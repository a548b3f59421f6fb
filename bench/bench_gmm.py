"""Benchmark of the GMM core, printed as ratios measured in one run on this machine.

1. ``diag_gaussian_log_prob`` against the naive ``N x K x D`` formulation and against a plain matrix
   product of the same output size ``[N, D] @ [D, K]``, at N = 128*128, D = 64 and K = 19*5
   (Cityscapes) or 150*5 (ADE20K). Targets: >= 10x faster than naive, <= 3x the plain matmul.
2. Peak extra memory of each, measured in a fresh subprocess (the kernel's peak RSS, reset just
   before the call, minus the RSS before it; Linux only), against the size of the N x K output. Target: O(N*K).
3. Time of one ``GMMClassifier.update`` (E-step + memory push, and the M-step call that comes every
   ``update_interval`` updates) for both memories at 19 and 150 classes.

Usage: ``python bench/bench_gmm.py [--quick]`` (``--quick`` uses smaller sizes, for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch
from torch.utils import benchmark

from gmmseg_lab.gmm import GMMClassifier, diag_gaussian_log_prob

D = 64


def naive_log_prob(x, means, stds):
    """The formulation the matmul version replaces: builds an N x K x D tensor."""
    z = (x[:, None, :] - means[None]) / stds[None]
    return -0.5 * (z * z).sum(-1) - stds.log().sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


def plain_matmul(x, weight):
    return x @ weight


def make_inputs(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=1)
    means = torch.nn.functional.normalize(torch.randn(k, D, generator=g), dim=1)
    stds = torch.rand(k, D, generator=g) * 0.2 + 0.1
    return x, means, stds


def time_it(fn, *args, min_run_time=1.0):
    timer = benchmark.Timer(stmt="fn(*args)", globals={"fn": fn, "args": args}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def peak_memory_child(variant: str, n: int, k: int) -> None:
    """Run in a subprocess: print the peak RSS increase (bytes) caused by one call of `variant`."""
    x, means, stds = make_inputs(n, k)
    weight = torch.randn(D, k)
    fns = {"matmul": lambda: diag_gaussian_log_prob(x, means, stds), "naive": lambda: naive_log_prob(x, means, stds),
           "plain": lambda: plain_matmul(x, weight)}
    fns[variant]()  # warm-up: thread pools and allocator caches are not the variant's cost
    base = _rss_bytes(reset_peak=True)
    out = fns[variant]()
    peak = _peak_rss_bytes()
    print(json.dumps({"extra": peak - base, "output": out.numel() * out.element_size()}))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_bytes(reset_peak: bool = False) -> int:
    """Current resident set size; optionally reset the kernel's peak (VmHWM) to it first."""
    if reset_peak:
        with open("/proc/self/clear_refs", "w") as fh:  # "5" resets the peak RSS (Linux >= 4.0)
            fh.write("5")
    return _status_kib("VmRSS") * 1024


def _peak_rss_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def peak_memory(variant, n, k):
    cmd = [sys.executable, __file__, "--child", variant, str(n), str(k)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def bench_density(sizes, min_run_time):
    rows = []
    for n, k in sizes:
        x, means, stds = make_inputs(n, k)
        weight = torch.randn(D, k)
        ref = naive_log_prob(x.double(), means.double(), stds.double())
        err = float((diag_gaussian_log_prob(x, means, stds).double() - ref).abs().max())
        t_ours = time_it(diag_gaussian_log_prob, x, means, stds, min_run_time=min_run_time)
        t_naive = time_it(naive_log_prob, x, means, stds, min_run_time=min_run_time)
        t_plain = time_it(plain_matmul, x, weight, min_run_time=min_run_time)
        mem = {v: peak_memory(v, n, k) for v in ("matmul", "naive", "plain")}
        rows.append(dict(n=n, k=k, t_ours=t_ours, t_naive=t_naive, t_plain=t_plain, err=err, mem=mem))
    return rows


def bench_update(configs, n, repeats):
    rows = []
    for num_classes, memory, memory_size in configs:
        torch.manual_seed(0)
        clf = GMMClassifier(num_classes, memory=memory, memory_size=memory_size)
        x, _, _ = make_inputs(n, 1, seed=1)
        labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(2))
        for _ in range(clf.update_interval):  # warm-up: fill the memory once, one M-step
            clf.update(x, labels)
        times_plain, times_mstep = [], []
        for _ in range(repeats * clf.update_interval):
            start = time.perf_counter()
            info = clf.update(x, labels)
            (times_mstep if info["m_step"] else times_plain).append(time.perf_counter() - start)
        rows.append(dict(classes=num_classes, memory=memory, memory_size=memory_size,
                         nbytes=clf.memory_nbytes(), t_update=sorted(times_plain)[len(times_plain) // 2],
                         t_mstep=sorted(times_mstep)[len(times_mstep) // 2]))
    return rows


def mib(b):
    return b / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        peak_memory_child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    n = 32 * 32 if args.quick else 128 * 128
    sizes = [(n, 19 * 5), (n, 150 * 5)]
    min_run_time = 0.2 if args.quick else 1.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu; D = {D}\n")
    print("diag_gaussian_log_prob: time ratios measured in this run (median of repeated calls)")
    print(f"{'N':>6} {'K':>5} | {'matmul ms':>9} {'naive ms':>9} {'plain ms':>9} | {'naive/ours':>10} "
          f"{'ours/plain':>10} | {'max abs err':>11}")
    rows = bench_density(sizes, min_run_time)
    for r in rows:
        print(f"{r['n']:>6} {r['k']:>5} | {r['t_ours']*1e3:>9.2f} {r['t_naive']*1e3:>9.2f} {r['t_plain']*1e3:>9.2f} | "
              f"{r['t_naive']/r['t_ours']:>9.1f}x {r['t_ours']/r['t_plain']:>9.2f}x | {r['err']:>11.2e}")
    print("\nPeak extra memory of one call (fresh process; MiB) and its ratio to the N x K float32 output")
    print(f"{'N':>6} {'K':>5} | {'output':>8} | {'matmul':>8} {'naive':>9} {'plain':>8} | {'matmul/out':>10} {'naive/out':>9}")
    for r in rows:
        out = r["mem"]["matmul"]["output"]
        m = {k: v["extra"] for k, v in r["mem"].items()}
        print(f"{r['n']:>6} {r['k']:>5} | {mib(out):>8.1f} | {mib(m['matmul']):>8.1f} {mib(m['naive']):>9.1f} "
              f"{mib(m['plain']):>8.1f} | {m['matmul']/out:>9.2f}x {m['naive']/out:>8.1f}x")

    n_update = 8 * 32 * 32 if not args.quick else 2048
    fifo_slots = 32000 if not args.quick else 1000
    configs = [(19, "fifo", fifo_slots), (19, "stats", fifo_slots), (150, "fifo", fifo_slots), (150, "stats", fifo_slots)]
    print(f"\nGMMClassifier.update on N = {n_update} pixels (M = 5, D = {D}, FIFO size {fifo_slots}):")
    print(f"{'C':>4} {'memory':>6} | {'memory MiB':>10} | {'update ms':>9} {'update+M-step ms':>16}")
    for r in bench_update(configs, n_update, repeats=2 if args.quick else 3):
        print(f"{r['classes']:>4} {r['memory']:>6} | {mib(r['nbytes']):>10.2f} | {r['t_update']*1e3:>9.1f} "
              f"{r['t_mstep']*1e3:>16.1f}")


if __name__ == "__main__":
    main()
