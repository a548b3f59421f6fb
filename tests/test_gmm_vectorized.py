"""The vectorised online EM step (every class at once) against the per-class loop it replaces.

The oracle, :class:`tests.gmm_loop_oracle.LoopGMMClassifier`, is the classifier's loop code before
vectorising with the single E-step of the release. On random batches (absent classes, one-pixel
classes, ignored pixels, ``correct`` masks, many updates across M-steps and FIFO wrap-around, both
memories, both E-steps, with and without the head's precomputed ``log_prob``) both must give the
same assignments exactly, the same memory and the same mixture (to 1e-6). The building blocks
(segmented Sinkhorn, own-class densities, evenly spaced subsample, the memories' batch push and
moments) are checked on their own first.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmmseg_lab.gmm import (
    FIFOMemory,
    GMMClassifier,
    StatsMemory,
    diag_gaussian_log_prob,
    evenly_spaced_keep,
    grouped_diag_gaussian_log_prob,
    normalized_sinkhorn_assign,
    segmented_sinkhorn_assign,
)
from gmmseg_lab.gmm import classifier as classifier_module
from gmmseg_lab.gmm.segments import group_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gmm_loop_oracle import LoopGMMClassifier, loop_moments, loop_push, loop_subsample

PROPERTY = settings(
    max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Single-threaded torch (see conftest.single_thread_torch)."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# Building blocks


def _linspace_rows(n: int, k: int) -> list[int]:
    return loop_subsample(torch.arange(n), k).tolist()


def _kept_rows(n: int, k: int | None) -> list[int]:
    keep, new_rank, new_size = evenly_spaced_keep(torch.arange(n), torch.full((n,), n), k)
    assert new_rank[keep].tolist() == list(range(int(keep.sum()))), "the kept rows are not numbered 0, 1, ..."
    assert int(new_size[0]) == int(keep.sum()) if n else True
    return keep.nonzero().flatten().tolist()


@pytest.mark.parametrize("k", [1, 2, 4, 6, 20, 32])
def test_evenly_spaced_subsample_reproduces_linspace_exactly_for_even_k(k):
    """No ties exist for even k (k - 1 odd), and none for k = 1, 2: the integer arithmetic gives the
    very indices of ``torch.linspace(0, n - 1, k).round()``."""
    for n in range(1500):
        assert _kept_rows(n, k) == _linspace_rows(n, k), (n, k)
    assert _kept_rows(50, None) == list(range(50))


@pytest.mark.parametrize("k", [3, 5, 7, 15])
def test_evenly_spaced_subsample_differs_from_float32_linspace_only_at_exact_ties(k):
    """For odd k a position can be exactly half-way between two rows; ties go to even here, while
    float32 linspace's rounding error sends some of them either way."""
    for n in range(k + 1, 2000):
        ours, theirs = _kept_rows(n, k), _linspace_rows(n, k)
        for j, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                assert 2 * (j * (n - 1) % (k - 1)) == k - 1 and abs(a - b) == 1, (n, k, j, a, b)


def _segments(n: int, num_segments: int, g: torch.Generator) -> torch.Tensor:
    """Very imbalanced groups with empty and one-row groups among them."""
    weights = torch.rand(num_segments, generator=g) ** 4
    weights[::3] = 0.0  # empty groups
    seg = torch.multinomial(weights + 1e-12, n, replacement=True, generator=g)
    lonely = torch.randperm(n, generator=g)[: min(3, n)]
    seg[lonely] = num_segments - 1 - torch.arange(len(lonely))  # some one-row groups
    return seg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_segmented_sinkhorn_equals_one_sinkhorn_per_group(dtype, scale):
    g = _gen(0)
    for trial in range(5):
        n, m, s = 700, 5, 40
        seg = _segments(n, s, g)
        log_prob = (-torch.rand(n, m, generator=g) * 50 - 10 * trial).to(dtype) * scale
        ours = segmented_sinkhorn_assign(log_prob, seg, s)
        for group in torch.unique(seg).tolist():
            rows = seg == group
            assert torch.equal(ours[rows], normalized_sinkhorn_assign(log_prob[rows])), (trial, group)


