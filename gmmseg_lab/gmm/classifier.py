"""GMMSeg's generative classifier: one diagonal Gaussian mixture per class, fitted online by EM.

Prediction is Bayes' rule with a uniform class prior, ``argmax_c log p(x|c)``; the anomaly score is
``-max_c log p(x|c)``. Training alternates, on the schedule of the paper's release:

1. E-step on the current batch's (correctly classified) pixels of each class: Sinkhorn-Knopp with
   uniform marginals over components (or the classic posterior, ``e_step="em"``), then a hard argmax;
2. memory: at most ``samples_per_component`` evenly spaced new samples per component go into a FIFO
   queue (``memory="fifo"``) or into decayed sufficient statistics (``memory="stats"``);
3. M-step every ``update_interval`` updates, for the classes seen since the last one: mean = the
   (L2-normalised) sum of the component's samples, variance = mean squared deviation from that mean
   plus ``var_floor``; means move with ``mean_momentum``, standard deviations with ``std_momentum``.

Everything is a buffer, so the mixture and its memory are saved and restored with a checkpoint.
Under ``torch.distributed`` the pixels are gathered from every rank before the E-step, so every rank
holds the identical mixture; ``update`` is a collective call (every rank must make it), and when one
rank's input is refused every rank raises (:func:`~gmmseg_lab.gmm.distributed.raise_together`), so
no rank is left waiting in the gather.

Non-finite input: ``update``, ``assign_components``, ``component_log_prob`` (and so
``class_log_likelihood``, ``predict``, ``anomaly_score``) raise ``ValueError`` naming ``x`` and the
count of NaN/infinite values and of rows holding them, before touching any state, so the mixture
and its memory are never NaN. Rows are not skipped: embeddings here are LayerNorm-ed and
L2-normalised from uint8 images, so a non-finite one means the network diverged, and a run that
carried on would only train on NaN. Finite inputs of any magnitude keep the mixture finite (huge
ones may give a ``-inf`` log-density by float32 underflow, never NaN). A class that never gets a
pixel keeps its initial means, standard deviations and weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_finite, check_float_matrix
from .density import diag_gaussian_log_prob, float32_overflow_risk
from .distributed import all_gather_rows, raise_together
from .fit import E_STEPS
from .memory import FIFOMemory, StatsMemory
from .sinkhorn import normalized_sinkhorn_assign

MEMORIES = ("fifo", "stats")


class GMMClassifier(nn.Module):
    """One Gaussian mixture (diagonal covariance) per class over D-dimensional embeddings.

    Args:
        num_classes: C. num_components: M per class. embed_dim: D.
        e_step: ``"sinkhorn"`` (uniform-prior optimal-transport E-step, the paper's) or ``"em"``
            (classic posterior with learned mixture weights).
        memory: ``"fifo"`` (per-component ring buffer of samples, the release's) or ``"stats"``
            (decayed count, sum and sum of squares per component: ``C*M*(2D+1)`` numbers).
        mean_momentum: weight of the old mean in the momentum update (0.999 in the paper).
        std_momentum: weight of the old standard deviation (0: replaced).
        update_interval: M-step every this many calls of :meth:`update`.
        memory_size: FIFO capacity per component; for ``"stats"`` it sets the default decay.
        samples_per_component: at most this many new samples per component per update (evenly
            spaced); ``None`` keeps them all.
        sinkhorn_iters, sinkhorn_epsilon: Sinkhorn-Knopp iterations and entropic regulariser.
        var_floor: added to every variance (keeps every standard deviation >= sqrt(var_floor)).
        normalize_means: keep means on the unit sphere (the paper's, for L2-normalised embeddings).
            Set ``False`` for raw data such as 2-D teaching examples.
        stats_decay: per-sample decay of the ``"stats"`` memory; ``None`` means
            ``1 - 1/memory_size`` (same effective length as the FIFO), ``1.0`` never forgets.
        ignore_index: label value that marks pixels to ignore.
        init_std: standard deviation of the random initial means.
    """

    def __init__(
        self,
        num_classes: int,
        num_components: int = 5,
        embed_dim: int = 64,
        e_step: str = "sinkhorn",
        memory: str = "fifo",
        *,
        mean_momentum: float = 0.999,
        std_momentum: float = 0.0,
        update_interval: int = 5,
        memory_size: int = 32000,
        samples_per_component: int | None = 20,
        sinkhorn_iters: int = 3,
        sinkhorn_epsilon: float = 0.05,
        var_floor: float = 0.01,
        normalize_means: bool = True,
        stats_decay: float | None = None,
        ignore_index: int = 255,
        init_std: float = 0.02,
    ):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("num_components", num_components),
                            ("embed_dim", embed_dim), ("update_interval", update_interval),
                            ("memory_size", memory_size), ("sinkhorn_iters", sinkhorn_iters)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if e_step not in E_STEPS:
            raise ValueError(f"e_step must be one of {E_STEPS}, got {e_step!r}")
        if memory not in MEMORIES:
            raise ValueError(f"memory must be one of {MEMORIES}, got {memory!r}")
        for name, value in (("mean_momentum", mean_momentum), ("std_momentum", std_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if samples_per_component is not None and samples_per_component < 1:
            raise ValueError(f"samples_per_component must be >= 1 or None, got {samples_per_component}")
        if not sinkhorn_epsilon > 0:
            raise ValueError(f"sinkhorn_epsilon must be > 0, got {sinkhorn_epsilon}")
        if not var_floor > 0:
            raise ValueError(f"var_floor must be > 0 (it keeps every variance positive), got {var_floor}")

        self.num_classes = num_classes
        self.num_components = num_components
        self.embed_dim = embed_dim
        self.e_step = e_step
        self.memory_kind = memory
        self.mean_momentum = mean_momentum
        self.std_momentum = std_momentum
        self.update_interval = update_interval
        self.memory_size = memory_size
        self.samples_per_component = samples_per_component
        self.sinkhorn_iters = sinkhorn_iters
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.var_floor = var_floor
        self.normalize_means = normalize_means
        self.ignore_index = ignore_index

        means = torch.randn(num_classes, num_components, embed_dim) * init_std
        if normalize_means:
            means = nn.functional.normalize(means, dim=-1)
        self.register_buffer("means", means)
        self.register_buffer("stds", torch.ones(num_classes, num_components, embed_dim))
        self.register_buffer(
            "log_weights", torch.full((num_classes, num_components), -math.log(num_components))
        )
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_m_steps", torch.zeros((), dtype=torch.long))
        # Classes that received samples since the last M-step: only these are re-estimated.
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        num_slots = num_classes * num_components
        if memory == "fifo":
            self.memory = FIFOMemory(num_slots, memory_size, embed_dim)
        else:
            if stats_decay is None and memory_size < 2:
                raise ValueError(f"memory_size must be >= 2 for memory='stats' without stats_decay (the decay is "
                                 f"1 - 1/memory_size, which must be > 0), got {memory_size}")
            decay = 1.0 - 1.0 / memory_size if stats_decay is None else stats_decay
            self.memory = StatsMemory(num_slots, embed_dim, decay)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_components={self.num_components}, "
                f"embed_dim={self.embed_dim}, e_step={self.e_step!r}, memory={self.memory_kind!r}")

    # ------------------------------------------------------------------ densities and prediction
    def _current_means(self) -> Tensor:
        if self.normalize_means:
            return nn.functional.normalize(self.means, dim=-1)
        return self.means

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; mu_cm, diag sigma_cm^2)`` for every class and component.

        Args:
            x: ``[N, D]`` embeddings (gradients flow to ``x``).

        Returns:
            ``[N, C, M]``.
        """
        check_float_matrix(x, "x", cols=self.embed_dim)
        c, m, d = self.num_classes, self.num_components, self.embed_dim
        means, stds = self._current_means().reshape(c * m, d), self.stds.reshape(c * m, d)
        if float32_overflow_risk(x, means, stds):  # huge inputs: float64, -inf below float32's range
            flat = diag_gaussian_log_prob(x.double(), means.double(), stds.double(), validate=False).float()
        else:
            flat = diag_gaussian_log_prob(x, means, stds, validate=False, range_check=False)
        return flat.view(-1, c, m)

    def class_log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(x|c)`` of the class mixtures, ``[N, C]`` for ``x`` ``[N, D]``."""
        return torch.logsumexp(self.component_log_prob(x) + self.log_weights, dim=-1)

    def predict(self, x: Tensor) -> Tensor:
        """Bayes' rule with a uniform class prior: ``argmax_c log p(x|c)``, ``[N]`` int64."""
        return self.class_log_likelihood(x).argmax(dim=1)

    def anomaly_score(self, x: Tensor) -> Tensor:
        """``-max_c log p(x|c)``, ``[N]``: higher means further from every class's density."""
        return -self.class_log_likelihood(x).amax(dim=1)

    # ------------------------------------------------------------------ E-step
    def _check_labels(self, labels: object, n: int, name: str = "labels") -> Tensor:
        if not isinstance(labels, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
        if labels.shape != (n,):
            raise ValueError(f"{name} must have shape [{n}] (one per row of x), got {tuple(labels.shape)}")
        valid = labels != self.ignore_index
        bad = valid & ((labels < 0) | (labels >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"{name} must be in [0, {self.num_classes}) or {self.ignore_index} (ignore), "
                f"found {sorted(set(labels[bad].tolist()))[:5]}"
            )
        return labels.long()

    def _wide(self, x: Tensor) -> bool:
        """Whether the E-step must score ``x`` in float64 (float32 could overflow): checked once per
        batch against every class's Gaussians, not once per class."""
        d = self.embed_dim
        return float32_overflow_risk(x, self._current_means().reshape(-1, d), self.stds.reshape(-1, d))

    def _assign_class(self, x_c: Tensor, cls: int, wide: bool = False) -> Tensor:
        """Hard component index ``[n]`` for the ``n`` pixels ``x_c`` of class ``cls``; ``wide``: score
        in float64 (see :meth:`_wide`)."""
        means, stds = self._current_means()[cls], self.stds[cls]
        if wide:
            log_prob = diag_gaussian_log_prob(x_c.double(), means.double(), stds.double(), validate=False).float()
        else:
            log_prob = diag_gaussian_log_prob(x_c, means, stds, validate=False, range_check=False)
        # Huge inputs can overflow float32 to -inf; keep the E-step finite and NaN-free.
        lowest = torch.finfo(log_prob.dtype).min / 4
        log_prob = torch.nan_to_num(log_prob, nan=lowest, neginf=lowest, posinf=-lowest)
        if self.e_step == "sinkhorn":
            return normalized_sinkhorn_assign(log_prob, self.sinkhorn_iters, self.sinkhorn_epsilon)
        return (log_prob + self.log_weights[cls]).argmax(dim=1)

    @torch.no_grad()
    def assign_components(self, x: Tensor, labels: Tensor) -> Tensor:
        """E-step on a batch: hard component index within its class for each pixel.

        Args:
            x: ``[N, D]`` embeddings. labels: ``[N]`` class indices (``ignore_index`` allowed).

        Returns:
            ``[N]`` int64 component in ``[0, M)``, ``-1`` where the label is ignored. The target of
            the component loss is ``label * M + component``.
        """
        check_float_matrix(x, "x", cols=self.embed_dim)
        labels = self._check_labels(labels, x.shape[0])
        x = x.detach()
        out = torch.full_like(labels, -1)
        classes = torch.unique(labels[labels != self.ignore_index]).tolist()
        wide = bool(classes) and self._wide(x)
        for cls in classes:
            idx = (labels == cls).nonzero(as_tuple=True)[0]
            out[idx] = self._assign_class(x[idx], cls, wide)
        return out

    # ------------------------------------------------------------------ memory and M-step
    def _subsample(self, rows: Tensor) -> Tensor:
        k = self.samples_per_component
        n = rows.shape[0]
        if k is None or n <= k:
            return rows
        # Evenly spaced, deterministic: the same batch gives the same memory on every rank.
        idx = torch.linspace(0, n - 1, steps=k, device=rows.device).round().long()
        return rows[idx]

    @torch.no_grad()
    def update(self, x: Tensor, labels: Tensor, correct: Tensor | None = None) -> dict:
        """One online-EM step: E-step on the batch, memory update, and the M-step when it is due.

        Args:
            x: ``[N, D]`` embeddings (detached internally).
            labels: ``[N]`` ground-truth classes; ``ignore_index`` pixels are skipped.
            correct: optional ``[N]`` bool; only pixels marked True feed the memory (the paper uses
                the correctly classified ones).

        Returns:
            ``{"pixels": int, "classes": int, "m_step": bool}`` for logging (pixels over all ranks).

        Raises:
            ValueError (TypeError for a non-tensor): bad ``x``, ``labels`` or ``correct``, before any
            state changes. Under ``torch.distributed`` every rank raises when one rank's input is bad
            (that rank its own error, the others one naming it), instead of leaving them waiting.
        """
        error = None
        try:
            check_float_matrix(x, "x", cols=self.embed_dim)
            labels = self._check_labels(labels, x.shape[0])
            use = labels != self.ignore_index
            if correct is not None:
                if not isinstance(correct, Tensor) or correct.dtype != torch.bool or correct.shape != labels.shape:
                    raise ValueError(f"correct must be a bool tensor of shape [{labels.shape[0]}], got "
                                     f"{getattr(correct, 'dtype', type(correct))} "
                                     f"{tuple(getattr(correct, 'shape', ()))}")
                use = use & correct
            x_local = x.detach()[use].to(self.means.dtype)
            # Finite float64 beyond float32's range turns to inf here; in the statistics memory one such
            # sample would freeze its component for good: refuse it like any non-finite x.
            check_finite(x_local, f"x (the used rows, cast to the mixture's {self.means.dtype})")
        except (TypeError, ValueError) as exc:
            error = exc
        # The gathers below need every rank: agree first, so a bad batch on one rank stops them all.
        raise_together(error, self.means.device, what="GMMClassifier.update's input")
        x_used = all_gather_rows(x_local)
        labels_used = all_gather_rows(labels[use])

        classes = torch.unique(labels_used).tolist()
        m = self.num_components
        wide = bool(classes) and self._wide(x_used)  # same decision on every rank (gathered rows)
        for cls in classes:
            x_c = x_used[labels_used == cls]
            assignment = self._assign_class(x_c, cls, wide)
            for comp in range(m):
                self.memory.push(cls * m + comp, self._subsample(x_c[assignment == comp]))
            self.seen[cls] = True

        self.num_updates += 1
        m_step = int(self.num_updates) % self.update_interval == 0
        if m_step:
            self.m_step()
        return {"pixels": int(labels_used.numel()), "classes": len(classes), "m_step": m_step}

    def m_step_due(self) -> bool:
        """True when the next :meth:`update` ends with the M-step (every ``update_interval`` updates)."""
        return (int(self.num_updates) + 1) % self.update_interval == 0

    @torch.no_grad()
    def m_step(self) -> None:
        """Re-estimate the seen classes' components from the memory, with momentum."""
        classes = self.seen.nonzero(as_tuple=True)[0]
        if classes.numel() == 0:
            return
        m, d = self.num_components, self.embed_dim
        slots = (classes[:, None] * m + torch.arange(m, device=classes.device)).reshape(-1)
        count, total, total_sq = self.memory.moments(slots)
        count, total, total_sq = count.view(-1, m), total.view(-1, m, d), total_sq.view(-1, m, d)
        has_data = count > 0
        safe = count.clamp_min(1e-300).unsqueeze(-1)
        if self.normalize_means:
            norm = total.norm(dim=-1, keepdim=True)
            has_data &= norm.squeeze(-1) > 0
            new_means = total / norm.clamp_min(1e-300)
        else:
            new_means = total / safe
        # Mean squared deviation from the new mean: E[x^2] - 2 mu E[x] + mu^2, in float64.
        var = (total_sq / safe - 2 * new_means * total / safe + new_means * new_means).clamp_min(0.0)
        new_stds = (var + self.var_floor).sqrt()

        old_means = self.means[classes].double()
        old_stds = self.stds[classes].double()
        means = self.mean_momentum * old_means + (1 - self.mean_momentum) * new_means
        if self.normalize_means:
            # Old and new means exactly opposite (half the time in 1-D) cancel to the zero vector, which
            # has no direction: take the new mean then, so every mean stays on the unit sphere.
            norm = means.norm(dim=-1, keepdim=True)
            means = torch.where(norm > 1e-150, means / norm.clamp_min(1e-150), new_means)
        stds = self.std_momentum * old_stds + (1 - self.std_momentum) * new_stds
        finite_max = torch.finfo(self.stds.dtype).max
        stds = stds.clamp(min=math.sqrt(self.var_floor), max=finite_max)

        keep = (has_data & torch.isfinite(means).all(-1) & torch.isfinite(stds).all(-1)).unsqueeze(-1)
        self.means[classes] = torch.where(keep, means, old_means).to(self.means.dtype)
        self.stds[classes] = torch.where(keep, stds, old_stds).to(self.stds.dtype)
        if self.e_step == "em":
            # Classic EM also re-estimates the mixture weights; a floor keeps every log finite.
            weights = (count / count.sum(dim=1, keepdim=True).clamp_min(1e-300)).clamp_min(1e-6)
            weights = weights / weights.sum(dim=1, keepdim=True)
            has_any = (count.sum(dim=1) > 0).unsqueeze(-1)
            self.log_weights[classes] = torch.where(
                has_any, weights.log().to(self.log_weights.dtype), self.log_weights[classes]
            )
        self.seen[classes] = False
        self.num_m_steps += 1

    def memory_nbytes(self) -> int:
        """Bytes held by the memory's buffers (the FIFO queue or the sufficient statistics)."""
        return sum(b.numel() * b.element_size() for b in self.memory.buffers())
