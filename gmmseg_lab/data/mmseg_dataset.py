"""The on-disk layout (:mod:`gmmseg_lab.data.layout`) as an mmsegmentation data set.

Importing this module registers :class:`GMMLabDataset` in ``mmseg.registry.DATASETS``::

    import gmmseg_lab.data.mmseg_dataset  # noqa: F401  (registers 'GMMLabDataset')

    dict(type="GMMLabDataset", data_root=DIR,
         data_prefix=dict(img_path="images/train", seg_map_path="annotations/train"),
         pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                   dict(type="PackSegInputs")])

Class names and palette come from ``DIR/classes.json`` when the data set is built, so one
registered type serves the embedded set and any user's set in the same layout. Like every mmseg
data set, images are loaded BGR by ``LoadImageFromFile``; the model's data preprocessor
(``bgr_to_rgb=True``) turns them back.
"""

from __future__ import annotations

import os.path as osp
from collections.abc import Mapping
from typing import Sequence

from mmengine.registry import DefaultScope
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .layout import IMAGE_EXTENSIONS, DatasetError, list_images, read_classes

__all__ = ["GMMLabDataset"]


@DATASETS.register_module()
class GMMLabDataset(BaseSegDataset):
    """A ``BaseSegDataset`` over the gmmseg-lab layout, with classes read from ``classes.json``.

    Args:
        data_root: the data set directory holding ``classes.json``.
        img_suffix: image extension(s), matched in any case; by default any of ``.png``, ``.jpg``,
            ``.jpeg``, which the layout allows side by side. Images are listed by
            :func:`~gmmseg_lab.data.layout.list_images`, as the checker lists them: directly in the
            image folder, not in sub-folders.
        seg_map_suffix: mask extension, ``.png``.
        metainfo: optional overrides; ``classes`` may name a subset of the file's classes (mmseg
            then maps the others to 255), in which case the palette is subset to match.
        classes_file: ``classes.json`` elsewhere than ``data_root``.
        **kwargs: everything else ``BaseSegDataset`` accepts (pipeline, data_prefix, test_mode...).

    ``reduce_zero_label`` is False and ``ignore_index`` 255: label 0 is a real class here.
    """

    METAINFO: dict = dict()

    def __init__(
        self,
        data_root: str | None = None,
        img_suffix: str | Sequence[str] = IMAGE_EXTENSIONS,
        seg_map_suffix: str = ".png",
        metainfo: Mapping | None = None,
        classes_file: str | None = None,
        reduce_zero_label: bool = False,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        if classes_file is None:
            if data_root is None:
                raise ValueError("GMMLabDataset needs data_root (the folder with classes.json) or classes_file")
            classes_file = osp.join(data_root, "classes.json")
        classes, palette = read_classes(classes_file)  # validates; a DatasetError names the file
        self._file_classes = tuple(classes)
        merged = {"classes": tuple(classes), "palette": [list(c) for c in palette]}
        if metainfo is not None:
            merged.update(dict(metainfo))
            if "classes" in metainfo and "palette" not in metainfo:
                merged["palette"] = [list(c) for c in palette]  # BaseSegDataset subsets it
        # Outside a runner no default scope is set, and the pipeline's mmseg transforms
        # (LoadAnnotations, PackSegInputs) would not be found: use mmseg's scope meanwhile.
        scope = "mmseg" if DefaultScope.get_current_instance() is None else None
        with DefaultScope.overwrite_default_scope(scope):
            super().__init__(
                data_root=data_root,
                img_suffix=tuple(img_suffix) if not isinstance(img_suffix, str) else img_suffix,
                seg_map_suffix=seg_map_suffix,
                metainfo=merged,
                reduce_zero_label=reduce_zero_label,
                ignore_index=ignore_index,
                **kwargs,
            )

    def get_label_map(self, new_classes: Sequence | None = None) -> dict | None:
        """Label map from the *file's* classes to ``new_classes`` (None when they are equal).

        ``BaseSegDataset`` compares with the class attribute ``METAINFO``; here the reference
        classes are per instance, read from classes.json.
        """
        old_classes = self._file_classes
        if new_classes is None or list(new_classes) == list(old_classes):
            return None
        unknown = [c for c in new_classes if c not in old_classes]
        if unknown:
            raise ValueError(f"classes {unknown} are not in classes.json ({list(old_classes)})")
        return {i: (list(new_classes).index(c) if c in new_classes else 255) for i, c in enumerate(old_classes)}

    def load_data_list(self) -> list[dict]:
        """The images of ``data_prefix['img_path']`` as :func:`~gmmseg_lab.data.layout.list_images`
        lists them for the checker (extensions in any case, top level only), each with its mask
        ``<seg_map_path>/<stem><seg_map_suffix>``; with ``ann_file``, mmseg's own listing.

        Raises:
            DatasetError: naming the image folder, when it holds no image (mmengine would fail with
                "need at least one array to concatenate").
        """
        data_list = self._list_data()
        if not data_list:
            raise DatasetError(
                f"{self.data_prefix.get('img_path', self.data_root)}: empty split, no image ending in {self.img_suffix}"
            )
        return data_list

    def prepare_data(self, idx: int):
        """As ``BaseDataset``: the pipeline's transforms in turn, with the pair's files named on failure.

        mmcv's decoders often fail without the path (a corrupt mask gives "cannot identify image file
        <_io.BytesIO ...>"): a failure in a loading transform (``Load*``: the file is missing or cannot
        be decoded) is re-raised as a :class:`DatasetError` naming both files. A failure anywhere else
        keeps its type and traceback (it may be a bug, not bad data); a note naming the files and the
        transform is added to it.
        """
        data = self.get_data_info(idx)
        files = " and ".join(str(data[k]) for k in ("img_path", "seg_map_path") if data.get(k))
        for transform in self.pipeline.transforms:
            name = type(transform).__name__
            try:
                data = transform(data)
            except Exception as exc:
                if name.startswith("Load") and not isinstance(exc, (MemoryError, DatasetError)):
                    raise DatasetError(
                        f"{files}: failed to load ({type(exc).__name__}: {exc}); "
                        "`gmmseg-lab data check DIR` lists every broken file"
                    ) from exc
                exc.add_note(f"while preparing {files} (in {name})")
                raise
            if data is None:  # as mmengine's Compose: the data set then draws another sample
                return None
        return data

    def _list_data(self) -> list[dict]:
        if self.ann_file:
            return super().load_data_list()
        img_dir = self.data_prefix.get("img_path", None)
        ann_dir = self.data_prefix.get("seg_map_path", None)
        suffixes = (self.img_suffix,) if isinstance(self.img_suffix, str) else tuple(self.img_suffix)
        odd = [s for s in suffixes if not (s.startswith(".") and s.count(".") == 1)]
        if odd:
            raise ValueError(f"GMMLabDataset: img_suffix must be file extensions such as '.png', got {odd}")
        if img_dir is None or not osp.isdir(img_dir):
            raise DatasetError(f"{img_dir}: missing folder (the images of the split)")
        data_list = []
        for stem, image in list_images(img_dir, suffixes).files.items():
            info = dict(img_path=str(image))
            if ann_dir is not None:
                info["seg_map_path"] = osp.join(ann_dir, stem + self.seg_map_suffix)
            info["label_map"] = self.label_map
            info["reduce_zero_label"] = self.reduce_zero_label
            info["seg_fields"] = []
            data_list.append(info)
        return data_list