def test_segmented_sinkhorn_edge_cases():
    assert segmented_sinkhorn_assign(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3).shape == (0,)
    one = segmented_sinkhorn_assign(torch.tensor([[-3.0, -1.0]]), torch.tensor([2]), 3)
    assert one.tolist() == normalized_sinkhorn_assign(torch.tensor([[-3.0, -1.0]])).tolist()
    same = segmented_sinkhorn_assign(torch.zeros(6, 3), torch.tensor([0, 0, 1, 1, 1, 0]), 2)  # all ties
    assert same.tolist() == [0] * 6
    for eps in (1e-4, 1e3):  # no overflow or NaN for any epsilon
        lp = -torch.rand(50, 4, generator=_gen(1)) * 1e4
        seg = torch.randint(0, 3, (50,), generator=_gen(2))
        out = segmented_sinkhorn_assign(lp, seg, 3, epsilon=eps)
        for group in range(3):
            rows = seg == group
            assert torch.equal(out[rows], normalized_sinkhorn_assign(lp[rows], epsilon=eps))
    with pytest.raises(ValueError, match="log_prob must be finite"):
        segmented_sinkhorn_assign(torch.tensor([[0.0, math.inf]]), torch.tensor([0]), 1)
    with pytest.raises(ValueError, match=r"segments must be an int64 tensor of shape \[2\]"):
        segmented_sinkhorn_assign(torch.zeros(2, 3), torch.tensor([0]), 1)
    with pytest.raises(ValueError, match="n_iters"):
        segmented_sinkhorn_assign(torch.zeros(2, 3), torch.tensor([0, 0]), 1, n_iters=0)
    with pytest.raises(ValueError, match=r"segments must be in \[0, 2\) \(num_segments\), found 0..2"):
        segmented_sinkhorn_assign(torch.zeros(2, 3), torch.tensor([0, 2]), 2)


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("chunk", [7, 512])
def test_own_class_densities_equal_the_full_computation(offset, chunk):
    g = _gen(3)
    n, groups, m, d = 300, 9, 4, 6
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    means = torch.randn(groups, m, d, generator=g, dtype=torch.float64) + offset
    stds = torch.rand(groups, m, d, generator=g, dtype=torch.float64) * 2 + 0.1
    lab = _segments(n, groups, g)
    full = diag_gaussian_log_prob(x, means.view(-1, d), stds.view(-1, d)).view(n, groups, m)
    expected = full[torch.arange(n), lab]
    torch.testing.assert_close(
        grouped_diag_gaussian_log_prob(x, lab, means, stds, chunk_rows=chunk), expected, rtol=1e-10, atol=1e-8
    )
    # float32: against the float64 densities of the float32-rounded inputs (the rounding of x itself
    # is not this function's error); no expansion of the square, so no cancellation far out.
    x32, means32, stds32 = x.float(), means.float(), stds.float()
    ours32 = grouped_diag_gaussian_log_prob(x32, lab, means32, stds32, chunk_rows=chunk)
    assert ours32.dtype == torch.float32
    expected32 = grouped_diag_gaussian_log_prob(x32.double(), lab, means32.double(), stds32.double())
    torch.testing.assert_close(ours32.double(), expected32, rtol=1e-6, atol=1e-5)
    assert grouped_diag_gaussian_log_prob(x[:0], lab[:0], means, stds).shape == (0, m)


def test_group_rows_is_a_stable_grouping():
    seg = torch.tensor([2, 0, 2, 1, 0, 2])
    order, sorted_ids, rank, counts = group_rows(seg, 4)
    assert order.tolist() == [1, 4, 3, 0, 2, 5] and sorted_ids.tolist() == [0, 0, 1, 2, 2, 2]
    assert rank.tolist() == [0, 1, 0, 0, 1, 2] and counts.tolist() == [2, 1, 3, 0]


def _random_pushes(g: torch.Generator, num_slots: int, steps: int, max_n: int, dim: int = 3):
    for _ in range(steps):
        n = int(torch.randint(0, max_n, (1,), generator=g))
        yield torch.randint(0, num_slots, (n,), generator=g), torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("capacity", [1, 4, 9])
@pytest.mark.parametrize("k", [None, 1, 2, 4])
def test_fifo_batch_push_equals_one_push_per_slot(capacity, k):
    g = _gen(4)
    ours, loop = FIFOMemory(6, capacity, 3), FIFOMemory(6, capacity, 3)
    for slots, samples in _random_pushes(g, 6, 25, 40):
        ours.push_many(slots, samples, max_per_slot=k)
        for slot in range(6):
            loop_push(loop, slot, loop_subsample(samples[slots == slot], k))
        for name in ("queue", "ptr", "count"):
            assert torch.equal(getattr(ours, name), getattr(loop, name)), name
        chosen = torch.tensor([5, 0, 3, 3])
        for a, b in zip(ours.moments(chosen), loop_moments(loop, chosen)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [None, 2, 4])
