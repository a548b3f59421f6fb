"""Import a checkpoint of the authors' GMMSeg release into a lab work dir.

The release (leonnnop/GMMSeg: mmseg 0.22, mmcv 1.x) publishes one model, GMMSeg-SegFormer MiT-B5 on
COCO-Stuff-10K (C=171 classes, M=5 components, D=64, decode channels Ch=768). Its checkpoint is an
mmcv file ``{"meta", "state_dict", "optimizer"}`` whose ``decode_head`` keys are the release's own
(``means``, ``diagonal``, ``projection``, ``feat_norm``, ``mask_norm``, ...). :func:`import_release`
turns it into what ``gmmseg-lab train`` writes, so every command and notebook takes it::

    from gmmseg_lab.models.release import import_release
    report = import_release("GMMSeg-Segformer-b5-512x512-80k-cocostuff10k.pth", "work_dirs/release_b5")
    model, cfg = load_segmentor("work_dirs/release_b5")          # strict: every key fits

    WORK_DIR/config.py            GMMSegHead(head=SegformerHead) on MixVisionTransformer, sizes read
                                  from the tensors; the lab's data layout (GMMLabDataset), 512-px test
                                  pipeline, whole-image inference (see TEST_CFG_NOTE)
    WORK_DIR/iter_N.pth           {"state_dict", "meta"} (mmengine's layout); N = the release's iterations
    WORK_DIR/last_checkpoint      iter_N.pth (relative to the work dir, which may move)
    WORK_DIR/classes.json         the class names and palette (meta.CLASSES / PALETTE, or generic ones),
                                  in the lab's format: the classes.json a data set for this model needs
    WORK_DIR/import_report.json   what was found, mapped, left out, and every assumption made
    WORK_DIR/release_config.txt   the release's own config text (meta.config), when the file has it

Key mapping (release -> lab; every other key is refused, naming it)::

    backbone.*                                   backbone.*  (mmseg 0.x and 1.x MiT keys are the same)
    decode_head.convs.{i}.* / fusion_conv.*      unchanged   (SegformerHead's own layers)
    decode_head.projection.conv.weight, .bn.*    decode_head.gmm_project.conv.weight, .bn.*
                                                 (absent when Ch == D: the lab's projection is Identity then)
    decode_head.feat_norm.{weight,bias}          decode_head.gmm_embed_norm.{weight,bias}
    decode_head.mask_norm.{weight,bias}          decode_head.gmm_score_norm.{weight,bias}
    decode_head.means        [C, M, D]           decode_head.gmm.means, L2-normalised over D
    decode_head.diagonal     [C, M, D]           decode_head.gmm.stds (both are standard deviations)
    (none: hard max over components)             decode_head.gmm.log_weights [C, M] = -log M (uniform)
    decode_head.queue        [C*M, D, K]         decode_head.gmm.memory.queue [C*M, K, D] (transposed),
                                                 count = K per slot; or an empty placeholder memory
    decode_head.queue_ptr    [C*M]               decode_head.gmm.memory.ptr
    decode_head.iteration_counter [1]            gmm.num_updates (= iterations), gmm.num_m_steps
    decode_head.eye_matrix, conv_seg.*, optimizer    left out (no effect on the test-time logits)

Why the logits are the release's: both heads compute, per pixel of the fused feature, x =
L2(LayerNorm_D(ReLU(BN(conv1x1(feat))))), ``log N(x; L2(mu_cm), diag sigma_cm^2)``, the hard max over
the M components, then LayerNorm over the C classes (eps 1e-5 for both LayerNorms, BN eps 1e-5,
conv -> BN -> ReLU order, means normalised at every forward), see
:meth:`gmmseg_lab.models.gmm_head.GMMHeadMixin.cls_seg`. The lab's log-density is the expanded
quadratic (two matrix products) rather than the release's direct sum, equal up to float rounding.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoints import CheckpointError

__all__ = [
    "BackboneSizes",
    "ReleaseSizes",
    "DEFAULT_MAX_MEMORY_GB",
    "PLACEHOLDER_MEMORY_SIZE",
    "convert_state",
    "format_summary",
    "import_release",
    "load_release_checkpoint",
    "parse_release_config",
    "read_sizes",
    "release_state_dict",
]

#: MiT-B5's attention heads per stage (every MiT of the SegFormer paper has them); the checkpoint's
#: tensors do not tell them, its ``meta.config`` text does when present.
DEFAULT_NUM_HEADS = (1, 2, 5, 8)
#: MiT's patch-embedding strides (not visible in the tensors either).
DEFAULT_STRIDES = (4, 2, 2, 2)
#: Samples per component of the (empty) memory written when the checkpoint has no queue or it is left out.
PLACEHOLDER_MEMORY_SIZE = 100
#: A queue larger than this (float32, in 10^9 bytes) is left out unless asked for.
DEFAULT_MAX_MEMORY_GB = 2.0
#: The release's COCO-Stuff-10K schedule length (the lab's config keeps its AdamW recipe over it).
RELEASE_ITERS = 80000
#: Rows of the queue transposed per block (bounds the temporary; the output is the only full copy).
QUEUE_BLOCK_ROWS = 16
#: Why the written config infers in whole-image mode (``evaluate --slide 512 341`` slides instead).
TEST_CFG_NOTE = (
    "test_cfg: whole-image inference, as the release's COCO-Stuff config (mode='whole', test "
    "images resized to 512 on the short side); it also gives notebooks the embeddings. Slide "
    "with `gmmseg-lab evaluate --slide 512 341`. A test_cfg in meta.config is used instead."
)

_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BACKBONE_KEY = re.compile(r"backbone\.layers\.(\d+)\.([012])(?:\.|$)")
_BLOCK_KEY = re.compile(r"backbone\.layers\.(\d+)\.1\.(\d+)\.")
_CONVS_KEY = re.compile(r"decode_head\.convs\.(\d+)\.")
#: Names of the release's decode-head keys (shapes aside), for a file that is not one.
_RELEASE_HEAD_NAME = re.compile(
    r"decode_head\.(means|diagonal|eye_matrix|iteration_counter|queue|queue_ptr|conv_seg\.(weight|bias)"
    r"|(feat_norm|mask_norm)\.(weight|bias)|(projection|convs\.\d+|fusion_conv)\.conv\.weight"
    r"|(projection|convs\.\d+|fusion_conv)\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked))"
)
#: Release head keys the converter may do without (none of them affects the test-time logits).
_OPTIONAL = (
    "decode_head.eye_matrix",
    "decode_head.iteration_counter",
    "decode_head.queue",
    "decode_head.queue_ptr",
    "decode_head.conv_seg.weight",
    "decode_head.conv_seg.bias",
)


def _fail(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"cannot import {path}: {problem}")


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


# ---------------------------------------------------------------------- reading the file
def load_release_checkpoint(path: str | Path) -> tuple[Any, list[str]]:
    """The unpickled checkpoint file and notes on how it was read.

    Zip checkpoints (``torch.save`` since torch 1.6) are memory-mapped: tensors are read from disk
    when used, so a 7 GB queue costs no memory until (and unless) it is converted. The file is first
    read with ``weights_only=True`` (tensors and plain containers only); a file holding other
    objects is read again with ``weights_only=False`` and a note says so.

    Raises:
        CheckpointError: naming the file when it is missing, a directory, empty, or not a torch file.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "it does not exist")
    if path.is_dir():
        raise _fail(path, "it is a directory, not a checkpoint file")
    if not path.is_file():
        raise _fail(path, "it is not a regular file")
    if path.stat().st_size == 0:
        raise _fail(path, "it is empty (0 bytes)")
    notes: list[str] = []
    mmap = zipfile.is_zipfile(path)
    if not mmap:
        notes.append(f"{path.name} is in torch's legacy (non-zip) format: read into memory, not memory-mapped")
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True), notes
    except Exception:  # noqa: BLE001 - refused by the safe unpickler, or not a torch file: try in full
        pass
    try:
        obj = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise _fail(
            path,
            f"it is truncated, corrupt or not a torch checkpoint (torch.load failed: {type(exc).__name__}: {detail})",
        ) from None
    notes.append(
        f"{path.name} holds objects beyond tensors and plain containers: read with "
        "weights_only=False (import only files you trust)"
    )
    return obj, notes


