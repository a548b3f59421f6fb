"""GMMSeg head against its softmax twin: time of one training iteration and of inference.

Both twins are built from the shipped configs (same backbone, data size, seed), fed the same random
batch, and timed alternately in the same run, so the ratio is robust to this machine's noise.
Targets (issue 3): training <= 1.3x, inference <= 1.15x the softmax twin.

Usage: ``python bench/bench_head.py [--arch segformer deeplabv3plus] [--preset cpu] [--repeats 10]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(arch: str, head: str, preset: str, num_classes: int):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import gmmseg_lab.models  # noqa: F401  (registers GMMSegHead)
    from gmmseg_lab.models import build_config
    from gmmseg_lab.models.presets import _set_num_classes

    cfg = build_config(arch, head, preset, seed=0)
    _set_num_classes(cfg.model, num_classes)
    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def make_batch(cfg, batch_size: int, size: int, num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(1)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size), generator=g))
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
    model.eval()
    model.predict(data["inputs"], data["data_samples"])
    model.train()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["segformer", "deeplabv3plus"])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    import logging

    from mmengine.logging import MMLogger

    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; preset {args.preset}, "
          f"batch {args.batch_size} x {args.size}px, {args.classes} classes; median of {args.repeats}, "
          "twins timed alternately\n")
    print(f"{'arch':>14} | {'train gmm ms':>12} {'train soft ms':>13} {'ratio':>6} | "
          f"{'infer gmm ms':>12} {'infer soft ms':>13} {'ratio':>6}")
    for arch in args.arch:
        models = {}
        for head in ("gmm", "softmax"):
            model, cfg = build(arch, head, args.preset, args.classes)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            models[head] = (model, optimizer, make_batch(cfg, args.batch_size, args.size, args.classes))
        times = {(h, k): [] for h in models for k in ("train", "infer")}
        for rep in range(args.repeats + 2):  # the first two are warm-up
            for head, (model, optimizer, batch) in models.items():
                for kind, fn in (("train", lambda: train_step(model, optimizer, batch)), ("infer", lambda: infer(model, batch))):
                    start = time.perf_counter()
                    fn()
                    if rep >= 2:
                        times[(head, kind)].append(time.perf_counter() - start)
        med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
        print(f"{arch:>14} | {med[('gmm', 'train')]:>12.1f} {med[('softmax', 'train')]:>13.1f} "
              f"{med[('gmm', 'train')] / med[('softmax', 'train')]:>5.2f}x | {med[('gmm', 'infer')]:>12.1f} "
              f"{med[('softmax', 'infer')]:>13.1f} {med[('gmm', 'infer')] / med[('softmax', 'infer')]:>5.2f}x")


if __name__ == "__main__":
    main()