def test_stats_batch_push_equals_one_push_per_slot(k):
    g = _gen(5)
    ours, loop = StatsMemory(6, 3, decay=0.97), StatsMemory(6, 3, decay=0.97)
    for slots, samples in _random_pushes(g, 6, 25, 40):
        ours.push_many(slots, samples, max_per_slot=k)
        for slot in range(6):
            loop_push(loop, slot, loop_subsample(samples[slots == slot], k))
        for name in ("weight", "total", "total_sq"):
            torch.testing.assert_close(getattr(ours, name), getattr(loop, name), rtol=1e-12, atol=1e-12)


def test_fifo_moments_read_many_slots_in_blocks(monkeypatch):
    """Blocks of slots (here forced to a few rows each) give the sums of the one-slot-at-a-time loop."""
    from gmmseg_lab.gmm import memory as memory_module

    mem = FIFOMemory(40, 30, 4)
    g = _gen(6)
    for slots, samples in _random_pushes(g, 40, 10, 300, dim=4):
        mem.push_many(slots, samples)
    slots = torch.randperm(40, generator=g)[:25]
    expected = loop_moments(mem, slots)
    for block in (1, 50, 2**22):
        monkeypatch.setattr(memory_module, "MOMENTS_BLOCK", block)
        for a, b in zip(mem.moments(slots), expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    count, total, total_sq = FIFOMemory(3, 5, 2).moments(torch.tensor([0, 2]))
    assert count.tolist() == [0.0, 0.0] and not total.any() and not total_sq.any()


# ------------------------------------------------------------------------------------------------
# The whole step against the loop


def _batch(
    g: torch.Generator,
    n: int,
    c: int,
    d: int,
    *,
    absent: int | None = None,
    lonely: int | None = None,
    ignored: float = 0.2,
    scale: float = 1.0,
    offset: float = 0.0,
    normalize: bool = True,
    dtype=torch.float32,
):
    x = torch.randn(n, d, generator=g, dtype=dtype) + offset
    x = F.normalize(x, dim=1) if normalize else x * scale
    labels = torch.randint(0, c, (n,), generator=g)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % c
    if lonely is not None and n > 1:  # exactly one pixel of this class
        labels[labels == lonely] = (lonely + 1) % c
        labels[int(torch.randint(0, n, (1,), generator=g))] = lonely
    labels[torch.rand(n, generator=g) < ignored] = 255
    correct = torch.rand(n, generator=g) < 0.75
    return x, labels, correct


def _assert_same_state(ours: GMMClassifier, loop: GMMClassifier, where: str, tol: float = 1e-6) -> None:
    """Integer buffers (FIFO pointers and counts, counters, seen) equal; float ones to ``tol`` (relative
    as well: the statistics memory's sums of squares of 1e18-sized inputs are ~1e37)."""
    for (name, a), b in zip(ours.state_dict().items(), loop.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(
                a.double(), b.double(), rtol=tol, atol=tol, msg=lambda m, name=name: f"{where}, {name}: {m}"
            )
        else:
            assert torch.equal(a, b), f"{where}: {name} differs"


def _pair(**kwargs) -> tuple[GMMClassifier, LoopGMMClassifier]:
    torch.manual_seed(0)
    ours = GMMClassifier(**kwargs)
    torch.manual_seed(0)
    loop = LoopGMMClassifier(**kwargs)
    _assert_same_state(ours, loop, "initialisation", tol=0)
    return ours, loop


def _step(ours, loop, x, labels, correct, precomputed: bool, where: str) -> None:
    """One step on both: the E-step compared exactly, then the update with the same path."""
    log_prob = ours.component_log_prob(x) if precomputed else None
    a_ours = ours.assign_components(x, labels, log_prob=log_prob)
    a_loop = loop.assign_components(x, labels, log_prob=log_prob)
    assert torch.equal(a_ours, a_loop), f"{where}: {int((a_ours != a_loop).sum())} assignments differ"
    if precomputed:  # the head's path: the loss's assignment goes to the update
        info_ours = ours.update(x, labels, correct=correct, assignment=a_ours)
        info_loop = loop.update(x, labels, correct=correct, assignment=a_loop)
    else:  # the update's own E-step
        info_ours = ours.update(x, labels, correct=correct)
        info_loop = loop.update(x, labels, correct=correct)
    assert info_ours == info_loop, where
    _assert_same_state(ours, loop, where)


@pytest.mark.parametrize("precomputed", [False, True], ids=["own densities", "precomputed log_prob"])
@pytest.mark.parametrize("e_step", ["sinkhorn", "em"])
@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_many_updates_equal_the_loop(memory, e_step, precomputed):
    c, m, d = 7, 3, 8
    ours, loop = _pair(
        num_classes=c,
        num_components=m,
        embed_dim=d,
        e_step=e_step,
        memory=memory,
        update_interval=3,
        memory_size=25,
        samples_per_component=4,
        mean_momentum=0.6,
    )
    g = _gen(7)
    for step in range(30):
        n = int(torch.randint(1, 400, (1,), generator=g))
        x, labels, correct = _batch(g, n, c, d, absent=step % c, lonely=(step + 3) % c)
        _step(ours, loop, x, labels, correct if step % 4 else None, precomputed, f"step {step}")
    assert int(ours.num_m_steps) == 10
    if memory == "fifo":
        assert int(ours.memory.count.max()) == 25, "the FIFO never wrapped around"


@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_150_classes_equal_the_loop(memory):
    c, m, d = 150, 5, 64
    ours, loop = _pair(
        num_classes=c,
        num_components=m,
        embed_dim=d,
        memory=memory,
        update_interval=2,
        memory_size=40,
        samples_per_component=20,
        mean_momentum=0.9,
    )
    g = _gen(8)
    for step in range(4):
        x, labels, correct = _batch(g, 4096, c, d, absent=step, lonely=step + 10)
        _step(ours, loop, x, labels, correct, precomputed=step % 2 == 1, where=f"step {step}")
    assert int(ours.num_m_steps) == 2


@PROPERTY
@given(
    c=st.integers(1, 6),
    m=st.integers(1, 4),
    d=st.integers(1, 6),
    n=st.integers(0, 120),
    memory=st.sampled_from(["fifo", "stats"]),
    e_step=st.sampled_from(["sinkhorn", "em"]),
    k=st.sampled_from([None, 1, 2, 4]),
    memory_size=st.integers(2, 30),
    interval=st.integers(1, 3),
    normalize=st.booleans(),
    log_scale=st.floats(-2, 2),
    offset=st.sampled_from([0.0, 3.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    precomputed=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_configurations_equal_the_loop(
    c, m, d, n, memory, e_step, k, memory_size, interval, normalize, log_scale, offset, dtype, precomputed, seed
):
    ours, loop = _pair(
        num_classes=c,
        num_components=m,
        embed_dim=d,
        e_step=e_step,
        memory=memory,
        update_interval=interval,
        memory_size=memory_size,
        samples_per_component=k,
        normalize_means=normalize,
        mean_momentum=0.5,
    )
    g = _gen(seed)
    for step in range(4):
        x, labels, correct = _batch(
            g, n, c, d, normalize=normalize, scale=10.0**log_scale, offset=offset, dtype=dtype, lonely=step % c
        )
        _step(ours, loop, x, labels, correct, precomputed, f"step {step}")


def test_huge_inputs_take_the_float64_path_like_the_loop():
    ours, loop = _pair(
        num_classes=3,
        num_components=2,
        embed_dim=4,
        memory="stats",
        update_interval=1,
        normalize_means=False,
        mean_momentum=0.5,
    )
    g = _gen(9)
    for scale in (1.0, 1e18, 3e38, 1e-30):
        x = (torch.randn(60, 4, generator=g) * scale).clamp(-3.4e38, 3.4e38)
        labels = torch.randint(0, 3, (60,), generator=g)
        _step(ours, loop, x, labels, None, False, f"scale {scale:g}")


# ------------------------------------------------------------------------------------------------
# One E-step per step, no loop over classes


def test_update_runs_one_e_step_and_none_when_given_the_assignment(monkeypatch):
    calls = Counter()
    real = classifier_module.segmented_sinkhorn_assign
    monkeypatch.setattr(
        classifier_module, "segmented_sinkhorn_assign", lambda *a, **k: calls.update(["sinkhorn"]) or real(*a, **k)
    )
    real_density = classifier_module.grouped_diag_gaussian_log_prob
    monkeypatch.setattr(
        classifier_module,
        "grouped_diag_gaussian_log_prob",
        lambda *a, **k: calls.update(["density"]) or real_density(*a, **k),
    )
    clf = GMMClassifier(4, num_components=3, embed_dim=5)
    x, labels, correct = _batch(_gen(10), 200, 4, 5)
    clf.update(x, labels, correct=correct)
    assert calls == {"sinkhorn": 1, "density": 1}
    calls.clear()
    assignment = clf.assign_components(x, labels, log_prob=clf.component_log_prob(x))
    assert calls == {"sinkhorn": 1}, "the precomputed log-densities were computed again"
    calls.clear()
    clf.update(x, labels, correct=correct, assignment=assignment)
    assert not calls, "update recomputed the E-step it was given"


def _aten_ops_of_one_update(num_classes: int, memory: str) -> Counter:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:  # views cost nothing (and a full slice is dispatched as an alias)
                self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    clf = GMMClassifier(num_classes, num_components=3, embed_dim=5, memory=memory, update_interval=1, memory_size=30)
    g = _gen(11)
    x = F.normalize(torch.randn(900, 5, generator=g), dim=1)
    labels = torch.arange(900) % num_classes  # every class present
    clf.update(x, labels)  # warm-up
    with Count() as counter:
        clf.update(x, labels, correct=torch.rand(900, generator=g) < 0.8)
    return counter.ops


@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_the_number_of_tensor_operations_does_not_grow_with_the_classes(memory):
    """No Python loop over classes, components or slots: the E-step, the push and the M-step make as
    many tensor operations at 60 classes as at 3."""
    few, many = _aten_ops_of_one_update(3, memory), _aten_ops_of_one_update(60, memory)
    assert few == many, {op: (few[op], many[op]) for op in few.keys() | many.keys() if few[op] != many[op]}


# ------------------------------------------------------------------------------------------------
# The new arguments are checked


@pytest.mark.parametrize(
    "assignment, match",
    [
        ([0, 1, -1, 0], r"assignment must be a torch.Tensor"),
        (torch.tensor([0.0, 1.0, -1.0, 0.0]), "assignment must be an integer tensor"),
        (torch.tensor([0, 1, -1]), r"assignment must have shape \[4\]"),
        (torch.tensor([0, 3, -1, 0]), r"assignment must be in \[0, 3\) where the label is a class"),
        (torch.tensor([0, -1, -1, 0]), r"assignment must be in \[0, 3\) .* found 1 entries that are not, e.g. \[-1\]"),
        (torch.tensor([0, 1, 2, 0]), r"-1 where it is ignore_index \(255\)"),
    ],
)
def test_a_bad_assignment_is_refused_before_any_state_changes(assignment, match):
    clf = GMMClassifier(3, num_components=3, embed_dim=4, update_interval=1)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    x = F.normalize(torch.randn(4, 4), dim=1)
    with pytest.raises((TypeError, ValueError), match=match):
        clf.update(x, torch.tensor([0, 1, 255, 2]), assignment=assignment)
    for name, value in clf.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_log_prob_is_checked_and_may_hold_minus_infinity():
    clf = GMMClassifier(3, num_components=2, embed_dim=4)
    x = F.normalize(torch.randn(5, 4), dim=1)
    labels = torch.tensor([0, 1, 2, 255, 0])
    log_prob = clf.component_log_prob(x)
    flat = clf.assign_components(x, labels, log_prob=log_prob.flatten(1))
    assert torch.equal(flat, clf.assign_components(x, labels, log_prob=log_prob))
    with pytest.raises(ValueError, match=r"log_prob must be a floating-point tensor of shape \[5, 3, 2\] or \[5, 6\]"):
        clf.assign_components(x, labels, log_prob=log_prob[:, :2])
    with pytest.raises(TypeError, match="log_prob must be a torch.Tensor"):
        clf.assign_components(x, labels, log_prob=log_prob.tolist())
    bad = log_prob.clone()
    bad[1, 1, 0] = math.nan
    with pytest.raises(ValueError, match=r"log_prob must not hold NaN or \+inf .* found 1"):
        clf.assign_components(x, labels, log_prob=bad)
    bad[1, 1, 0] = -math.inf  # a density below float32's range: allowed
    assert clf.assign_components(x, labels, log_prob=bad)[1] in (0, 1)
    bad[3, 0, 0] = math.nan  # ignored pixel: never read
    assert clf.assign_components(x, labels, log_prob=bad)[3] == -1


def test_own_class_densities_carry_gradients():
    g = _gen(12)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    means = torch.randn(4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    stds = (torch.rand(4, 2, 3, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    groups = torch.randint(0, 4, (20,), generator=g)
    assert torch.autograd.gradcheck(
        lambda a, b, c: grouped_diag_gaussian_log_prob(a, groups, b, c, chunk_rows=7), (x, means, stds)
    )