def release_state_dict(obj: Any, path: Path) -> "OrderedDict[str, Tensor]":
    """The model tensors of an unpickled checkpoint (``state_dict`` entry, or a bare state dict), in
    the file's order, DDP's ``module.`` prefix stripped. Raises :class:`CheckpointError` otherwise."""
    if not isinstance(obj, dict):
        raise _fail(path, f"it is not a checkpoint (it holds a {type(obj).__module__}.{type(obj).__qualname__})")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not state:
        raise _fail(path, "it is not a checkpoint (no 'state_dict' of tensors)")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            what = (
                "its 'state_dict' is not a dict of tensors"
                if "state_dict" in obj
                else "it is not a checkpoint (a dict without 'state_dict')"
            )
            raise _fail(path, f"{what}: its entry {key!r} is a {type(value).__name__}, not a tensor")
    return OrderedDict((re.sub(r"^module\.", "", k), v) for k, v in state.items())


# ---------------------------------------------------------------------- sizes from the tensors
@dataclass(frozen=True)
class BackboneSizes:
    """The MixVisionTransformer a checkpoint's ``backbone.*`` tensors describe (one entry per stage)."""

    in_channels: int
    embed_dims: tuple[int, ...]  # E_i, from backbone.layers.{i}.0.projection.weight [E_i, in_i, p_i, p_i]
    num_layers: tuple[int, ...]  # blocks per stage, from the indices j of backbone.layers.{i}.1.{j}.*
    patch_sizes: tuple[int, ...]  # p_i
    sr_ratios: tuple[int, ...]  # from attn.sr.weight [E_i, E_i, sr_i, sr_i]; 1 where absent
    mlp_ratio: int  # ffn.layers.0.weight [mlp_ratio * E_i, E_i, 1, 1]
    qkv_bias: bool  # attn.attn.in_proj_bias present


@dataclass(frozen=True)
class ReleaseSizes:
    """What the release's ``decode_head`` tensors say: C, M, D from ``means`` [C, M, D], Ch from
    ``fusion_conv.conv.weight`` [Ch, n*Ch, 1, 1], in_channels from ``convs.{i}.conv.weight``
    [Ch, in_i, 1, 1]; the queue's K from ``queue`` [C*M, D, K] (None without one)."""

    num_classes: int
    num_components: int
    embed_dim: int
    channels: int
    in_channels: tuple[int, ...]
    projection: bool
    memory_size: int | None
    backbone: BackboneSizes


def _not_release_problem(state: "OrderedDict[str, Tensor]") -> str:
    """Why a state dict without ``decode_head.means`` is not the release's, naming what it holds."""
    outside = next((k for k in state if not (_BACKBONE_KEY.match(k) or _RELEASE_HEAD_NAME.fullmatch(k))), None)
    text = "no decode_head.means: not a GMMSeg release checkpoint"
    if "decode_head.gmm.means" in state:
        text += (
            "; it has decode_head.gmm.means: a gmmseg-lab checkpoint already (evaluate it as it is, with "
            "the config.py of its work dir)"
        )
    elif "decode_head.conv_seg.weight" in state:
        text += (
            "; it has decode_head.conv_seg.weight and no mixture: a softmax segmentor (start a GMM model "
            "from it with `gmmseg-lab train --init-from`)"
        )
    if outside is not None:
        text += f"; its first key outside the release's layout: {outside}"
    return text


def _expected_head_shapes(
    c: int, m: int, d: int, ch: int, in_channels: tuple[int, ...], projection: bool
) -> "OrderedDict[str, tuple]":
    """Every key of the release's ``SegformerGMMSegHead`` in mmcv's order (own parameters, own
    buffers, then children as registered), with its shape; ``None`` marks a free dimension."""
    shapes: OrderedDict[str, tuple] = OrderedDict()
    p = "decode_head."
    shapes[p + "means"] = (c, m, d)
    shapes[p + "diagonal"] = (c, m, d)
    shapes[p + "eye_matrix"] = (d,)
    shapes[p + "iteration_counter"] = (1,)
    shapes[p + "queue"] = (c * m, d, None)
    shapes[p + "queue_ptr"] = (c * m,)
    shapes[p + "conv_seg.weight"] = (c, ch, 1, 1)
    shapes[p + "conv_seg.bias"] = (c,)

    def conv_module(name: str, out: int, inp: int) -> None:
        shapes[f"{p}{name}.conv.weight"] = (out, inp, 1, 1)
        for param in _BN_PARAMS:
            shapes[f"{p}{name}.bn.{param}"] = () if param == "num_batches_tracked" else (out,)

    if projection:
        conv_module("projection", d, ch)
    for name, size in (("feat_norm", d), ("mask_norm", c)):
        shapes[f"{p}{name}.weight"] = (size,)
        shapes[f"{p}{name}.bias"] = (size,)
    for i, inp in enumerate(in_channels):
        conv_module(f"convs.{i}", ch, inp)
    conv_module("fusion_conv", ch, len(in_channels) * ch)
    return shapes


def _fits(shape: tuple[int, ...], expected: tuple) -> bool:
    return len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))


def _show(expected: tuple) -> str:
    """``expected`` as a shape, ``*`` for a free dimension (the queue's K, a conv's input width)."""
    return "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"


