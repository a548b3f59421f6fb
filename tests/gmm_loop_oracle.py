"""The per-class loop reference of :class:`~gmmseg_lab.gmm.GMMClassifier`'s online EM step.

The classifier's own code before it was vectorised (git 4bae944: ``assign_components``,
``_assign_class``, ``update``, ``_subsample``, ``FIFOMemory.push``/``moments``, ``StatsMemory.push``
and ``m_step``), changed only to the single E-step of the paper's release: one Sinkhorn per class
over all the batch's labelled pixels (scored in ``x``'s precision, the float32 range check on those
pixels), optionally read from a precomputed ``log_prob``; the memory then gets the used pixels with
that assignment. Everything else is a plain Python loop over classes, components and slots, on the
same buffers, so :mod:`tests.test_gmm_vectorized` can compare both state for state and
``bench/bench_gmm.py`` can time both. Not part of the library.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gmmseg_lab.gmm import FIFOMemory, GMMClassifier, diag_gaussian_log_prob, normalized_sinkhorn_assign
from gmmseg_lab.gmm._checks import check_finite, check_float_matrix
from gmmseg_lab.gmm.distributed import all_gather_rows, raise_together


def loop_subsample(rows: Tensor, k: int | None) -> Tensor:
    """At most ``k`` evenly spaced rows, by float32 ``linspace`` (the code before vectorising)."""
    n = rows.shape[0]
    if k is None or n <= k:
        return rows
    idx = torch.linspace(0, n - 1, steps=k, device=rows.device).round().long()
    return rows[idx]


def loop_push(memory, slot: int, samples: Tensor) -> None:
    """One slot's push, on the buffers of a FIFOMemory or a StatsMemory."""
    n = samples.shape[0]
    if n == 0:
        return
    if isinstance(memory, FIFOMemory):
        if n > memory.capacity:  # only the newest `capacity` survive anyway
            samples, n = samples[-memory.capacity :], memory.capacity
        start = int(memory.ptr[slot])
        idx = (torch.arange(n, device=samples.device) + start) % memory.capacity
        memory.queue[slot, idx] = samples.to(memory.queue.dtype)
        memory.ptr[slot] = (start + n) % memory.capacity
        memory.count[slot] = min(int(memory.count[slot]) + n, memory.capacity)
        return
    samples = samples.double()
    factor = memory.decay**n
    memory.weight[slot] = memory.weight[slot] * factor + n
    memory.total[slot] = memory.total[slot] * factor + samples.sum(dim=0)
    memory.total_sq[slot] = memory.total_sq[slot] * factor + (samples * samples).sum(dim=0)


