"""GMMSeg decode heads: any mmseg decode head with its softmax classifier replaced by a GMM.

mmseg decode heads compute a fused feature and end in ``self.cls_seg(feat)`` (dropout, then the 1x1
``conv_seg``). :class:`GMMHeadMixin` overrides only that classifier and the loss; everything else (the
head's own layers, its input transform, the cascade ``prev_output`` of OCRNet) is the base head's.
:func:`gmm_head_class` builds (once, cached) the thin subclass ``GMM<Base>`` of a registered head, and
the registry entry ``GMMSegHead`` builds one from a config::

    decode_head=dict(type='GMMSegHead', base_type='SegformerHead',        # flat form, or
                     in_channels=[...], channels=256, num_classes=19, ...,  # the base head's kwargs
                     num_components=5, embed_dim=64, loss_component_weight=0.01,
                     gmm_cfg=dict(memory_size=32000, mean_momentum=0.999, ...))
    decode_head=dict(type='GMMSegHead', head=dict(type='OCRHead', ...), num_components=5, ...)  # wrapped

The classifier (per pixel of the fused feature):

    feature -> dropout -> 1x1 conv to D (+ BN + ReLU, the release's) -> LayerNorm(D) -> L2-normalise = x
    log N(x; mu_cm, diag sigma_cm^2) for all C*M components  (GMMClassifier.component_log_prob)
    class score = max_m of the class's components -> LayerNorm over the C scores = class logits

Training (``loss_by_feat``): the base head's decode loss (CE) on the class logits, plus the component
loss ``loss_component`` = weight * CE over the C*M component log-densities with target
``label*M + assigned component`` (one Sinkhorn E-step per class over all its labelled pixels, read from
the forward's component log-densities), at the embeddings' resolution with labels resized by nearest;
then ``gmm.update(x, labels, correct=argmax == label, assignment=...)`` with that same assignment, as the
release does: only correctly classified pixels feed the memory; the M-step runs every
``update_interval`` updates. ``gmm_pixels``, ``gmm_classes``,
``gmm_m_step``, ``gmm_num_m_steps`` and the convergence statistics ``gmm_loglik``, ``gmm_balance`` and
``gmm_mean_step`` are logged beside the losses.

Distributed (DDP): ``gmm.update`` gathers every rank's pixels, so every rank must reach it. An input
the GMM refuses (non-finite embeddings, labels out of range) therefore stops every rank together: in
training under a multi-rank process group, :meth:`GMMHeadMixin.cls_seg` (embeddings) and
``loss_by_feat`` (labels) agree on their checks with one scalar all-reduce each
(:func:`~gmmseg_lab.gmm.distributed.raise_together`)
before the rank-local checks could raise on one rank only. In eval mode (validation, inference) no
collective is made, so a rank that raises there stops alone (under torchrun the agent then stops the
others).

Inference: ``predict`` is mmseg's (class logits). :meth:`GMMHeadMixin.predict_gmm` also returns
``log p(x|c)`` (the class mixtures' log-likelihood, for the anomaly score ``-max_c log p(x|c)``) and the
embeddings; see :mod:`gmmseg_lab.models.inference` for the segmentor-level (whole / slide) version.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import mmseg.models  # noqa: F401  (registers every mmseg decode head in MODELS)
import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.cascade_decode_head import BaseCascadeDecodeHead
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..gmm import GMMClassifier
from ..gmm._checks import check_float_matrix
from ..gmm.distributed import is_distributed, raise_together

__all__ = ["GMMHeadMixin", "GMMSegHead", "gmm_head_class", "is_gmm_head", "GMM_HEAD_KEYS"]

#: Config keys of ``GMMSegHead`` that a softmax head does not have (the twin-diff allows only these).
GMM_HEAD_KEYS = (
    "base_type",
    "head",
    "num_components",
    "embed_dim",
    "gmm_cfg",
    "loss_component_weight",
    "update_correct_only",
    "projection",
)

#: Ways to project the fused feature to the embedding dimension D (``GMMHeadMixin(projection=...)``).
PROJECTIONS = ("conv_bn_relu", "linear")


def _full_precision(t: Tensor):
    """Autocast off: the Gaussian log-densities are cancellation-sensitive quadratics (fp32 at least)."""
    return torch.autocast(device_type=t.device.type, enabled=False)


class GMMHeadMixin:
    """Replace a decode head's softmax classifier (``cls_seg``) by GMMSeg's generative classifier.

    Put it first in the bases of a :class:`BaseDecodeHead` subclass (see :func:`gmm_head_class`).

    Args:
        num_components: M, Gaussians per class (5).
        embed_dim: D, embedding dimension (64).
        gmm_cfg: further keyword arguments of :class:`~gmmseg_lab.gmm.GMMClassifier` (``e_step``,
            ``memory``, ``memory_size``, ``mean_momentum``, ``update_interval``, ...).
        loss_component_weight: weight of the component cross-entropy (0.01).
        update_correct_only: feed the memory only with correctly classified pixels (the paper's).
        projection: how the fused feature is projected to D: ``"conv_bn_relu"`` (the release's: a
            1x1 conv without bias, the head's norm (BN / SyncBN), ReLU) or ``"linear"`` (a 1x1 conv
            with bias, nothing after it). Either is left out (identity) when the head's channels
            already equal D, as in the release.
        **kwargs: the base head's own arguments.
    """

    def __init__(
        self,
        *args,
        num_components: int = 5,
        embed_dim: int = 64,
        gmm_cfg: dict | None = None,
        loss_component_weight: float = 0.01,
        update_correct_only: bool = True,
        projection: str = "conv_bn_relu",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if self.out_channels != self.num_classes or self.num_classes < 2:
            raise ValueError(
                "GMMSeg heads need out_channels == num_classes >= 2 "
                f"(got num_classes={self.num_classes}, out_channels={self.out_channels})"
            )
        gmm_cfg = dict(gmm_cfg or {})
        for key in ("num_classes", "num_components", "embed_dim"):
            if key in gmm_cfg:
                raise ValueError(f"set {key} on the head, not in gmm_cfg")
        gmm_cfg.setdefault("ignore_index", self.ignore_index)
        self.num_components = num_components
        self.embed_dim = embed_dim
        self.loss_component_weight = float(loss_component_weight)
        self.update_correct_only = update_correct_only

        in_channels = self.conv_seg.in_channels
        del self.conv_seg  # the softmax classifier is gone; the GMM takes its place
        self.projection = projection
        self.gmm_project = self._build_projection(projection, in_channels, embed_dim)
        self.gmm_embed_norm = nn.LayerNorm(embed_dim)
        self.gmm = GMMClassifier(self.num_classes, num_components, embed_dim, **gmm_cfg)
        self.gmm_score_norm = nn.LayerNorm(self.num_classes)
        self._retarget_init_cfg()
        self._gmm_cache: dict | None = None

    def _build_projection(self, kind: str, in_channels: int, embed_dim: int) -> nn.Module:
        """The fused feature ``[B, Ch, h, w]`` -> ``[B, D, h, w]`` (see ``projection``)."""
        if kind not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")
        if in_channels == embed_dim:  # the release leaves the projection out then
            return nn.Identity()
        if kind == "linear":
            return nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        from mmcv.cnn import ConvModule

        # The head's own norm (SyncBN in the paper configs, BN here); ConvModule drops the conv's bias.
        return ConvModule(
            in_channels,
            embed_dim,
            kernel_size=1,
            conv_cfg=getattr(self, "conv_cfg", None),
            norm_cfg=getattr(self, "norm_cfg", None) or dict(type="BN"),
            act_cfg=dict(type="ReLU"),
        )

    def _retarget_init_cfg(self) -> None:
        """The base's ``init_cfg`` may override ``conv_seg``: give that init to ``gmm_project``."""

        def fix(cfg: Any) -> Any:
            if isinstance(cfg, dict):
                cfg = {k: fix(v) for k, v in cfg.items()}
                if cfg.get("name") == "conv_seg":
                    cfg["name"] = "gmm_project"
                return cfg
            if isinstance(cfg, (list, tuple)):
                return type(cfg)(fix(c) for c in cfg)
            return cfg

        if getattr(self, "init_cfg", None) is not None:
            self.init_cfg = fix(copy.deepcopy(self.init_cfg))

    # ------------------------------------------------------------------ the classifier
    def embed_rows(self, feat: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """Fused feature ``[B, Ch, h, w]`` -> L2-normalised embeddings ``x`` ``[B*h*w, D]`` (float32, one
        row per pixel in ``(b, y, x)`` order) and ``(B, h, w)``. The pixels are laid out as rows once,
        before the LayerNorm, so neither it nor the densities work on strided memory."""
        if self.dropout is not None:
            feat = self.dropout(feat)
        emb = self.gmm_project(feat)
        b, d, h, w = emb.shape
        with _full_precision(emb):
            x = emb.float().permute(0, 2, 3, 1).reshape(-1, d)
            return F.normalize(self.gmm_embed_norm(x), dim=1), (b, h, w)

    def embed(self, feat: Tensor) -> Tensor:
        """Fused feature ``[B, Ch, h, w]`` -> L2-normalised embedding ``[B, D, h, w]`` (float32)."""
        x, (b, h, w) = self.embed_rows(feat)
        return x.view(b, h, w, -1).permute(0, 3, 1, 2)

    def cls_seg(self, feat: Tensor) -> Tensor:
        """GMM classifier in place of dropout + ``conv_seg``: class logits ``[B, C, h, w]``.

        The flat embeddings ``[N, D]`` and component log-densities ``[N, C, M]`` are kept for the
        loss of the same forward pass (``loss_by_feat``) and for :meth:`predict_gmm`.

        Non-finite embeddings raise ``ValueError`` (``component_log_prob``). In training under a
        multi-rank process group the ranks first agree on that check (one scalar all-reduce), so every
        rank raises together rather than the others waiting in the GMM update's gathers; in eval mode
        the check is rank-local (no collective: a rank may run inference alone).
        """
        x, (b, h, w) = self.embed_rows(feat)
        if self.training and is_distributed():
            self._check_together(lambda: check_float_matrix(x.detach(), "x", cols=self.embed_dim))
        with _full_precision(x):
            comp = self.gmm.component_log_prob(x)  # [N, C, M]
            # max, not amax: its backward scatters into the winning component only, where amax's
            # compares every one of the N*C*M log-densities with the maximum (ties split the gradient).
            scores = self.gmm_score_norm(comp.max(dim=-1).values)  # [N, C]
        # The memory layout the softmax twin's classifier conv gives on a CPU: channels-last at inference
        # (a view, no copy: the resize and the argmax over classes read each pixel's C scores
        # contiguously; argmax measured 0.9 against 5 ms on a [19, 128, 128] map), contiguous in
        # training (mmseg's cross-entropy would otherwise copy the upsampled [B, C, H, W] logits).
        logits = scores.view(b, h, w, self.num_classes).permute(0, 3, 1, 2)
        if self.training:
            logits = logits.contiguous()
        self._gmm_cache = dict(x=x, component_log_prob=comp, shape=(b, h, w))
        return logits

    def _check_together(self, check) -> None:
        """Run ``check`` (raises ``ValueError`` / ``TypeError``) on every rank; raise on all if any fails."""
        error = None
        try:
            check()
        except (TypeError, ValueError) as exc:
            error = exc
        raise_together(error, self.gmm.means.device, what=f"{type(self).__name__}'s GMM input")

    def _pop_cache(self, logits: Tensor) -> dict:
        cache, self._gmm_cache = self._gmm_cache, None
        if cache is None or tuple(cache["shape"]) != (logits.shape[0], *logits.shape[2:]):
            raise RuntimeError(
                f"{type(self).__name__}: no GMM classifier output for these logits; GMMSeg heads need "
                "a base head whose forward ends in self.cls_seg(feat)"
            )
        return cache

    # ------------------------------------------------------------------ training
    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples) -> dict:
        """mmseg's decode loss on the class logits + the component loss; then the online EM step."""
        cache = self._pop_cache(seg_logits)
        gt = self._stack_batch_gt(batch_data_samples)  # [B, 1, H, W]
        if self.training and is_distributed():
            # Labels out of range would fail the decode loss or the GMM on one rank only: stop every rank.
            self._check_together(lambda: self.gmm._check_labels(gt.reshape(-1), gt.numel(), "gt_sem_seg"))
        losses = super().loss_by_feat(seg_logits, batch_data_samples)

        b, h, w = cache["shape"]
        labels = gt.to(seg_logits.device)
        labels = F.interpolate(labels.float(), size=(h, w), mode="nearest").long().view(-1)
        x, comp = cache["x"], cache["component_log_prob"]
        m = self.num_components

        # The one E-step of this step (as the release's): read from the forward's log-densities, it is
        # the component loss's target and, below, what the memory gets. -1 where ignored.
        assigned = self.gmm.assign_components(x.detach(), labels, log_prob=comp.detach())
        valid = assigned >= 0
        target = torch.where(valid, labels * m + assigned, torch.full_like(labels, -1))
        if bool(valid.any()):
            loss_comp = F.cross_entropy(comp.flatten(1), target, ignore_index=-1)
        else:
            loss_comp = comp.sum() * 0.0
        losses["loss_component"] = self.loss_component_weight * loss_comp

        if self.training:
            pred = seg_logits.detach().argmax(dim=1).view(-1)
            correct = (pred == labels) if self.update_correct_only else None
            # The means move only in an M-step: copy them only when this update ends with one.
            means_before = self.gmm.means.detach().clone() if self.gmm.m_step_due() else None
            info = self.gmm.update(x.detach(), labels, correct=correct, assignment=assigned)
            dev = seg_logits.device
            losses["gmm_pixels"] = torch.tensor(float(info["pixels"]), device=dev)
            losses["gmm_classes"] = torch.tensor(float(info["classes"]), device=dev)
            losses["gmm_m_step"] = torch.tensor(float(info["m_step"]), device=dev)
            losses["gmm_num_m_steps"] = self.gmm.num_m_steps.detach().float().to(dev)
            losses.update(self._convergence_stats(comp.detach(), labels, assigned, valid, means_before, info))
        return losses

    @torch.no_grad()
    def _convergence_stats(
        self, comp: Tensor, labels: Tensor, assigned: Tensor, valid: Tensor, means_before: Tensor | None, info: dict
    ) -> dict[str, Tensor]:
        """How the mixture converges, logged beside the losses (no effect on training).

        Args:
            comp: ``[N, C, M]`` component log-densities of the batch's N pixels (detached).
            labels: ``[N]`` labels at the embeddings' resolution (``ignore_index`` allowed).
            assigned: ``[N]`` E-step component within the label's class, ``-1`` where ignored.
            valid: ``[N]`` bool, ``assigned >= 0``.
            means_before: ``[C, M, D]`` copy of the means before the update, or ``None`` when the
                update ran no M-step (no copy is made then).
            info: what ``gmm.update`` returned (``m_step``).

        ``gmm_loglik``: mean ``log p(x|y)`` of the batch's labelled pixels under the current mixture;
        ``gmm_balance``: mean over the batch's classes of the normalised entropy of the component
        assignment (1 = components used evenly, 0 = one component takes every pixel);
        ``gmm_mean_step`` (M-step iterations only): mean L2 distance the component means moved.
        Under DDP ``gmm_loglik`` and ``gmm_balance`` are per rank (this rank's pixels; the log shows
        rank 0's), while ``gmm_mean_step`` is global (every rank holds the same mixture).
        """
        dev = comp.device
        stats: dict[str, Tensor] = {}
        if bool(valid.any()):
            rows = valid.nonzero(as_tuple=True)[0]
            lab = labels[rows]
            per_comp = comp[rows, lab]  # [n, M]: each pixel's own class only (no copy of [n, C, M])
            loglik = torch.logsumexp(per_comp + self.gmm.log_weights[lab].to(per_comp.dtype), dim=-1)
            stats["gmm_loglik"] = loglik.mean().float()
            m = self.num_components
            counts = torch.bincount(lab * m + assigned[valid], minlength=self.num_classes * m)
            counts = counts.view(self.num_classes, m).double()
            present = counts.sum(1) > 0
            if m > 1 and bool(present.any()):
                p = counts[present] / counts[present].sum(1, keepdim=True)
                entropy = -(p * p.clamp_min(1e-12).log()).sum(1) / torch.log(torch.tensor(float(m), dtype=p.dtype))
                stats["gmm_balance"] = entropy.mean().float().to(dev)
            else:
                stats["gmm_balance"] = torch.tensor(1.0, device=dev)
        if info["m_step"] and means_before is not None:
            step = (self.gmm.means.detach() - means_before).double().norm(dim=-1)
            stats["gmm_mean_step"] = step.mean().float().to(dev)
        return stats

    # ------------------------------------------------------------------ inference
    def predict_by_feat(self, seg_logits: Tensor, batch_img_metas: list[dict]) -> Tensor:
        self._gmm_cache = None
        return super().predict_by_feat(seg_logits, batch_img_metas)

    def predict_gmm(
        self,
        inputs,
        batch_img_metas: list[dict],
        test_cfg=None,
        prev_output: Tensor | None = None,
        rescale: bool = True,
    ) -> dict[str, Tensor]:
        """Class logits, ``log p(x|c)`` and embeddings of a batch of backbone features.

        Args:
            inputs: the backbone (+neck) features, as for :meth:`predict`.
            batch_img_metas: image metas (``img_shape`` / ``pad_shape`` give the output size).
            test_cfg: unused (kept for mmseg's ``predict`` signature).
            prev_output: the previous stage's output for cascade heads (OCRNet).
            rescale: resize ``seg_logits`` and ``class_log_likelihood`` (bilinear) to the input image
                size as mmseg's ``predict`` does; the embeddings stay at feature resolution.

        Returns:
            ``seg_logits`` ``[B, C, H, W]`` (LayerNorm-ed class scores: the logits of the CE loss),
            ``class_log_likelihood`` ``[B, C, H, W]`` (``log p(x|c)`` of each class mixture; the anomaly
            score is ``-max_c``) and ``embeddings`` ``[B, D, h, w]``.
        """
        if isinstance(self, BaseCascadeDecodeHead):
            if prev_output is None:
                raise ValueError(f"{type(self).__name__} is a cascade head: pass prev_output")
            logits = self.forward(inputs, prev_output)
        else:
            logits = self.forward(inputs)
        cache = self._pop_cache(logits)
        b, h, w = cache["shape"]
        with _full_precision(cache["x"]):
            cll = self.gmm.class_log_likelihood(cache["x"])
        cll = cll.view(b, h, w, self.num_classes).permute(0, 3, 1, 2)  # channels-last, as the logits
        emb = cache["x"].view(b, h, w, self.embed_dim).permute(0, 3, 1, 2).contiguous()
        if rescale:
            logits = BaseDecodeHead.predict_by_feat(self, logits, batch_img_metas)
            cll = BaseDecodeHead.predict_by_feat(self, cll, batch_img_metas)
        return dict(seg_logits=logits, class_log_likelihood=cll, embeddings=emb)


# ---------------------------------------------------------------------- building
_CLASSES: dict[type, type] = {}


def gmm_head_class(base: str | type) -> type:
    """The GMMSeg version ``GMM<Base>`` of a decode head class (or its registry name), cached.

    The class is a module attribute of this module (so models pickle) and is registered in mmseg's
    ``MODELS`` under its name, e.g. ``GMMSegformerHead``.
    """
    base_cls = MODELS.get(base) if isinstance(base, str) else base
    if base_cls is None:
        raise KeyError(f"{base!r} is not a registered mmseg model")
    if not (isinstance(base_cls, type) and issubclass(base_cls, BaseDecodeHead)):
        raise TypeError(f"{base!r} is not an mmseg decode head (BaseDecodeHead subclass)")
    if issubclass(base_cls, GMMHeadMixin):
        return base_cls
    if base_cls not in _CLASSES:
        name = f"GMM{base_cls.__name__}"
        cls = types.new_class(name, (GMMHeadMixin, base_cls))
        cls.__module__ = __name__
        cls.__qualname__ = name
        cls.__doc__ = (
            f"{base_cls.__name__} with GMMSeg's generative classifier in place of softmax (see :class:`GMMHeadMixin`)."
        )
        globals()[name] = cls
        if name not in MODELS.module_dict:
            MODELS.register_module(name=name, module=cls)
        _CLASSES[base_cls] = cls
    return _CLASSES[base_cls]


def GMMSegHead(base_type: str | type | None = None, head: dict | None = None, **kwargs):  # noqa: N802
    """Registry entry: build the GMMSeg version of a decode head from a config.

    Either ``base_type='SegformerHead'`` with the base head's kwargs beside the GMM keys, or
    ``head=dict(type='SegformerHead', ...)`` (a complete softmax head config, wrapped).
    """
    if head is not None:
        head = dict(head)
        if base_type is not None and base_type != head.get("type"):
            raise ValueError(f"base_type={base_type!r} contradicts head type {head.get('type')!r}")
        base_type = head.pop("type")
        kwargs = {**head, **kwargs}
    if base_type is None:
        raise ValueError("GMMSegHead needs base_type='<decode head>' or head=dict(type=...)")
    return gmm_head_class(base_type)(**kwargs)


MODELS.register_module(name="GMMSegHead", module=GMMSegHead, force=True)

# The four architectures of the paper, registered up front (GMMSegformerHead, ...).
for _name in ("SegformerHead", "DepthwiseSeparableASPPHead", "UPerHead", "OCRHead", "FCNHead"):
    gmm_head_class(_name)


def is_gmm_head(module: nn.Module) -> bool:
    """True for a decode head built with the GMM classifier."""
    return isinstance(module, GMMHeadMixin)