def _backbone_sizes(state: "OrderedDict[str, Tensor]", path: Path) -> BackboneSizes:
    """The MiT's sizes from the ``backbone.layers.{i}.*`` keys (the keys are checked one by one
    against the MiT built from these sizes later, :func:`_check_fits_model`)."""
    stages = sorted({int(_BACKBONE_KEY.match(k).group(1)) for k in state if k.startswith("backbone.")})
    if not stages:
        raise _fail(path, "no backbone.layers.* keys: not the release's GMMSeg-SegFormer (MixVisionTransformer)")
    if stages != list(range(len(stages))):
        missing = next(i for i in range(len(stages)) if i not in stages)
        raise _fail(path, f"no backbone.layers.{missing}.* keys, but stage {max(stages)} has some")
    embed, patches, blocks, srs, mlps = [], [], [], [], []
    in_channels = None
    for i in stages:
        key = f"backbone.layers.{i}.0.projection.weight"
        if key not in state:
            raise _fail(path, f"no {key}: stage {i} of the MixVisionTransformer has no patch embedding")
        w = state[key]
        if w.dim() != 4 or w.shape[2] != w.shape[3] or (i > 0 and w.shape[1] != embed[-1]):
            inp = "C_in" if i == 0 else str(embed[-1])
            raise _fail(path, f"{key}: shape {_shape(w)}, expected (E_{i}, {inp}, p, p) for a MixVisionTransformer")
        if i == 0:
            in_channels = int(w.shape[1])
        embed.append(int(w.shape[0]))
        patches.append(int(w.shape[2]))
        indices = {int(mt.group(2)) for k in state if (mt := _BLOCK_KEY.match(k)) and int(mt.group(1)) == i}
        blocks.append(max(indices) + 1 if indices else 0)
        sr = state.get(f"backbone.layers.{i}.1.0.attn.sr.weight")
        srs.append(int(sr.shape[-1]) if sr is not None and sr.dim() == 4 else 1)
        fc1 = state.get(f"backbone.layers.{i}.1.0.ffn.layers.0.weight")
        if fc1 is not None:
            mlps.append((f"backbone.layers.{i}.1.0.ffn.layers.0.weight", int(fc1.shape[0]), embed[-1]))
    ratios = {hidden // e for _, hidden, e in mlps if hidden % e == 0}
    if len(ratios) != 1 or any(hidden % e for _, hidden, e in mlps):
        key = mlps[-1][0] if mlps else "backbone.layers.0.1.0.ffn.layers.0.weight"
        raise _fail(
            path,
            f"{key}: the feed-forward widths {[h for _, h, _ in mlps]} are not one mlp_ratio times the "
            f"embed dims {embed}, as MixVisionTransformer's",
        )
    return BackboneSizes(
        in_channels=in_channels,
        embed_dims=tuple(embed),
        num_layers=tuple(blocks),
        patch_sizes=tuple(patches),
        sr_ratios=tuple(srs),
        mlp_ratio=ratios.pop(),
        qkv_bias="backbone.layers.0.1.0.attn.attn.in_proj_bias" in state,
    )


def read_sizes(state: "OrderedDict[str, Tensor]", path: Path) -> ReleaseSizes:
    """Check ``state`` against the release's layout and read its sizes.

    Checks, in this order, each naming the key: ``decode_head.means`` and ``fusion_conv`` exist;
    every key, in the file's order, is a release key of the right shape (``backbone.layers.*``
    by name here, by shape in :func:`_check_fits_model`); every required key is there; the values
    the logits need are usable (finite means, positive finite standard deviations, queue pointers in
    range). The first key that does not fit raises :class:`CheckpointError`.
    """
    if "decode_head.means" not in state:
        raise _fail(path, _not_release_problem(state))
    means = state["decode_head.means"]
    if means.dim() != 3:
        raise _fail(
            path,
            f"decode_head.means: shape {_shape(means)}, expected (C, M, D) (classes, components, embedding dimension)",
        )
    c, m, d = _shape(means)
    fusion = state.get("decode_head.fusion_conv.conv.weight")
    if fusion is None:
        raise _fail(path, "no decode_head.fusion_conv.conv.weight: not the release's SegFormer GMMSeg head")
    if fusion.dim() != 4:
        raise _fail(path, f"decode_head.fusion_conv.conv.weight: shape {_shape(fusion)}, expected (Ch, n*Ch, 1, 1)")
    ch = int(fusion.shape[0])
    convs = sorted({int(mt.group(1)) for k in state if (mt := _CONVS_KEY.match(k))})
    n = max(convs) + 1 if convs else 0
    weights = [state.get(f"decode_head.convs.{i}.conv.weight") for i in range(n)]
    # in_i is free in the shape check (any input width fits the head); the backbone decides it below.
    in_channels = tuple(int(w.shape[1]) if w is not None and w.dim() == 4 else None for w in weights)
    projection = ch != d
    expected = _expected_head_shapes(c, m, d, ch, in_channels, projection)

    for key, value in state.items():
        if key.startswith("backbone."):
            if not _BACKBONE_KEY.match(key):
                raise _fail(
                    path,
                    f"{key}: not a MixVisionTransformer key (backbone.layers.{{stage}}.{{0,1,2}}.*): "
                    "the release's GMMSeg-SegFormer has no other backbone",
                )
            continue
        if key not in expected:
            if key.startswith("decode_head.projection.") and not projection:
                raise _fail(
                    path,
                    f"{key}: the release has a projection only when channels != embed_dim, but "
                    f"both are {d} (fusion_conv [Ch={ch}], means [.., D={d}])",
                )
            raise _fail(
                path,
                f"{key}: not a key of the release's layout (backbone.*, and decode_head.means, "
                "diagonal, projection, feat_norm, mask_norm, convs, fusion_conv, queue...)",
            )
        if not _fits(_shape(value), expected[key]):
            raise _fail(
                path,
                f"{key}: shape {_shape(value)}, but {_show(expected[key])} fits the other tensors "
                f"(C={c}, M={m}, D={d} from decode_head.means {_shape(means)}, Ch={ch} from "
                f"decode_head.fusion_conv.conv.weight {_shape(fusion)})",
            )
    for key in expected:
        if key not in state and key not in _OPTIONAL and not key.endswith(".num_batches_tracked"):
            raise _fail(path, f"no {key}: the release's SegFormer GMMSeg head has it (C={c}, M={m}, D={d}, Ch={ch})")
    if n == 0:
        raise _fail(path, "no decode_head.convs.*: not the release's SegFormer GMMSeg head")

    backbone = _backbone_sizes(state, path)
    stages = len(backbone.embed_dims)
    if n != stages:
        raise _fail(
            path,
            f"decode_head.convs.{n - 1}.conv.weight: the head has {n} inputs (convs.0 .. convs.{n - 1}) "
            f"but the backbone has {stages} stages (backbone.layers.0 .. {stages - 1})",
        )
    for i in range(n):
        if in_channels[i] != backbone.embed_dims[i]:
            raise _fail(
                path,
                f"decode_head.convs.{i}.conv.weight: shape {_shape(weights[i])}, but stage {i} of the "
                f"backbone gives {backbone.embed_dims[i]} channels "
                f"(backbone.layers.{i}.0.projection.weight)",
            )
    _check_values(state, path)
    queue = state.get("decode_head.queue")
    return ReleaseSizes(
        num_classes=c,
        num_components=m,
        embed_dim=d,
        channels=ch,
        in_channels=in_channels,
        projection=projection,
        memory_size=int(queue.shape[2]) if queue is not None else None,
        backbone=backbone,
    )


def _check_values(state: "OrderedDict[str, Tensor]", path: Path) -> None:
    """The values the test-time logits read must be usable: finite tensors, positive stds, pointers
    within the queue. ``queue`` itself is not read here (it may be gigabytes)."""
    for key, value in state.items():
        if key == "decode_head.queue" or not value.is_floating_point():
            continue
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise _fail(path, f"{key}: {bad} of its {value.numel()} values are NaN or infinite")
    stds = state["decode_head.diagonal"]
    low = int((stds <= 0).sum())
    if low:
        raise _fail(
            path,
            f"decode_head.diagonal: {low} of its {stds.numel()} values are <= 0; the release "
            "stores standard deviations (>= 0.1 after its EM), which must be positive",
        )
    ptr, queue = state.get("decode_head.queue_ptr"), state.get("decode_head.queue")
    if ptr is not None and queue is not None:
        k = int(queue.shape[2])
        if ptr.is_floating_point() or bool(((ptr < 0) | (ptr >= k)).any()):
            raise _fail(
                path,
                f"decode_head.queue_ptr: write pointers must be integers in [0, {k}) (the queue's K), "
                f"got {ptr.dtype} {ptr.min().item()}..{ptr.max().item()}",
            )


# ---------------------------------------------------------------------- the release's config text
class _NotLiteral(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    """The value of a config expression made of literals and ``dict(...)`` calls; anything else
    (names, other calls, operators) raises :class:`_NotLiteral`. Nothing is executed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _NotLiteral("dict unpacking")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(kw.arg is None for kw in node.keywords):
            raise _NotLiteral("dict(**...)")
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise _NotLiteral(type(node).__name__)


def parse_release_config(text: str) -> dict[str, Any]:
    """The top-level assignments of an mmcv config text (``cfg.pretty_text``, as ``meta.config``
    holds it) whose values are literals or ``dict(...)``; the rest (``gpu_ids = range(...)``) is
    skipped. Parsed with :mod:`ast`, never executed. Text that is not Python gives ``{}``."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                out[stmt.targets[0].id] = _literal(stmt.value)
            except (_NotLiteral, RecursionError):
                continue
    return out


def _get(cfg: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(cfg, dict) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg


def _int_list(value: Any, n: int) -> list[int] | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return [int(v) for v in value]
    return None


def _num_heads(embed: tuple[int, ...], release_cfg: dict, notes: list[str], path: Path) -> tuple[list[int], str]:
    """Attention heads per stage: ``meta.config``'s when they fit ``E_i = embed_dims * num_heads[i]``
    (mmseg's MiT), else MiT-B5's default, else ``E_i / E_0``; returns them and where they came from."""
    n = len(embed)

    def fits(heads: list[int] | None) -> bool:
        return (
            heads is not None
            and embed[0] % heads[0] == 0
            and all(embed[i] == embed[0] // heads[0] * heads[i] for i in range(n))
        )

    given = _int_list(_get(release_cfg, "model", "backbone", "num_heads"), n)
    if given is not None and fits(given):
        return given, "meta.config"
    if given is not None:
        notes.append(
            f"meta.config's backbone num_heads {given} do not fit the embed dims {list(embed)} "
            "(E_i = embed_dims * num_heads[i]): ignored"
        )
    why = "the checkpoint's meta has no config text" if not release_cfg else "meta.config does not give them"
    default = list(DEFAULT_NUM_HEADS) if n == len(DEFAULT_NUM_HEADS) else None
    if fits(default):
        notes.append(
            f"num_heads: MiT-B5's default {default} assumed ({why}; the tensors do not show the attention "
            "heads, which change the features: check them against the model's config)"
        )
        return default, "default (MiT-B5)"
    if all(e % embed[0] == 0 for e in embed):
        derived = [e // embed[0] for e in embed]
        notes.append(
            f"num_heads: {derived} assumed, one head per {embed[0]} channels ({why}; MiT-B5's "
            f"{list(DEFAULT_NUM_HEADS)} do not fit the embed dims {list(embed)})"
        )
        return derived, "derived (E_i / E_0)"
    raise _fail(
        path,
        f"backbone.layers.0.0.projection.weight: embed dims {list(embed)} are no MixVisionTransformer's "
        "without the model's num_heads (E_i = embed_dims * num_heads[i]) and meta.config does not "
        "give them",
    )


def _test_cfg(release_cfg: dict, notes: list[str]) -> dict:
    """``model.test_cfg`` of ``meta.config`` when it is a valid whole / slide setting, else whole."""
    given = _get(release_cfg, "model", "test_cfg")
    if isinstance(given, dict) and given.get("mode") == "whole":
        return dict(mode="whole")
    if isinstance(given, dict) and given.get("mode") == "slide":
        crop, stride = _int_list(given.get("crop_size"), 2), _int_list(given.get("stride"), 2)
        if crop and stride:
            notes.append(f"test_cfg: slide inference, crop {crop}, stride {stride}, as meta.config's")
            return dict(mode="slide", crop_size=tuple(crop), stride=tuple(stride))
    notes.append(TEST_CFG_NOTE)
    return dict(mode="whole")


def _class_names(meta: Any, c: int, notes: list[str]) -> tuple[list[str], list[list[int]]]:
    """Class names and palette from ``meta.CLASSES`` / ``meta.PALETTE`` (each used when it has C
    entries of the right kind), else ``class_0 ...`` and a fixed pseudo-random palette."""
    meta = meta if isinstance(meta, dict) else {}
    classes = meta.get("CLASSES")
    if (
        isinstance(classes, (list, tuple))
        and len(classes) == c
        and all(isinstance(x, str) and x for x in classes)
        and len(set(classes)) == c
    ):
        names = list(classes)
    else:
        names = [f"class_{i}" for i in range(c)]
        found = "absent" if classes is None else f"not {c} distinct names"
        notes.append(
            f"class names: meta.CLASSES {found}; generic names class_0 .. class_{c - 1} written "
            "(edit classes.json and the checkpoint's meta to name them)"
        )
    palette = meta.get("PALETTE")
    colours = None
    if isinstance(palette, (list, tuple)) and len(palette) == c:
        try:
            colours = [[int(v) for v in rgb] for rgb in palette]
        except (TypeError, ValueError):
            colours = None
        if colours is not None and not all(len(rgb) == 3 and all(0 <= v <= 255 for v in rgb) for rgb in colours):
            colours = None
    if colours is None:
        gen = torch.Generator().manual_seed(0)
        colours = torch.randint(0, 256, (c, 3), generator=gen).tolist()
        notes.append(
            f"palette: meta.PALETTE {'absent' if palette is None else 'unusable'}; a fixed random palette written"
        )
    return names, colours


# ---------------------------------------------------------------------- the config
def _read_base(name: str) -> dict:
    """A lab base config file (``configs/_base_/...``) as a plain dict."""
    from mmengine.config import Config

    from .presets import CONFIG_DIR

    return Config.fromfile(str(CONFIG_DIR / "_base_" / name), import_custom_modules=False).to_dict()


def _lab_config(
    sizes: ReleaseSizes,
    num_heads: list[int],
    release_cfg: dict,
    memory_size: int,
    update_interval: int,
    test_cfg: dict,
    work_dir: Path,
) -> dict:
    """The lab config of the converted model as a dict: the release's network with the sizes read
    from the checkpoint, the lab's runtime, the lab's data layout at 512 px, the lab's SegFormer
    recipe (AdamW) over the release's 80k iterations for anyone who fine-tunes it."""
    b = sizes.backbone
    n = len(b.embed_dims)
    strides = _int_list(_get(release_cfg, "model", "backbone", "strides"), n) or (
        list(DEFAULT_STRIDES) if n == len(DEFAULT_STRIDES) else [4] + [2] * (n - 1)
    )
    drop_path = _get(release_cfg, "model", "backbone", "drop_path_rate")
    align = _get(release_cfg, "model", "decode_head", "align_corners")
    norm = _get(release_cfg, "img_norm_cfg") or {}
    mean, std = norm.get("mean"), norm.get("std")
    if not (isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) == 3):
        mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    norm_cfg = dict(type="SyncBN", requires_grad=True)  # the release's; load_segmentor reverts it to BN
    crop = (512, 512)
    model = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            mean=list(mean),
            std=list(std),
            bgr_to_rgb=bool(norm.get("to_rgb", True)),
            pad_val=0,
            seg_pad_val=255,
            size=crop,
        ),
        pretrained=None,
        backbone=dict(
            type="MixVisionTransformer",
            in_channels=b.in_channels,
            embed_dims=b.embed_dims[0] // num_heads[0],
            num_stages=n,
            num_layers=list(b.num_layers),
            num_heads=num_heads,
            patch_sizes=list(b.patch_sizes),
            strides=strides,
            sr_ratios=list(b.sr_ratios),
            out_indices=tuple(range(n)),
            mlp_ratio=b.mlp_ratio,
            qkv_bias=b.qkv_bias,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=float(drop_path) if isinstance(drop_path, (int, float)) else 0.1,
        ),
        decode_head=dict(
            type="GMMSegHead",
            head=dict(
                type="SegformerHead",
                in_channels=list(sizes.in_channels),
                in_index=list(range(n)),
                channels=sizes.channels,
                dropout_ratio=0.1,
                num_classes=sizes.num_classes,
                norm_cfg=norm_cfg,
                align_corners=bool(align) if isinstance(align, bool) else False,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
            ),
            num_components=sizes.num_components,
            embed_dim=sizes.embed_dim,
            projection="conv_bn_relu",
            gmm_cfg=dict(memory_size=memory_size, update_interval=update_interval),
        ),
        train_cfg=dict(),
        test_cfg=test_cfg,
    )
    data_root = "data/set"  # any data set in the lab's layout with these classes; `evaluate --data` sets it
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=(2048, 512), keep_ratio=True),
        dict(type="LoadAnnotations"),
        dict(type="PackSegInputs"),
    ]

    def dataset(split: str, pipeline: list) -> dict:
        return dict(
            type="GMMLabDataset",
            data_root=data_root,
            data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
            pipeline=pipeline,
        )

    cfg = _read_base("default_runtime.py")
    cfg.update(_read_base("schedules/adamw_160k.py"))
    cfg.update(
        model=model,
        data_root=data_root,
        crop_size=crop,
        norm_cfg=norm_cfg,
        train_pipeline=train_pipeline,
        test_pipeline=test_pipeline,
        train_dataloader=dict(
            batch_size=2,
            num_workers=2,
            persistent_workers=True,
            sampler=dict(type="ClassBalancedSampler"),
            dataset=dataset("train", train_pipeline),
        ),
        val_dataloader=dict(
            batch_size=1,
            num_workers=2,
            persistent_workers=True,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dataset("val", test_pipeline),
        ),
        val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        work_dir=str(work_dir),
    )
    cfg["test_dataloader"] = copy.deepcopy(cfg["val_dataloader"])
    cfg["test_evaluator"] = copy.deepcopy(cfg["val_evaluator"])
    cfg["train_cfg"] = dict(type="IterBasedTrainLoop", max_iters=RELEASE_ITERS, val_interval=8000)
    cfg["param_scheduler"] = [
        dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
        dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=RELEASE_ITERS, by_epoch=False),
    ]
    cfg["default_hooks"]["checkpoint"]["interval"] = 8000
    return cfg