def loop_moments(memory, slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(count, sum, sum_sq)`` float64, one FIFO slot at a time over its valid rows."""
    if not isinstance(memory, FIFOMemory):
        return memory.weight[slots], memory.total[slots], memory.total_sq[slots]
    dim = memory.queue.shape[2]
    count = torch.zeros(len(slots), dtype=torch.float64, device=memory.queue.device)
    total = torch.zeros(len(slots), dim, dtype=torch.float64, device=memory.queue.device)
    total_sq = torch.zeros_like(total)
    for i, slot in enumerate(slots.tolist()):
        rows = memory.queue[slot, : int(memory.count[slot])].double()
        count[i] = rows.shape[0]
        total[i] = rows.sum(dim=0)
        total_sq[i] = (rows * rows).sum(dim=0)
    return count, total, total_sq


class LoopGMMClassifier(GMMClassifier):
    """:class:`GMMClassifier` with the E-step, memory push and M-step as per-class Python loops."""

    def _assign_class(self, x_c: Tensor, cls: int, wide: bool = False, log_prob: Tensor | None = None) -> Tensor:
        if log_prob is None:
            means, stds = self._current_means()[cls], self.stds[cls]
            if wide:
                log_prob = diag_gaussian_log_prob(x_c.double(), means.double(), stds.double(), validate=False).float()
            else:
                log_prob = diag_gaussian_log_prob(x_c, means, stds, validate=False, range_check=False)
        lowest = torch.finfo(log_prob.dtype).min / 4
        log_prob = torch.nan_to_num(log_prob, nan=lowest, neginf=lowest, posinf=-lowest)
        if self.e_step == "sinkhorn":
            return normalized_sinkhorn_assign(log_prob, self.sinkhorn_iters, self.sinkhorn_epsilon)
        return (log_prob + self.log_weights[cls]).argmax(dim=1)

    @torch.no_grad()
    def assign_components(self, x: Tensor, labels: Tensor, log_prob: Tensor | None = None) -> Tensor:
        check_float_matrix(x, "x", cols=self.embed_dim)
        labels = self._check_labels(labels, x.shape[0])
        x = x.detach()
        out = torch.full_like(labels, -1)
        labelled = labels != self.ignore_index
        classes = torch.unique(labels[labelled]).tolist()
        if log_prob is not None:
            log_prob = log_prob.detach().reshape(x.shape[0], self.num_classes, self.num_components)
        wide = bool(classes) and log_prob is None and self._wide(x[labelled])
        for cls in classes:
            idx = (labels == cls).nonzero(as_tuple=True)[0]
            out[idx] = self._assign_class(x[idx], cls, wide, None if log_prob is None else log_prob[idx, cls])
        return out

    @torch.no_grad()
    def update(
        self, x: Tensor, labels: Tensor, correct: Tensor | None = None, assignment: Tensor | None = None
    ) -> dict:
        error = None
        try:
            check_float_matrix(x, "x", cols=self.embed_dim)
            labels = self._check_labels(labels, x.shape[0])
            use = labels != self.ignore_index
            if correct is not None:
                use = use & correct
            x_local = x.detach()[use].to(self.means.dtype)
            check_finite(x_local, f"x (the used rows, cast to the mixture's {self.means.dtype})")
        except (TypeError, ValueError) as exc:
            error = exc
        raise_together(error, self.means.device, what="GMMClassifier.update's input")
        if assignment is None:
            assignment = self.assign_components(x, labels)
        x_used = all_gather_rows(x_local)
        labels_used = all_gather_rows(labels[use])
        assignment_used = all_gather_rows(assignment[use])

        classes = torch.unique(labels_used).tolist()
        m = self.num_components
        for cls in classes:
            in_class = labels_used == cls
            x_c, a_c = x_used[in_class], assignment_used[in_class]
            for comp in range(m):
                loop_push(self.memory, cls * m + comp, loop_subsample(x_c[a_c == comp], self.samples_per_component))
            self.seen[cls] = True

        self.num_updates += 1
        m_step = int(self.num_updates) % self.update_interval == 0
        if m_step:
            self.m_step()
        return {"pixels": int(labels_used.numel()), "classes": len(classes), "m_step": m_step}

    @torch.no_grad()
    def m_step(self) -> None:
        classes = self.seen.nonzero(as_tuple=True)[0]
        if classes.numel() == 0:
            return
        m, d = self.num_components, self.embed_dim
        slots = (classes[:, None] * m + torch.arange(m, device=classes.device)).reshape(-1)
        count, total, total_sq = loop_moments(self.memory, slots)
        count, total, total_sq = count.view(-1, m), total.view(-1, m, d), total_sq.view(-1, m, d)
        has_data = count > 0
        safe = count.clamp_min(1e-300).unsqueeze(-1)
        if self.normalize_means:
            norm = total.norm(dim=-1, keepdim=True)
            has_data &= norm.squeeze(-1) > 0
            new_means = total / norm.clamp_min(1e-300)
        else:
            new_means = total / safe
        var = (total_sq / safe - 2 * new_means * total / safe + new_means * new_means).clamp_min(0.0)
        new_stds = (var + self.var_floor).sqrt()

        old_means = self.means[classes].double()
        old_stds = self.stds[classes].double()
        means = self.mean_momentum * old_means + (1 - self.mean_momentum) * new_means
        if self.normalize_means:
            norm = means.norm(dim=-1, keepdim=True)
            means = torch.where(norm > 1e-150, means / norm.clamp_min(1e-150), new_means)
        stds = self.std_momentum * old_stds + (1 - self.std_momentum) * new_stds
        finite_max = torch.finfo(self.stds.dtype).max
        stds = stds.clamp(min=math.sqrt(self.var_floor), max=finite_max)

        keep = (has_data & torch.isfinite(means).all(-1) & torch.isfinite(stds).all(-1)).unsqueeze(-1)
        self.means[classes] = torch.where(keep, means, old_means).to(self.means.dtype)
        self.stds[classes] = torch.where(keep, stds, old_stds).to(self.stds.dtype)
        if self.e_step == "em":
            weights = (count / count.sum(dim=1, keepdim=True).clamp_min(1e-300)).clamp_min(1e-6)
            weights = weights / weights.sum(dim=1, keepdim=True)
            has_any = (count.sum(dim=1) > 0).unsqueeze(-1)
            self.log_weights[classes] = torch.where(
                has_any, weights.log().to(self.log_weights.dtype), self.log_weights[classes]
            )
        self.seen[classes] = False
        self.num_m_steps += 1
