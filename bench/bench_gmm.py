"""Benchmark of the GMM core, printed as ratios measured in one run on this machine.

1. ``diag_gaussian_log_prob`` against the naive ``N x K x D`` formulation and against a plain matrix
   product of the same output size ``[N, D] @ [D, K]``, at N = 128*128, D = 64 and K = 19*5
   (Cityscapes) or 150*5 (ADE20K). Targets: >= 10x faster than naive, <= 3x the plain matmul.
2. Peak extra memory of each, measured in a fresh subprocess (the kernel's peak RSS, reset just
   before the call, minus the RSS before it; Linux only), against the size of the N x K output. Target: O(N*K).
3. ``GMMClassifier.update`` (one E-step, memory push, and the M-step that comes every ``update_interval``
   updates) against the per-class loop it replaced (``tests/gmm_loop_oracle.py``, the same
   computation as plain Python loops over classes, components and slots), both memories, at
   C = 19 (Cityscapes), 150 (ADE20K) and 171 (COCO-Stuff) classes on N = 8192 pixels, M = 5, D = 64,
   FIFO of 32000 samples per component (the release's; shrunk, and said so, where the machine has
   not the memory for it), one thread. Three calls are timed: ``update(x, labels)`` (its own E-step),
   the same when it ends with the M-step, and the head's path ``assign_components(x, labels,
   log_prob)`` + ``update(x, labels, assignment=...)`` (the E-step read from the forward's cached
   log-densities). Median of repeated calls, wall clock and thread CPU time (the machine may be
   shared); the ratio loop / vectorised. Target: >= 5x at 150 classes.

Usage: ``python bench/bench_gmm.py [--quick] [--json]``. ``--quick`` uses smaller sizes (a smoke
test); ``--json`` prints every measurement as one JSON object on stdout, and nothing else.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils import benchmark

from gmmseg_lab.gmm import GMMClassifier, diag_gaussian_log_prob

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from gmm_loop_oracle import LoopGMMClassifier  # noqa: E402 (from tests/, put on sys.path above)

D = 64
#: Memory left free for the rest of the process (and the machine) when sizing a FIFO queue.
MEMORY_MARGIN = 3 * 2**30


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
    fns = {
        "matmul": lambda: diag_gaussian_log_prob(x, means, stds),
        "naive": lambda: naive_log_prob(x, means, stds),
        "plain": lambda: plain_matmul(x, weight),
    }
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


def _available_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo (Linux), or ``None``."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fifo_size_that_fits(num_classes: int, wanted: int, notes: list[str]) -> int:
    """``wanted`` FIFO samples per component, or fewer when the queue would not fit in free memory."""
    per_sample = num_classes * 5 * D * 4
    available = _available_bytes()
    if available is None or wanted * per_sample <= available - MEMORY_MARGIN:
        return wanted
    size = max(1000, (available - MEMORY_MARGIN) // per_sample // 1000 * 1000)
    notes.append(
        f"FIFO at C = {num_classes}: {wanted} samples per component would be "
        f"{wanted * per_sample / 2**30:.1f} GiB with {available / 2**30:.1f} GiB available: "
        f"measured with memory_size = {size} ({size * per_sample / 2**30:.1f} GiB) instead"
    )
    return size


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def _timed(fn):
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return out, time.perf_counter() - wall, time.thread_time() - cpu


def time_updates(cls, num_classes, memory, memory_size, x, labels, repeats):
    """Median times of one implementation: update, update ending with the M-step, the head's path."""
    torch.manual_seed(0)
    clf = cls(num_classes, memory=memory, memory_size=memory_size)
    nbytes = clf.memory_nbytes()
    for _ in range(clf.update_interval):  # warm-up: fill the memory a little, one M-step
        clf.update(x, labels)
    wall = {"update": [], "update_m_step": [], "head_path": []}
    cpu = {k: [] for k in wall}
    for _ in range(repeats * clf.update_interval):
        info, t_wall, t_cpu = _timed(lambda: clf.update(x, labels))
        key = "update_m_step" if info["m_step"] else "update"
        wall[key].append(t_wall)
        cpu[key].append(t_cpu)
    log_prob = clf.component_log_prob(x)  # the head's forward computes it anyway (not timed)
    for _ in range(repeats * clf.update_interval):
        if clf.m_step_due():  # time the head's path without the M-step
            clf.update(x, labels)
            continue

        def head_path():
            assignment = clf.assign_components(x, labels, log_prob=log_prob)
            return clf.update(x, labels, assignment=assignment)

        _, t_wall, t_cpu = _timed(head_path)
        wall["head_path"].append(t_wall)
        cpu["head_path"].append(t_cpu)
    return nbytes, {k: _median(v) for k, v in wall.items()}, {k: _median(v) for k, v in cpu.items()}


def bench_update(configs, n, repeats, progress=None):
    rows = []
    for num_classes, memory, memory_size in configs:
        x, _, _ = make_inputs(n, 1, seed=1)
        labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(2))
        row = dict(classes=num_classes, memory=memory, memory_size=memory_size, pixels=n, components=5, dim=D)
        for name, cls in (("vectorized", GMMClassifier), ("loop", LoopGMMClassifier)):
            if progress:
                progress(f"update: C = {num_classes}, {memory}, {name} ...")
            nbytes, wall, cpu = time_updates(cls, num_classes, memory, memory_size, x, labels, repeats)
            gc.collect()  # the queue (gigabytes at the release's size) is freed before the next one
            row["memory_bytes"] = nbytes
            row[name] = dict(wall_s=wall, cpu_s=cpu)
        row["ratio_wall"] = {
            k: row["loop"]["wall_s"][k] / row["vectorized"]["wall_s"][k] for k in row["loop"]["wall_s"]
        }
        row["ratio_cpu"] = {k: row["loop"]["cpu_s"][k] / row["vectorized"]["cpu_s"][k] for k in row["loop"]["cpu_s"]}
        rows.append(row)
    return rows