def _config_text(cfg: dict, source: Path, num_heads_from: str) -> str:
    """``config.py``: a header saying where it comes from, then mmengine's text of ``cfg``."""
    from mmengine.config import Config

    header = (
        f"# Imported by `gmmseg-lab import-release` from {source.name} (the authors' GMMSeg release,\n"
        "# mmseg 0.x): the release's network with the sizes read from its tensors, in the lab's\n"
        f"# GMMSegHead(head=SegformerHead) form; num_heads: {num_heads_from}. import_report.json beside\n"
        "# this file lists what was found, mapped and left out. data_root: a data set in the lab's\n"
        "# layout whose classes.json lists these classes (the classes.json beside this file).\n"
        "# Inference: whole images resized to 512 on the short side (the release's COCO-Stuff test\n"
        "# setting); `gmmseg-lab evaluate --slide 512 341` slides 512-px windows instead.\n"
    )
    return header + Config(cfg).pretty_text


# ---------------------------------------------------------------------- the tensors
def _transposed_queue(queue: Tensor) -> Tensor:
    """The release's memory ``[C*M, D, K]`` as the lab's ``[C*M, K, D]`` float32, written block by
    block into one new tensor: the source (memory-mapped) is read a few rows at a time, so the
    output is the only full copy ever held."""
    slots, d, k = _shape(queue)
    out = torch.empty((slots, k, d), dtype=torch.float32)
    for start in range(0, slots, QUEUE_BLOCK_ROWS):
        stop = min(start + QUEUE_BLOCK_ROWS, slots)
        out[start:stop].copy_(queue[start:stop].transpose(1, 2))
    return out


