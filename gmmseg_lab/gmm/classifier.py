"""GMMSeg's generative classifier: one diagonal Gaussian mixture per class, fitted online by EM.

Prediction is Bayes' rule with a uniform class prior, ``argmax_c log p(x|c)``; the anomaly score is
``-max_c log p(x|c)``. Training alternates, on the schedule of the paper's release:

1. E-step, once per step, on all the batch's labelled pixels of each class: Sinkhorn-Knopp with
   uniform marginals over components (or the classic posterior, ``e_step="em"``), then a hard argmax.
   The same assignment is the component loss's target (the head passes it to :meth:`update`);
2. memory: of the correctly classified pixels, at most ``samples_per_component`` evenly spaced new
   samples per component go into a FIFO queue (``memory="fifo"``) or into decayed sufficient
   statistics (``memory="stats"``);
3. M-step every ``update_interval`` updates, for the classes seen since the last one: mean = the
   (L2-normalised) sum of the component's samples, variance = mean squared deviation from that mean
   plus ``var_floor``; means move with ``mean_momentum``, standard deviations with ``std_momentum``.

All three run on every class at once, as tensor operations without a Python loop over classes or
components (segment reductions over the pixels of each class or component, see :mod:`.segments`):
the cost of an update grows with the pixels, hardly with the classes (``bench/bench_gmm.py``).

Everything is a buffer, so the mixture and its memory are saved and restored with a checkpoint.
Under ``torch.distributed`` the E-step is local to each rank (as the release's); the used pixels,
their labels and assignments are then gathered from every rank, and every rank pushes the same
gathered batch, so every rank holds the identical mixture; ``update`` is a collective call (every
rank must make it), and when one rank's input is refused every rank raises
(:func:`~gmmseg_lab.gmm.distributed.raise_together`), so no rank is left waiting in the gather.

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
from .density import diag_gaussian_log_prob, float32_overflow_risk, grouped_diag_gaussian_log_prob
from .distributed import all_gather_rows, raise_together
from .fit import E_STEPS
from .memory import FIFOMemory, StatsMemory
from .sinkhorn import segmented_sinkhorn_assign

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
        sinkhorn_iters: Sinkhorn-Knopp iterations of the E-step.
        sinkhorn_epsilon: the E-step's entropic regulariser.
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
        for name, value in (
            ("num_classes", num_classes),
            ("num_components", num_components),
            ("embed_dim", embed_dim),
            ("update_interval", update_interval),
            ("memory_size", memory_size),
            ("sinkhorn_iters", sinkhorn_iters),
        ):
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
        self.register_buffer("log_weights", torch.full((num_classes, num_components), -math.log(num_components)))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_m_steps", torch.zeros((), dtype=torch.long))
        # Classes that received samples since the last M-step: only these are re-estimated.
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        num_slots = num_classes * num_components
        if memory == "fifo":
            self.memory = FIFOMemory(num_slots, memory_size, embed_dim)
        else:
            if stats_decay is None and memory_size < 2:
                raise ValueError(
                    f"memory_size must be >= 2 for memory='stats' without stats_decay (the decay is "
                    f"1 - 1/memory_size, which must be > 0), got {memory_size}"
                )
            decay = 1.0 - 1.0 / memory_size if stats_decay is None else stats_decay
            self.memory = StatsMemory(num_slots, embed_dim, decay)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_components={self.num_components}, "
            f"embed_dim={self.embed_dim}, e_step={self.e_step!r}, memory={self.memory_kind!r}"
        )

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

    def _own_class_log_prob(self, x: Tensor, labels: Tensor) -> Tensor:
        """``[n, M]`` log-densities of each row of ``x`` under its own class's M components only
        (never all ``C * M``); ``labels`` ``[n]`` are classes (no ignored rows)."""
        means, stds = self._current_means(), self.stds
        if self._wide(x):  # huge inputs: float64, -inf below float32's range
            return grouped_diag_gaussian_log_prob(x.double(), labels, means.double(), stds.double()).float()
        return grouped_diag_gaussian_log_prob(x, labels, means, stds)

    def _check_log_prob(self, log_prob: object, n: int) -> Tensor:
        if not isinstance(log_prob, Tensor):
            raise TypeError(f"log_prob must be a torch.Tensor, got {type(log_prob).__name__}")
        c, m = self.num_classes, self.num_components
        if not log_prob.is_floating_point() or log_prob.shape not in ((n, c, m), (n, c * m)):
            raise ValueError(
                f"log_prob must be a floating-point tensor of shape [{n}, {c}, {m}] or [{n}, {c * m}] "
                f"(the component log-densities of x), got {log_prob.dtype} {tuple(log_prob.shape)}"
            )
        return log_prob.detach().reshape(n, c, m)

    def _e_step(self, x: Tensor, labels: Tensor, log_prob: Tensor | None = None) -> Tensor:
        """Hard component within its class for every labelled pixel, every class at once; ``-1`` where
        ignored. ``x``, ``labels`` (and ``log_prob``, ``[N, C, M]``) already checked."""
        out = torch.full_like(labels, -1)
        rows = (labels != self.ignore_index).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return out
        lab = labels.index_select(0, rows)
        if log_prob is not None:
            # [n, M]: each pixel's own-class row, no density recomputed.
            own = log_prob.reshape(-1, self.num_components).index_select(0, rows * self.num_classes + lab)
            bad = torch.isnan(own) | torch.isposinf(own)
            if bool(bad.any()):
                raise ValueError(
                    f"log_prob must not hold NaN or +inf (-inf, a density below the float range, is "
                    f"allowed), found {int(bad.sum())} in the labelled pixels' own-class entries"
                )
        else:
            own = self._own_class_log_prob(x.index_select(0, rows), lab)
        # Huge inputs can overflow float32 to -inf; keep the E-step finite and NaN-free.
        lowest = torch.finfo(own.dtype).min / 4
        own = torch.nan_to_num(own, nan=lowest, neginf=lowest, posinf=-lowest)
        if self.e_step == "sinkhorn":
            assigned = segmented_sinkhorn_assign(own, lab, self.num_classes, self.sinkhorn_iters, self.sinkhorn_epsilon)
        else:
            assigned = (own + self.log_weights.index_select(0, lab).to(own.dtype)).argmax(dim=1)
        return out.index_copy_(0, rows, assigned)

    @torch.no_grad()
    def assign_components(self, x: Tensor, labels: Tensor, log_prob: Tensor | None = None) -> Tensor:
        """E-step on a batch: hard component index within its class for each pixel, every class at once.

        Sinkhorn (``e_step="sinkhorn"``) per class over all the batch's labelled pixels of the class,
        as segmented tensor operations (:func:`~gmmseg_lab.gmm.sinkhorn.segmented_sinkhorn_assign`);
        or the posterior argmax with the mixture weights (``"em"``).

        Args:
            x: ``[N, D]`` embeddings. labels: ``[N]`` class indices (``ignore_index`` allowed).
            log_prob: optional ``[N, C, M]`` (or ``[N, C*M]``) component log-densities of ``x``, as
                :meth:`component_log_prob` returns them (the head's forward has them already): each
                pixel's own-class row is taken from it, so no density is computed again. Without it
                only each pixel's M own-class log-densities are computed. ``-inf`` entries (densities
                below float32's range) are allowed; NaN and ``+inf`` are refused.

        Returns:
            ``[N]`` int64 component in ``[0, M)``, ``-1`` where the label is ignored. The target of
            the component loss is ``label * M + component``.
        """
        check_float_matrix(x, "x", cols=self.embed_dim)
        labels = self._check_labels(labels, x.shape[0])
        if log_prob is not None:
            log_prob = self._check_log_prob(log_prob, x.shape[0])
        return self._e_step(x.detach(), labels, log_prob)

    def _check_assignment(self, assignment: object, labelled: Tensor) -> Tensor:
        n, m = labelled.shape[0], self.num_components
        if not isinstance(assignment, Tensor):
            raise TypeError(f"assignment must be a torch.Tensor, got {type(assignment).__name__}")
        if assignment.dtype.is_floating_point or assignment.dtype == torch.bool or assignment.is_complex():
            raise ValueError(f"assignment must be an integer tensor, got dtype {assignment.dtype}")
        if assignment.shape != (n,):
            raise ValueError(f"assignment must have shape [{n}] (one per row of x), got {tuple(assignment.shape)}")
        assignment = assignment.to(device=labelled.device, dtype=torch.long)
        bad = torch.where(labelled, (assignment < 0) | (assignment >= m), assignment != -1)
        if bool(bad.any()):
            raise ValueError(
                f"assignment must be in [0, {m}) where the label is a class and -1 where it is "
                f"ignore_index ({self.ignore_index}), as assign_components returns it; found "
                f"{int(bad.sum())} entries that are not, e.g. {assignment[bad][:5].tolist()}"
            )
        return assignment

    # ------------------------------------------------------------------ memory and M-step
    @torch.no_grad()
    def update(
        self, x: Tensor, labels: Tensor, correct: Tensor | None = None, assignment: Tensor | None = None
    ) -> dict:
        """One online-EM step: E-step on the batch, memory update, and the M-step when it is due.

        One E-step per step, as the paper's release: one assignment per class over all the batch's
        labelled pixels (:meth:`assign_components`), which is also the component loss's target;
        the pixels marked ``correct`` then feed the memory with it, every component at once.

        Args:
            x: ``[N, D]`` embeddings (detached internally).
            labels: ``[N]`` ground-truth classes; ``ignore_index`` pixels are skipped.
            correct: optional ``[N]`` bool; only pixels marked True feed the memory (the paper uses
                the correctly classified ones).
            assignment: optional ``[N]`` int64 E-step result, as :meth:`assign_components` returns it
                for this ``x`` and ``labels`` (the head passes the one it used for the loss): in
                ``[0, M)`` where labelled, ``-1`` where ignored. ``None``: computed here.

        Returns:
            ``{"pixels": int, "classes": int, "m_step": bool}`` for logging (pixels over all ranks).

        Raises:
            ValueError: bad ``x``, ``labels``, ``correct`` or ``assignment``, before any state
                changes (``TypeError`` for a non-tensor). Under ``torch.distributed`` every rank
                raises when one rank's input is bad (that rank its own error, the others one naming
                it), instead of leaving them waiting.

        Under ``torch.distributed`` the E-step is local to each rank (as the release's); the used
        pixels, with their labels and assignments, are then gathered from every rank and every rank
        pushes the same gathered batch, so the mixtures stay bit-identical.
        """
        error = None
        try:
            check_float_matrix(x, "x", cols=self.embed_dim)
            labels = self._check_labels(labels, x.shape[0])
            labelled = labels != self.ignore_index
            use = labelled
            if correct is not None:
                if not isinstance(correct, Tensor) or correct.dtype != torch.bool or correct.shape != labels.shape:
                    raise ValueError(
                        f"correct must be a bool tensor of shape [{labels.shape[0]}], got "
                        f"{getattr(correct, 'dtype', type(correct))} "
                        f"{tuple(getattr(correct, 'shape', ()))}"
                    )
                use = use & correct
            if assignment is not None:
                assignment = self._check_assignment(assignment, labelled)
            used = use.nonzero(as_tuple=True)[0]
            x_local = x.detach().index_select(0, used).to(self.means.dtype)
            if x.dtype != self.means.dtype:
                # Finite float64 beyond float32's range turns to inf here; in the statistics memory one such
                # sample would freeze its component for good: refuse it like any non-finite x.
                check_finite(x_local, f"x (the used rows, cast to the mixture's {self.means.dtype})")
        except (TypeError, ValueError) as exc:
            error = exc
        # The gathers below need every rank: agree first, so a bad batch on one rank stops them all.
        raise_together(error, self.means.device, what="GMMClassifier.update's input")
        if assignment is None:
            assignment = self._e_step(x.detach(), labels)  # local, on all labelled pixels
        m = self.num_components
        slots_used = all_gather_rows((labels * m + assignment).index_select(0, used))
        x_used = all_gather_rows(x_local)

        self.memory.push_many(slots_used, x_used, max_per_slot=self.samples_per_component)
        present = torch.bincount(torch.div(slots_used, m, rounding_mode="floor"), minlength=self.num_classes) > 0
        self.seen |= present

        self.num_updates += 1
        m_step = int(self.num_updates) % self.update_interval == 0
        if m_step:
            self.m_step()
        return {"pixels": int(slots_used.numel()), "classes": int(present.sum()), "m_step": m_step}

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