def mib(b):
    return b / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", action="store_true", help="print every measurement as one JSON object, only that")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the loop and the vectorised code on equal terms, and a shared machine
    if args.child:
        peak_memory_child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    say = (lambda *a, **k: None) if args.json else print
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else None
    notes: list[str] = []

    n = 32 * 32 if args.quick else 128 * 128
    sizes = [(n, 19 * 5), (n, 150 * 5)]
    min_run_time = 0.2 if args.quick else 1.0
    say(f"torch {torch.__version__}, {torch.get_num_threads()} thread, device cpu; D = {D}\n")
    say("diag_gaussian_log_prob: time ratios measured in this run (median of repeated calls)")
    say(
        f"{'N':>6} {'K':>5} | {'matmul ms':>9} {'naive ms':>9} {'plain ms':>9} | {'naive/ours':>10} "
        f"{'ours/plain':>10} | {'max abs err':>11}"
    )
    if progress:
        progress("diag_gaussian_log_prob ...")
    rows = bench_density(sizes, min_run_time)
    for r in rows:
        say(
            f"{r['n']:>6} {r['k']:>5} | {r['t_ours'] * 1e3:>9.2f} {r['t_naive'] * 1e3:>9.2f} {r['t_plain'] * 1e3:>9.2f} | "  # noqa: E501
            f"{r['t_naive'] / r['t_ours']:>9.1f}x {r['t_ours'] / r['t_plain']:>9.2f}x | {r['err']:>11.2e}"
        )
    say("\nPeak extra memory of one call (fresh process; MiB) and its ratio to the N x K float32 output")
    say(
        f"{'N':>6} {'K':>5} | {'output':>8} | {'matmul':>8} {'naive':>9} {'plain':>8} | {'matmul/out':>10} {'naive/out':>9}"  # noqa: E501
    )
    for r in rows:
        out = r["mem"]["matmul"]["output"]
        m = {k: v["extra"] for k, v in r["mem"].items()}
        say(
            f"{r['n']:>6} {r['k']:>5} | {mib(out):>8.1f} | {mib(m['matmul']):>8.1f} {mib(m['naive']):>9.1f} "
            f"{mib(m['plain']):>8.1f} | {m['matmul'] / out:>9.2f}x {m['naive'] / out:>8.1f}x"
        )

    n_update = 8 * 32 * 32 if not args.quick else 2048
    fifo_slots = 32000 if not args.quick else 1000
    classes = (19, 150, 171)
    configs = [
        (c, memory, fifo_size_that_fits(c, fifo_slots, notes) if memory == "fifo" else fifo_slots)
        for c in classes
        for memory in ("fifo", "stats")
    ]
    updates = bench_update(configs, n_update, repeats=2 if args.quick else 3, progress=progress)
    say(f"\nGMMClassifier.update on N = {n_update} pixels (M = 5, D = {D}, FIFO size {fifo_slots}), one thread:")
    say(
        "vectorised (every class at once) against the per-class loop (tests/gmm_loop_oracle.py); median ms, "
        "wall clock; ratio = loop / vectorised (wall, and thread CPU time in brackets)"
    )
    say(
        f"{'C':>4} {'memory':>6} {'size':>6} | {'memory MiB':>10} | {'update':>7} {'loop':>7} {'ratio':>14} | "
        f"{'+M-step':>7} {'loop':>7} {'ratio':>14} | {'head path':>9} {'loop':>7} {'ratio':>14}"
    )
    for r in updates:
        cells = []
        for key, width in (("update", 7), ("update_m_step", 7), ("head_path", 9)):
            ours, loop = r["vectorized"]["wall_s"][key], r["loop"]["wall_s"][key]
            ratio = f"{r['ratio_wall'][key]:.1f}x ({r['ratio_cpu'][key]:.1f}x)"
            cells.append(f"{ours * 1e3:>{width}.1f} {loop * 1e3:>7.1f} {ratio:>14}")
        say(
            f"{r['classes']:>4} {r['memory']:>6} {r['memory_size']:>6} | {mib(r['memory_bytes']):>10.1f} | "
            + " | ".join(cells)
        )
    target = [r["ratio_wall"]["update"] for r in updates if r["classes"] == 150]
    verdict = "met" if target and min(target) >= 5 else "MISSED"
    say(
        f"\ntarget: update at 150 classes >= 5x faster than the loop: {verdict} "
        f"({', '.join(f'{t:.1f}x' for t in target)})"
    )
    for note in notes:
        say(f"note: {note}")

    if args.json:
        print(
            json.dumps(
                dict(
                    torch=torch.__version__,
                    threads=torch.get_num_threads(),
                    device="cpu",
                    dim=D,
                    quick=args.quick,
                    density=[
                        dict(
                            n=r["n"],
                            k=r["k"],
                            t_matmul_s=r["t_ours"],
                            t_naive_s=r["t_naive"],
                            t_plain_s=r["t_plain"],
                            ratio_naive_over_matmul=r["t_naive"] / r["t_ours"],
                            ratio_matmul_over_plain=r["t_ours"] / r["t_plain"],
                            max_abs_err=r["err"],
                            peak_extra_bytes={k: v["extra"] for k, v in r["mem"].items()},
                            output_bytes=r["mem"]["matmul"]["output"],
                        )
                        for r in rows
                    ],
                    update=updates,
                    target=dict(
                        what="update at 150 classes >= 5x faster than the loop (wall clock)",
                        ratios=target,
                        met=verdict == "met",
                    ),
                    notes=notes,
                )
            )
        )


if __name__ == "__main__":
    main()