def _as_float(t: Tensor) -> Tensor:
    return t.to(torch.float32) if t.is_floating_point() else t


def convert_state(
    state: "OrderedDict[str, Tensor]",
    sizes: ReleaseSizes,
    *,
    memory_size: int,
    import_queue: bool,
    num_updates: int,
    num_m_steps: int,
) -> tuple["OrderedDict[str, Tensor]", dict[str, str]]:
    """The lab's state dict of the release's tensors (the table of the module docstring), in the
    lab model's key order, and ``{lab key: the release key it came from}``.

    Args:
        state: the release's state dict (checked by :func:`read_sizes`).
        memory_size: samples per component of the lab's memory: the queue's K with ``import_queue``,
            else the size of an empty placeholder memory.
        import_queue: convert ``decode_head.queue`` [C*M, D, K] into the memory [C*M, K, D].
        num_updates, num_m_steps: the GMM's counters (``gmm.num_updates``, ``gmm.num_m_steps``).
    """
    c, m, d = sizes.num_classes, sizes.num_components, sizes.embed_dim
    out: OrderedDict[str, Tensor] = OrderedDict()
    origin: dict[str, str] = {}

    def put(lab: str, value: Tensor, release: str) -> None:
        out[lab] = value
        origin[lab] = release

    for key, value in state.items():
        if key.startswith("backbone."):
            put(key, _as_float(value), key)
    head = "decode_head."

    def conv_module(release: str, lab: str) -> None:
        weight = f"{head}{release}.conv.weight"
        put(f"{head}{lab}.conv.weight", _as_float(state[weight]), weight)
        for param in _BN_PARAMS:
            key = f"{head}{release}.bn.{param}"
            value = state.get(key, torch.tensor(0, dtype=torch.long))  # an old mmcv file may lack the counter
            put(f"{head}{lab}.bn.{param}", _as_float(value), key)

    for i in range(len(sizes.in_channels)):
        conv_module(f"convs.{i}", f"convs.{i}")
    conv_module("fusion_conv", "fusion_conv")
    if sizes.projection:
        conv_module("projection", "gmm_project")
    for param in ("weight", "bias"):
        put(f"{head}gmm_embed_norm.{param}", _as_float(state[f"{head}feat_norm.{param}"]), f"{head}feat_norm.{param}")
    gmm = head + "gmm."
    # The release normalises the means at every forward: store them as it uses them.
    put(gmm + "means", torch.nn.functional.normalize(state[head + "means"].to(torch.float32), dim=-1), head + "means")
    put(gmm + "stds", _as_float(state[head + "diagonal"]).clone(), head + "diagonal")
    put(gmm + "log_weights", torch.full((c, m), -math.log(m)), "(none: uniform weights, hard max over components)")
    counter = head + "iteration_counter"
    put(gmm + "num_updates", torch.tensor(num_updates, dtype=torch.long), counter)
    put(gmm + "num_m_steps", torch.tensor(num_m_steps, dtype=torch.long), counter)
    put(gmm + "seen", torch.zeros(c, dtype=torch.bool), "(none: no class awaits an M-step)")
    if import_queue:
        queue = state[head + "queue"]
        k = int(queue.shape[2])
        put(gmm + "memory.queue", _transposed_queue(queue), head + "queue")
        ptr = state.get(head + "queue_ptr")
        put(
            gmm + "memory.ptr",
            ptr.to(torch.long).clone() if ptr is not None else torch.zeros(c * m, dtype=torch.long),
            head + "queue_ptr",
        )
        put(gmm + "memory.count", torch.full((c * m,), k, dtype=torch.long), head + "queue")
    else:
        put(gmm + "memory.queue", torch.zeros(c * m, memory_size, d), "(none: empty placeholder memory)")
        put(gmm + "memory.ptr", torch.zeros(c * m, dtype=torch.long), "(none: empty placeholder memory)")
        put(gmm + "memory.count", torch.zeros(c * m, dtype=torch.long), "(none: empty placeholder memory)")
    for param in ("weight", "bias"):
        put(f"{head}gmm_score_norm.{param}", _as_float(state[f"{head}mask_norm.{param}"]), f"{head}mask_norm.{param}")
    return out, origin


