"""GMMSeg head against its softmax twin: one training step and one inference, timed in one run.

Both twins are built from the shipped configs (same backbone, data size, seed), fed the same random
batch, and timed alternately in the same process, so each ratio is robust to this machine's noise.

1. Training step (forward, both losses, backward, optimizer step; for GMMSeg also the E-step, the
   memory push and, every ``update_interval`` steps, the M-step) at 19 and 150 classes. The memory
   gets every labelled pixel (``update_correct_only=False``): random labels are rarely "correct", and
   this is the most work the memory can take. Targets (one thread): <= 1.10x at 19 classes, <= 1.25x
   at 150.
2. Inference (``model.predict``: class logits resized to the image, what mmseg's test loop runs) for
   every architecture. Target: <= 1.10x.

Usage::

    python bench/bench_head.py                        # every architecture and backbone, 19 and 150 classes
    python bench/bench_head.py --arch segformer --classes 19 --repeats 5
    python bench/bench_head.py --json                 # one JSON object on stdout, nothing else
    python bench/bench_head.py --profile --arch segformer --classes 150   # where the GMM's extra time goes
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import torch

ARCH_NAMES = ("segformer", "deeplabv3plus", "upernet", "ocrnet")


def build(arch: str, head: str, preset: str, num_classes: int, backbone: str | None):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from gmmseg_lab.models import build_config
    from gmmseg_lab.models.inference import quiet_mmengine
    from gmmseg_lab.models.presets import _set_num_classes

    gmm_head = dict(update_correct_only=False) if head == "gmm" else None
    cfg = build_config(arch, head, preset, seed=0, backbone=backbone, gmm_head=gmm_head)
    _set_num_classes(cfg.model, num_classes)
    init_default_scope("mmseg")
    torch.manual_seed(0)
    with quiet_mmengine():
        model = MODELS.build(cfg.model)
        model.init_weights()
    return model, cfg


def make_batch(batch_size: int, size: int, num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(1)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        sample = SegDataSample()
        # Labels in blocks of 8x8 pixels, so each class covers regions the way a label map does.
        coarse = torch.randint(0, num_classes, (1, 1, size // 8, size // 8), generator=g)
        labels = torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="nearest").long()[0]
        sample.gt_sem_seg = PixelData(data=labels)
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def train_step(model, optimizer, batch):
    data = model.data_preprocessor(batch, True)
    losses = model.loss(data["inputs"], data["data_samples"])
    loss, _ = model.parse_losses(losses)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@torch.no_grad()
def infer(model, batch):
    data = model.data_preprocessor(batch, False)
    model.predict(data["inputs"], data["data_samples"])


def time_twins(
    arch: str, preset: str, classes: int, backbone: str | None, kind: str, repeats: int, batch_size: int, size: int
) -> dict:
    """Median time (s) of ``kind`` ('train' or 'infer') for both twins, alternating."""
    twins = {}
    for head in ("gmm", "softmax"):
        model, _ = build(arch, head, preset, classes, backbone)
        model.train(kind == "train")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        twins[head] = (model, optimizer, make_batch(batch_size, size, classes))
    times = {head: [] for head in twins}
    warm_up = 5 if kind == "train" else 2  # training: past the first M-step (every 5 updates)
    for rep in range(repeats + warm_up):
        for head, (model, optimizer, batch) in twins.items():
            start = time.perf_counter()
            train_step(model, optimizer, batch) if kind == "train" else infer(model, batch)
            if rep >= warm_up:
                times[head].append(time.perf_counter() - start)
    gmm, softmax = statistics.median(times["gmm"]), statistics.median(times["softmax"])
    from gmmseg_lab.catalog import default_backbone

    return {
        "arch": arch,
        "backbone": backbone or default_backbone(arch, preset),
        "preset": preset,
        "classes": classes,
        "kind": kind,
        "batch": batch_size,
        "size": size,
        "repeats": repeats,
        "gmm_s": gmm,
        "softmax_s": softmax,
        "ratio": gmm / softmax,
    }


def profile_train_step(
    arch: str, preset: str, classes: int, batch_size: int, size: int, steps: int = 10, rows: int = 15
) -> dict:
    """Where a training step's time goes, GMMSeg against its twin: torch.profiler over ``steps`` steps
    of each (after a warm-up past the first M-step), the ops by self CPU time, and each operator's
    extra self time in the GMM model (its time there minus its time in the twin)."""
    from torch.profiler import ProfilerActivity, profile

    tables, self_ms = {}, {}
    for head in ("gmm", "softmax"):
        model, _ = build(arch, head, preset, classes, None)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = make_batch(batch_size, size, classes)
        for _ in range(5):
            train_step(model, optimizer, batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                train_step(model, optimizer, batch)
        averages = prof.key_averages()
        tables[head] = averages.table(sort_by="self_cpu_time_total", row_limit=rows)
        self_ms[head] = {e.key: e.self_cpu_time_total / 1e3 / steps for e in averages}
    total = {h: sum(v.values()) for h, v in self_ms.items()}
    extra = {k: v - self_ms["softmax"].get(k, 0.0) for k, v in self_ms["gmm"].items()}
    top_extra = sorted(extra.items(), key=lambda kv: -kv[1])[:rows]
    return {
        "arch": arch,
        "classes": classes,
        "steps": steps,
        "tables": tables,
        "self_cpu_ms_per_step": total,
        "extra_ms_per_step_by_op": dict(top_extra),
    }


def print_profiles(args, out) -> None:
    for arch in args.train_arch or args.arch:
        for classes in args.classes:
            r = profile_train_step(arch, args.preset, classes, args.batch_size, args.size)
            if args.json:
                print(json.dumps({k: v for k, v in r.items() if k != "tables"}, indent=1))
                continue
            print(
                f"== {arch}, {classes} classes: self CPU per step gmm {r['self_cpu_ms_per_step']['gmm']:.1f} ms, "
                f"softmax {r['self_cpu_ms_per_step']['softmax']:.1f} ms",
                file=out,
            )
            print("the GMM model's extra self time per step by operator (gmm minus softmax, ms):", file=out)
            for op, ms in r["extra_ms_per_step_by_op"].items():
                print(f"  {ms:8.2f}  {op}", file=out)
            print(r["tables"]["gmm"], file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(ARCH_NAMES), choices=ARCH_NAMES)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["default", "native"],
        help="backbones compared at inference: 'default' (the preset's), 'native' (the "
        "architecture's own) or a name; each architecture runs the ones it has",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=[19, 150],
        help="class counts of the training-step comparison (inference uses the first)",
    )
    parser.add_argument(
        "--train-arch",
        nargs="+",
        default=None,
        help="architectures of the training-step comparison (default: those of --arch)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (targets are for 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the training step of --train-arch/--arch at --classes instead of timing: "
        "the GMM's extra time per operator",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger

    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)
    out = sys.stderr if args.json else sys.stdout
    if args.profile:
        print_profiles(args, out)
        return
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "preset": args.preset,
        "batch": args.batch_size,
        "size": args.size,
    }
    print(
        f"torch {meta['torch']}, {meta['threads']} thread(s), {meta['device']}; preset {args.preset}, "
        f"batch {args.batch_size} x {args.size} px; median of {args.repeats}, twins timed alternately",
        file=out,
    )
    results = []
    from gmmseg_lab.catalog import BACKBONES

    def backbones_of(arch: str) -> list[str | None]:
        out: list[str | None] = []
        for name in args.backbones:
            b = None if name == "default" else BACKBONES[arch][0] if name == "native" else name
            if (b is None or b in BACKBONES[arch]) and b not in out:
                out.append(b)
        return out

    for arch in args.train_arch or args.arch:
        for classes in args.classes:
            r = time_twins(arch, args.preset, classes, None, "train", args.repeats, args.batch_size, args.size)
            target = 1.10 if classes <= 19 else 1.25
            r["target"] = target
            results.append(r)
            print(
                f"train step {arch:>14} {classes:>4} classes: gmm {r['gmm_s'] * 1e3:7.1f} ms, softmax "
                f"{r['softmax_s'] * 1e3:7.1f} ms, ratio {r['ratio']:.2f}x (target <= {target:.2f}x)",
                file=out,
            )
    for arch in args.arch:
        for backbone in backbones_of(arch):
            r = time_twins(
                arch, args.preset, args.classes[0], backbone, "infer", args.repeats, args.batch_size, args.size
            )
            r["target"] = 1.10
            results.append(r)
            name = f"{arch} ({backbone or 'preset default'})"
            print(
                f"inference  {name:>34} {args.classes[0]:>4} classes: gmm {r['gmm_s'] * 1e3:7.1f} ms, softmax "
                f"{r['softmax_s'] * 1e3:7.1f} ms, ratio {r['ratio']:.2f}x (target <= 1.10x)",
                file=out,
            )
    if args.json:
        print(json.dumps({"benchmark": "bench_head", **meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
