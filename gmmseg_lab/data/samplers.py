"""Class-balanced image sampling, as the GMMSeg release trains: draw a class, then an image with it.

Importing this module registers :class:`ClassBalancedSampler` in mmengine's ``DATA_SAMPLERS``::

    train_dataloader = dict(sampler=dict(type='ClassBalancedSampler'), ...)

Rare classes (a traffic sign, a person) then appear in about as many training batches as the road,
which matters for a generative classifier: every class's mixture is fitted only from the pixels of
the batches that show it. Both twins of a comparison use the same sampler (the same data).
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sized

import numpy as np
import torch
from mmengine.dataset.sampler import DATA_SAMPLERS
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from gmmseg_lab.data.layout import DatasetError

__all__ = ["ClassBalancedSampler", "class_presence"]


def _read_label_map(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def class_presence(dataset, num_classes: int | None = None, progress: bool = False) -> np.ndarray:
    """Which classes each image of an mmseg data set shows: ``[num_images, num_classes]`` bool.

    Reads every annotation once (``seg_map_path`` of ``dataset.get_data_info(i)``) and applies the
    data set's own label conventions (``reduce_zero_label``, ``label_map``), so the classes are the
    ones the loss sees; 255 (ignore) is not a class.

    Args:
        dataset: an mmseg ``BaseSegDataset`` (lazy ones are fully initialised here).
        num_classes: default ``len(dataset.metainfo['classes'])``.

    Raises:
        DatasetError: a mask is missing or cannot be decoded; every such pair is named.
    """
    from tqdm.auto import tqdm

    if hasattr(dataset, "full_init"):
        dataset.full_init()
    if num_classes is None:
        num_classes = len(dataset.metainfo["classes"])
    reduce_zero = bool(getattr(dataset, "reduce_zero_label", False))
    label_map = getattr(dataset, "label_map", None) or {}
    lookup = np.arange(256, dtype=np.int64)
    if reduce_zero:  # mmseg: 0 -> 255, k -> k - 1
        lookup = np.where(lookup == 0, 255, lookup - 1)
        lookup[255] = 255
    if label_map:
        mapped = lookup.copy()
        for old, new in label_map.items():
            mapped[lookup == old] = new
        lookup = mapped
    presence = np.zeros((len(dataset), num_classes), dtype=bool)
    broken: list[str] = []
    for i in tqdm(range(len(dataset)), desc="class presence", disable=not progress, unit="img"):
        info = dataset.get_data_info(i)
        path = info.get("seg_map_path")
        if path is None:
            raise ValueError(f"ClassBalancedSampler: image {i} of the data set has no seg_map_path")
        try:
            raw = np.unique(_read_label_map(path))
        except (OSError, ValueError) as exc:  # missing, truncated or not an image (PIL's errors)
            broken.append(f"{info.get('img_path')} and {path}: failed to load ({type(exc).__name__}: {exc})")
            continue
        values = np.unique(lookup[raw[(raw >= 0) & (raw < 256)].astype(np.int64)])
        values = values[(values >= 0) & (values < num_classes)]
        presence[i, values] = True
    if broken:
        raise DatasetError(
            broken
            + ["ClassBalancedSampler reads every training mask; `gmmseg-lab data check DIR` lists every broken file"]
        )
    return presence


@DATA_SAMPLERS.register_module()
class ClassBalancedSampler(Sampler):
    """An infinite sampler for ``IterBasedTrainLoop``: draw a class uniformly, then an image with it.

    This is the release's ``"gmmseg"`` sampling mode. Classes absent from every training image are
    never drawn. The index stream depends only on ``seed`` (and the data), so a resumed run skips to
    the same position (:meth:`skip`) as mmengine's ``InfiniteSampler`` does, and under a launcher
    each rank takes every ``world_size``-th index of the one shared stream.

    Args:
        dataset: the training data set (an mmseg ``BaseSegDataset``).
        seed: the stream's seed; ``None`` draws one and syncs it across ranks (mmengine's default).
        presence: optional precomputed ``[num_images, num_classes]`` bool (see :func:`class_presence`).
        progress: show a progress bar while the annotations are read.
    """

    def __init__(
        self, dataset: Sized, seed: int | None = None, presence: np.ndarray | None = None, progress: bool = False
    ) -> None:
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.presence = class_presence(dataset, progress=progress) if presence is None else np.asarray(presence, bool)
        if self.presence.ndim != 2 or self.presence.shape[0] != len(dataset):
            raise ValueError(f"presence must be [num_images={len(dataset)}, num_classes], got {self.presence.shape}")
        self.classes = np.flatnonzero(self.presence.any(axis=0))
        if self.classes.size == 0:
            raise ValueError("ClassBalancedSampler: no training image shows any class (every label is ignored)")
        # Images of each drawable class, as tensors for the seeded torch generator.
        self._images = [torch.from_numpy(np.flatnonzero(self.presence[:, c])) for c in self.classes]
        self.size = len(dataset)
        self.indices = self._indices_of_rank()

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        chunk = max(64, self.size)
        while True:  # drawn in chunks: one generator call per chunk, not per image
            classes = torch.randint(len(self._images), (chunk,), generator=g).tolist()
            picks = torch.rand(chunk, generator=g, dtype=torch.float64).tolist()
            for cls, u in zip(classes, picks):
                images = self._images[cls]
                yield int(images[min(int(u * len(images)), len(images) - 1)])

    def _indices_of_rank(self) -> Iterator[int]:
        return itertools.islice(self._infinite_indices(), self.rank, None, self.world_size)

    def __iter__(self) -> Iterator[int]:
        yield from self.indices

    def skip(self, num_samples: int) -> None:
        """Continue from absolute position ``num_samples`` (per rank) of the stream, for resuming."""
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.indices = itertools.islice(self._indices_of_rank(), num_samples, None)

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Iteration-based: nothing to do (the stream is infinite)."""