def _check_fits_model(
    cfg_text: str, state: "OrderedDict[str, Tensor]", origin: dict[str, str], sizes: ReleaseSizes, path: Path
) -> None:
    """Build the lab model of ``cfg_text`` (with a 1-sample memory: no gigabyte buffer) and check that
    ``state`` fits it key for key and shape for shape, as ``load_segmentor`` will load it (strictly).
    A release key that does not fit (a backbone tensor of another shape...) is named."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = Config.fromstring(cfg_text, file_format=".py")
    probe = copy.deepcopy(cfg.model)
    probe.decode_head.gmm_cfg.memory_size = 1
    init_default_scope("mmseg")
    expected = MODELS.build(probe).state_dict()
    b = sizes.backbone
    mit = (
        f"a MixVisionTransformer of embed dims {list(b.embed_dims)}, layers {list(b.num_layers)}, patch sizes "
        f"{list(b.patch_sizes)}, sr ratios {list(b.sr_ratios)}, mlp ratio {b.mlp_ratio} (read from the checkpoint)"
    )
    queue = "decode_head.gmm.memory.queue"
    for key, value in state.items():
        where = origin[key]
        if key not in expected:
            raise _fail(
                path,
                f"{where}: not a key of {mit}"
                if key.startswith("backbone.")
                else f"{where}: the lab's model has no {key} (a converter bug)",
            )
        want = _shape(expected[key])
        got = _shape(value)
        if key == queue:
            want, got = (want[0], want[2]), (got[0], got[2])
        if got != want:
            what = mit if key.startswith("backbone.") else "the lab's model"
            raise _fail(path, f"{where}: shape {_shape(value)}, but {what} has {tuple(expected[key].shape)}")
    missing = [k for k in expected if k not in state]
    if missing:
        raise _fail(
            path,
            f"no {missing[0]}: {mit} has it" + (f" (and {len(missing) - 1} more keys)" if len(missing) > 1 else ""),
        )


# ---------------------------------------------------------------------- the entry point
def _iterations(state: "OrderedDict[str, Tensor]", meta: Any) -> int | None:
    """Training iterations: ``iteration_counter``, else ``meta.iter + 1`` (mmcv saves the 0-based
    index of the last iteration), else None."""
    counter = state.get("decode_head.iteration_counter")
    if counter is not None and counter.numel() == 1 and float(counter) >= 0:
        return int(round(float(counter)))
    if isinstance(meta, dict) and isinstance(meta.get("iter"), int) and meta["iter"] >= 0:
        return meta["iter"] + 1
    return None


def _left_out(
    obj: Any, state: "OrderedDict[str, Tensor]", queue_imported: bool, queue_why: str | None
) -> list[dict[str, str]]:
    """What the work dir does not keep, one entry per key (or group of keys), with why."""
    out = []
    conv_seg = [k for k in state if k.startswith("decode_head.conv_seg.")]
    if conv_seg:
        out.append(
            dict(
                key="decode_head.conv_seg.*",
                why="the release's softmax classifier from BaseDecodeHead: never "
                "used by its forward (left at its initialisation)",
            )
        )
    if "decode_head.eye_matrix" in state:
        out.append(
            dict(
                key="decode_head.eye_matrix",
                why="all ones, used only in the release's M-step (variance + "
                "0.01 * eye): the lab's var_floor=0.01 is the same",
            )
        )
    if "decode_head.iteration_counter" in state:
        out.append(
            dict(
                key="decode_head.iteration_counter",
                why="the tensor itself: its value became gmm.num_updates, gmm.num_m_steps and the file's N",
            )
        )
    if "decode_head.queue" not in state:
        out.append(dict(key="decode_head.queue", why="absent in the checkpoint: an empty placeholder memory written"))
        if "decode_head.queue_ptr" in state:
            out.append(dict(key="decode_head.queue_ptr", why="its queue is absent"))
    elif not queue_imported:
        out.append(dict(key="decode_head.queue", why=queue_why or "left out"))
        if "decode_head.queue_ptr" in state:
            out.append(dict(key="decode_head.queue_ptr", why="its queue is left out"))
    if isinstance(obj, dict) and "state_dict" in obj:
        for key in obj:
            if key == "optimizer":
                out.append(dict(key="optimizer", why="the release's AdamW state: a fine-tuning run starts its own"))
            elif key not in ("state_dict", "meta"):
                out.append(dict(key=str(key), why="not a part of the model"))
    return out


def _check_out(out: Path) -> None:
    """``out`` must be a new or empty folder (raises ``FileExistsError`` otherwise)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory; give a new folder for the work dir")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; give a new or empty folder for the work dir")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"{out}: {parent} is a file, not a directory")
            break


