"""mmsegmentation integration: GMMSeg decode heads, configs for 4 architectures, inference helpers.

Importing this package registers, in mmseg's ``MODELS``, ``GMMSegHead`` (the GMM version of any
decode head, by config) and ``GMMSegformerHead``, ``GMMDepthwiseSeparableASPPHead``, ``GMMUPerHead``,
``GMMOCRHead``, ``GMMFCNHead``; and, in ``DATASETS``, ``GMMLabDataset`` (the embedded data).

- :mod:`.gmm_head`: :class:`GMMHeadMixin`, :func:`gmm_head_class`, ``GMMSegHead``.
- :mod:`.presets`: :func:`config_path` ``(arch, head, preset)``, :func:`build_config`.
- :mod:`.inference`: :func:`load_segmentor`, :func:`predict_batch`, :func:`segmentor_outputs`.

An evaluator goes from a :func:`gmmseg_lab.train.train` work dir to per-pixel outputs with::

    model, cfg = load_segmentor(work_dir)            # work_dir/config.py + last checkpoint, eval mode
    for batch in build_dataloader(cfg, "val"):
        for r in predict_batch(model, batch):        # per image, at its original size
            r["seg_logits"], r["pred"], r["gt"]      # [C,H,W], [H,W], [H,W]
            r["class_log_likelihood"]                # GMM twins: log p(x|c), [C,H,W]
            r["anomaly_score"]                       # -max_c log p(x|c), [H,W]

or, with tensors, ``segmentor_outputs(model, inputs, batch_img_metas)`` (``model.extract_feat`` ->
the cascade's earlier stages -> ``decode_head.predict_gmm``; whole or slide as ``test_cfg.mode``).
"""

import contextlib as _contextlib
import io as _io
import warnings as _warnings

# mmseg 1.4 prints "Could not import OneDL" on import (an optional extra) and mmcv without compiled
# ops warns about MultiScaleDeformableAttention, which no shipped config uses: keep both out of
# notebooks and reports.
with _warnings.catch_warnings(), _contextlib.redirect_stdout(_io.StringIO()):
    _warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
    import mmseg.datasets  # noqa: F401
    import mmseg.models  # noqa: F401

from ..data import mmseg_dataset as _mmseg_dataset  # noqa: F401,E402  (registers GMMLabDataset)
from ..data import samplers as _samplers  # noqa: F401,E402  (registers ClassBalancedSampler)
from . import backbones  # noqa: F401,E402  (registers EfficientNetLite)
from .gmm_head import GMM_HEAD_KEYS, GMMHeadMixin, GMMSegHead, gmm_head_class, is_gmm_head
from .inference import (
    build_dataloader,
    decode_head_of,
    load_segmentor,
    predict_batch,
    quiet_mmengine,
    segmentor_outputs,
)
from .presets import (
    ARCHS,
    BACKBONES,
    CONFIG_DIR,
    CONFIG_SETS,
    HEADS,
    PRESETS,
    PRETRAINED_BACKBONE,
    PRETRAINED_PRESETS,
    build_config,
    config_diff,
    config_path,
    default_backbone,
    flatten_gmm_heads,
    gmm_head_configs,
    list_configs,
    parse_model_spec,
    set_max_iters,
)

__all__ = [
    "ARCHS",
    "BACKBONES",
    "CONFIG_SETS",
    "PRETRAINED_BACKBONE",
    "PRETRAINED_PRESETS",
    "default_backbone",
    "parse_model_spec",
    "GMM_HEAD_KEYS",
    "GMMHeadMixin",
    "GMMSegHead",
    "HEADS",
    "PRESETS",
    "CONFIG_DIR",
    "build_config",
    "config_diff",
    "flatten_gmm_heads",
    "gmm_head_configs",
    "set_max_iters",
    "build_dataloader",
    "config_path",
    "decode_head_of",
    "gmm_head_class",
    "is_gmm_head",
    "list_configs",
    "load_segmentor",
    "predict_batch",
    "quiet_mmengine",
    "segmentor_outputs",
]