def _write_work_dir(out: Path, files: dict[str, Any]) -> None:
    """Write ``files`` (name -> str, or a checkpoint dict for ``*.pth``) into a temporary sibling of
    ``out``, then rename it onto ``out``: an interrupted import leaves no half-written work dir."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        for name, content in files.items():
            if name.endswith(".pth"):
                torch.save(content, tmp / name)
            else:
                (tmp / name).write_text(content, encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # empty (checked): replaced by the new work dir
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class _MemoryPlan:
    """What becomes of the release's queue: imported (``size`` = its K) or an empty placeholder."""

    imported: bool
    size: int  # samples per component of the lab's memory
    gigabytes: float | None  # the queue's float32 size, None without one
    why_left_out: str | None


def _memory_plan(
    sizes: ReleaseSizes,
    state: "OrderedDict[str, Tensor]",
    max_memory_gb: float,
    memory_size: int | None,
    notes: list[str],
) -> _MemoryPlan:
    """Import the queue ``[C*M, D, K]`` when its float32 copy is at most ``max_memory_gb`` x 10^9
    bytes; otherwise (or without one) an empty memory of ``memory_size`` samples per component."""
    c, m, d, k = sizes.num_classes, sizes.num_components, sizes.embed_dim, sizes.memory_size
    placeholder = memory_size or PLACEHOLDER_MEMORY_SIZE
    if k is None:
        notes.append(
            f"memory: the checkpoint has no decode_head.queue; an empty placeholder memory of {placeholder} "
            "samples per component written (the logits do not read it; to fine-tune, set "
            "gmm_cfg.memory_size, e.g. the release's 32000, and start a new run from these weights)"
        )
        return _MemoryPlan(False, placeholder, None, None)
    gigabytes = c * m * d * k * 4 / 1e9
    if gigabytes > max_memory_gb:
        why = (
            f"{gigabytes:.2f} GB in float32, over --max-memory-gb {max_memory_gb:g}; an empty placeholder memory "
            f"of {placeholder} samples per component written instead"
        )
        notes.append(f"memory: decode_head.queue left out ({why})")
        return _MemoryPlan(False, placeholder, gigabytes, why)
    notes.append(
        f"memory: decode_head.queue [{c * m}, {d}, {k}] imported as the FIFO memory [{c * m}, {k}, {d}] with "
        f"count = {k} in every slot: the release starts each queue as random unit vectors, and the lab counts "
        "every slot as data (random ones included, as the release's M-step averages them)"
    )
    if "decode_head.queue_ptr" not in state:
        notes.append("memory: no decode_head.queue_ptr; the write pointers start at 0")
    return _MemoryPlan(True, k, gigabytes, None)


def _release_meta(obj: Any, notes: list[str]) -> tuple[dict | None, str | None, dict]:
    """``(meta, meta.config text, that text parsed)`` of an mmcv checkpoint (Nones and ``{}`` where absent)."""
    meta = obj.get("meta") if isinstance(obj, dict) and "state_dict" in obj else None
    meta = meta if isinstance(meta, dict) else None
    text = meta.get("config") if meta else None
    text = text if isinstance(text, str) else None
    parsed = parse_release_config(text) if text is not None else {}
    if text is not None and not parsed:
        notes.append("meta.config is not a config text this importer can read: defaults used")
    return meta, text, parsed


def _found(
    sizes: ReleaseSizes,
    cfg: dict,
    plan: _MemoryPlan,
    meta: dict | None,
    config_text: str | None,
    kept_meta: dict,
    iterations: int | None,
    heads_from: str,
    obj: Any,
) -> dict[str, Any]:
    """The report's ``found``: sizes, backbone, memory, meta, iterations, the file's top-level entries."""
    backbone = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(sizes.backbone).items()}
    backbone.update(
        num_heads=cfg["model"]["backbone"]["num_heads"],
        num_heads_from=heads_from,
        strides=cfg["model"]["backbone"]["strides"],
    )
    return dict(
        num_classes=sizes.num_classes,
        num_components=sizes.num_components,
        embed_dim=sizes.embed_dim,
        channels=sizes.channels,
        in_channels=list(sizes.in_channels),
        projection="conv_bn_relu" if sizes.projection else "identity (channels == embed_dim)",
        backbone=backbone,
        memory=dict(
            present=sizes.memory_size is not None,
            size=sizes.memory_size,
            gigabytes=plan.gigabytes,
            imported=plan.imported,
            memory_size=plan.size,
        ),
        meta=dict(
            present=meta is not None,
            config=config_text is not None,
            CLASSES=bool(meta and "CLASSES" in meta),
            PALETTE=bool(meta and "PALETTE" in meta),
            **kept_meta,
        ),
        iterations=iterations,
        test_cfg=cfg["model"]["test_cfg"],
        top_level=[str(k) for k in obj] if isinstance(obj, dict) and "state_dict" in obj else ["(a bare state dict)"],
    )


def import_release(
    checkpoint: str | Path,
    out: str | Path,
    *,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
    memory_size: int | None = None,
) -> dict[str, Any]:
    """Convert a checkpoint of the authors' GMMSeg release into the lab work dir ``out``.

    Everything is checked and converted in memory before anything is written; the work dir then
    appears at once (written under a temporary name and renamed).

    Args:
        checkpoint: the release's ``.pth`` (mmcv ``{"meta", "state_dict", "optimizer"}`` or a bare
            state dict), memory-mapped when it is a zip file.
        out: a new (or empty) folder.
        max_memory_gb: the queue (``decode_head.queue`` [C*M, D, K], 7 GB in float32 at the
            release's COCO-Stuff sizes) is imported only when its float32 copy is at most this many
            10^9 bytes; otherwise it is left out and the memory is an empty placeholder. Loading
            the work dir needs about twice the queue's size in memory.
        memory_size: samples per component of the placeholder memory (default
            :data:`PLACEHOLDER_MEMORY_SIZE`), used when the queue is absent or left out.

    Returns:
        The import report (also written as ``out/import_report.json``): ``found`` (sizes, memory,
        meta), ``mapping``, ``left_out``, ``notes``, ``files``; :func:`format_summary` prints it.

    Raises:
        CheckpointError: the file is missing, unreadable, or not the release's layout (naming the
            first key that does not fit, with its shape and the expected one).
        FileExistsError: ``out`` is a file or a non-empty folder.
        ValueError: ``max_memory_gb`` < 0 or ``memory_size`` < 1.
    """
    path, out = Path(checkpoint), Path(out)
    if not max_memory_gb >= 0:
        raise ValueError(f"max_memory_gb must be >= 0, got {max_memory_gb}")
    if memory_size is not None and (not isinstance(memory_size, int) or memory_size < 1):
        raise ValueError(f"memory_size must be a positive integer, got {memory_size!r}")
    _check_out(out)
    obj, notes = load_release_checkpoint(path)
    state = release_state_dict(obj, path)
    sizes = read_sizes(state, path)
    meta, config_text, release_cfg = _release_meta(obj, notes)

    c, d = sizes.num_classes, sizes.embed_dim
    num_heads, heads_from = _num_heads(sizes.backbone.embed_dims, release_cfg, notes, path)
    test_cfg = _test_cfg(release_cfg, notes)
    interval = _get(release_cfg, "model", "decode_head", "update_GMM_interval")
    interval = interval if isinstance(interval, int) and not isinstance(interval, bool) and interval > 0 else 5
    classes, palette = _class_names(meta, c, notes)
    plan = _memory_plan(sizes, state, max_memory_gb, memory_size, notes)
    iterations = _iterations(state, meta)
    num_updates = iterations or 0
    # The release tests its counter before incrementing it: M-steps at iterations 1, 1 + interval, ...
    num_m_steps = math.ceil(num_updates / interval)
    if iterations is None:
        notes.append("counters: neither decode_head.iteration_counter nor meta.iter: gmm.num_updates = 0")
    if not sizes.projection:
        notes.append(f"projection: channels == embed_dim == {d}: the release has none and the lab's is Identity")
    notes.append(
        "class_log_likelihood (the lab's anomaly score, -max_c log p(x|c)) is the mixture's logsumexp "
        "with uniform weights 1/M; the class logits use the hard max over components, as the release's"
    )

    work_dir = out.expanduser().absolute()
    cfg = _lab_config(sizes, num_heads, release_cfg, plan.size, interval, test_cfg, work_dir)
    cfg_text = _config_text(cfg, path, heads_from)
    new_state, origin = convert_state(
        state,
        sizes,
        memory_size=plan.size,
        import_queue=plan.imported,
        num_updates=num_updates,
        num_m_steps=num_m_steps,
    )
    _check_fits_model(cfg_text, new_state, origin, sizes, path)

    name = f"iter_{num_updates}.pth"
    kept_meta = {
        k: v
        for k, v in (meta or {}).items()
        if k in ("mmseg_version", "mmcv_version", "exp_name", "iter", "epoch", "seed", "time")
        and isinstance(v, (str, int, float))
    }
    report = dict(
        source=str(path.expanduser().absolute()),
        work_dir=str(work_dir),
        checkpoint=name,
        found=_found(sizes, cfg, plan, meta, config_text, kept_meta, iterations, heads_from, obj),
        classes=classes,
        mapping=[
            dict(release=release, lab=lab)
            for lab, release in origin.items()
            if not lab.startswith("backbone.") and lab != release
        ],
        unchanged=dict(
            backbone=sum(k.startswith("backbone.") for k in origin),
            decode_head=sum(k == v and k.startswith("decode_head.") for k, v in origin.items()),
        ),
        left_out=_left_out(obj, state, plan.imported, plan.why_left_out),
        notes=notes,
        files=["config.py", name, "last_checkpoint", "classes.json", "import_report.json"]
        + (["release_config.txt"] if config_text is not None else []),
    )
    ckpt = {
        "state_dict": new_state,
        "meta": {
            "cfg": cfg_text,
            "iter": num_updates,
            "epoch": 0,
            "experiment_name": "import-release",
            "dataset_meta": {"classes": classes, "palette": palette},
            "imported_from": {"file": path.name, **kept_meta},
        },
    }
    files: dict[str, Any] = {
        "config.py": cfg_text,
        name: ckpt,
        "last_checkpoint": name,  # relative to the work dir (gmmseg_lab.checkpoints.read_pointer): it may move
        "classes.json": json.dumps({"classes": classes, "palette": palette}, indent=2) + "\n",
        "import_report.json": json.dumps(report, indent=2, default=str) + "\n",
    }
    if config_text is not None:
        files["release_config.txt"] = config_text
    _write_work_dir(out, files)
    return report


def format_summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: what was found, what was left out, the notes."""
    f = report["found"]
    b = f["backbone"]
    mem = f["memory"]
    memory = (
        "none in the checkpoint"
        if not mem["present"]
        else f"K={mem['size']} ({mem['gigabytes']:.2f} GB), " + ("imported" if mem["imported"] else "left out")
    )
    meta = (
        "absent"
        if not f["meta"]["present"]
        else ", ".join(k for k in ("config", "CLASSES", "PALETTE") if f["meta"][k])
        or "present (no config, CLASSES or PALETTE)"
    )
    lines = [
        f"imported {report['source']} -> {report['work_dir']}",
        f"  classes C={f['num_classes']}, components M={f['num_components']}, embedding D={f['embed_dim']}, "
        f"channels Ch={f['channels']}, projection {f['projection']}",
        f"  backbone MixVisionTransformer: depths {b['num_layers']}, embed dims {b['embed_dims']}, "
        f"num_heads {b['num_heads']} ({b['num_heads_from']})",
        f"  memory: {memory}; meta: {meta}; iterations: {f['iterations']}",
        "  left out: " + ("; ".join(f"{e['key']} ({e['why']})" for e in report["left_out"]) or "nothing"),
    ]
    lines += [f"  note: {n}" for n in report["notes"]]
    lines.append("  wrote " + ", ".join(report["files"]))
    return "\n".join(lines)
