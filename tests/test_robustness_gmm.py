"""GMM-side faults: non-finite features, extreme magnitudes, a class that never gets a pixel.

Defined behaviour (see the docstring of gmmseg_lab.gmm.classifier and docs/robustness.md): every
entry point that takes embeddings raises ``ValueError`` naming ``x`` with the count of NaN/infinite
values and of the rows holding them, before touching any state; finite inputs of any magnitude keep
the mixture and its memory finite; a class without pixels keeps its initial parameters.
"""

from __future__ import annotations

import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

from gmmseg_lab.gmm import GMMClassifier, diag_gaussian_log_prob, fit_gmm, normalized_sinkhorn_assign, sinkhorn

C, M, D, N = 3, 2, 5, 24


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Single-threaded torch (see conftest.single_thread_torch)."""


def _trained(memory: str = "fifo", e_step: str = "sinkhorn", **kwargs) -> GMMClassifier:
    torch.manual_seed(0)
    clf = GMMClassifier(
        C, M, D, e_step=e_step, memory=memory, update_interval=2, mean_momentum=0.5, memory_size=40, **kwargs
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        clf.update(F.normalize(torch.randn(N, D, generator=g), dim=1), torch.randint(0, C, (N,), generator=g))
    return clf


def _state(clf: GMMClassifier) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clf.state_dict().items()}


def _assert_same_state(clf: GMMClassifier, before: dict[str, torch.Tensor], what: str) -> None:
    for name, value in clf.state_dict().items():
        assert torch.equal(value, before[name]), f"{what} changed {name} although it raised"


def _all_finite(clf: GMMClassifier) -> bool:
    return all(bool(torch.isfinite(b).all()) for b in clf.buffers() if b.is_floating_point())


# ------------------------------------------------------------------------------------------------
# NaN / inf embeddings


def _faulty_x(fault: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, int]:
    """(x, labels, correct, non-finite values, rows holding them) for one kind of fault."""
    g = torch.Generator().manual_seed(2)
    x = F.normalize(torch.randn(N, D, generator=g), dim=1)
    labels = torch.randint(0, C, (N,), generator=g)
    correct = None
    if fault == "one NaN value":
        x[3, 1] = math.nan
        return x, labels, correct, 1, 1
    if fault == "+inf row":
        x[5] = math.inf
        return x, labels, correct, D, 1
    if fault == "-inf and NaN in 3 rows":
        x[0, 0], x[7, 2], x[7, 3], x[20, 4] = -math.inf, math.nan, math.inf, math.nan
        return x, labels, correct, 4, 3
    if fault == "every row NaN":
        return torch.full((N, D), math.nan), labels, correct, N * D, N
    if fault == "NaN in an ignored row":
        x[4, 0] = math.nan
        labels[4] = 255
        return x, labels, correct, 1, 1
    if fault == "NaN in a row marked incorrect":
        x[6, 0] = math.nan
        correct = torch.ones(N, dtype=torch.bool)
        correct[6] = False
        return x, labels, correct, 1, 1
    raise AssertionError(fault)


FAULTS = [
    "one NaN value",
    "+inf row",
    "-inf and NaN in 3 rows",
    "every row NaN",
    "NaN in an ignored row",
    "NaN in a row marked incorrect",
]
ENTRY_POINTS = {
    "update": lambda clf, x, labels, correct: clf.update(x, labels, correct=correct),
    "assign_components": lambda clf, x, labels, correct: clf.assign_components(x, labels),
    "component_log_prob": lambda clf, x, labels, correct: clf.component_log_prob(x),
    "class_log_likelihood": lambda clf, x, labels, correct: clf.class_log_likelihood(x),
    "predict": lambda clf, x, labels, correct: clf.predict(x),
    "anomaly_score": lambda clf, x, labels, correct: clf.anomaly_score(x),
}


@pytest.mark.parametrize("memory", ["fifo", "stats"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("fault", FAULTS)
def test_non_finite_x_raises_naming_x_and_its_rows_and_leaves_the_mixture_untouched(memory, entry, fault):
    clf = _trained(memory)
    x, labels, correct, values, rows = _faulty_x(fault)
    before = _state(clf)
    with pytest.raises(ValueError) as info:
        ENTRY_POINTS[entry](clf, x, labels, correct)
    message = str(info.value)
    expected = rf"^x must be finite, found {values} NaN or infinite value\(s\) in {rows} of {N} rows \(rows "
    assert re.match(expected, message), f"{entry} on {fault}: {message!r} does not match {expected!r}"
    _assert_same_state(clf, before, f"{entry} on {fault}")
    # The run goes on: a clean batch updates normally and the mixture stays finite.
    clean = F.normalize(torch.randn(N, D), dim=1)
    assert clf.update(clean, torch.randint(0, C, (N,)))["pixels"] == N
    assert _all_finite(clf)


def test_the_message_lists_at_most_five_row_indices():
    x = torch.zeros(10, D)
    x[[1, 2, 3, 5, 8, 9]] = math.nan
    with pytest.raises(ValueError, match=r"in 6 of 10 rows \(rows 1, 2, 3, 5, 8, \.\.\.\)$"):
        GMMClassifier(C, M, D).component_log_prob(x)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda bad: diag_gaussian_log_prob(bad, torch.zeros(2, D), torch.ones(2, D)), "x"),
        (lambda bad: diag_gaussian_log_prob(torch.zeros(4, D), bad[:2], torch.ones(2, D)), "means"),
        (lambda bad: sinkhorn(bad), "scores"),
        (lambda bad: normalized_sinkhorn_assign(bad), "scores"),
        (lambda bad: fit_gmm(bad, torch.zeros(2, D), torch.ones(2, D)), "x"),
    ],
    ids=["density x", "density means", "sinkhorn", "normalized_sinkhorn_assign", "fit_gmm"],
)
def test_core_functions_name_the_non_finite_argument(call, name):
    bad = torch.zeros(4, D)
    bad[1, 2] = math.inf
    with pytest.raises(ValueError, match=rf"^{name} must be finite, found 1 NaN or infinite value\(s\) in 1 of "):
        call(bad)


@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_float64_beyond_float32_range_is_refused_before_it_reaches_the_memory(memory):
    """Finite in float64 but inf once cast to the float32 mixture: one such sample would freeze a
    component of the statistics memory for good (its sums stay inf), so update refuses it."""
    clf = _trained(memory)
    before = _state(clf)
    x = F.normalize(torch.randn(N, D, dtype=torch.float64), dim=1)
    x[2] *= 1e300
    with pytest.raises(
        ValueError,
        match=r"^x \(the used rows, cast to the mixture's torch.float32\) must be finite, "
        r"found \d+ NaN or infinite value\(s\) in 1 of 24 rows",
    ):
        clf.update(x, torch.randint(0, C, (N,)))
    _assert_same_state(clf, before, "update with float64 1e300")
    # Scoring needs no cast: float64 inputs are scored in float64; the far row's density underflows.
    log_prob = clf.component_log_prob(x)
    assert torch.isfinite(log_prob[torch.arange(N) != 2]).all() and torch.isneginf(log_prob[2]).all()


@pytest.mark.parametrize("memory", ["fifo", "stats"])
@pytest.mark.parametrize("e_step", ["sinkhorn", "em"])
@pytest.mark.parametrize("normalize", [True, False])
def test_extreme_finite_inputs_keep_mixture_and_memory_finite(memory, e_step, normalize):
    clf = _trained(memory, e_step, normalize_means=normalize)
    g = torch.Generator().manual_seed(3)
    for scale in (3e38, 1e30, 1e-38, 1e-45, 0.0):  # float32's largest, huge, tiny, denormal, zero
        x = (torch.randn(N, D, generator=g) * scale).clamp(-3.4e38, 3.4e38)
        clf.update(x, torch.randint(0, C, (N,), generator=g))
        clf.m_step()
        assert _all_finite(clf), f"mixture or memory not finite after x of scale {scale:g}"
        assert bool((clf.stds >= math.sqrt(clf.var_floor) * (1 - 1e-6)).all())
        for probe in (x, F.normalize(torch.randn(N, D, generator=g), dim=1)):
            log_prob = clf.class_log_likelihood(probe)
            assert not torch.isnan(log_prob).any(), f"NaN log-likelihood after x of scale {scale:g}"
            assert not torch.isposinf(log_prob).any()
            assert clf.predict(probe).shape == (N,)


# ------------------------------------------------------------------------------------------------
# A class that never gets a pixel


@pytest.mark.parametrize("memory", ["fifo", "stats"])
@pytest.mark.parametrize("e_step", ["sinkhorn", "em"])
def test_class_never_in_training_keeps_its_initial_mixture(memory, e_step):
    torch.manual_seed(4)
    clf = GMMClassifier(C, M, D, e_step=e_step, memory=memory, update_interval=1, mean_momentum=0.0, memory_size=30)
    init = _state(clf)
    g = torch.Generator().manual_seed(5)
    for _ in range(12):
        labels = torch.randint(0, C - 1, (N,), generator=g)  # class C-1 never appears
        labels[::5] = 255
        clf.update(F.normalize(torch.randn(N, D, generator=g), dim=1), labels)
    absent = C - 1
    for name in ("means", "stds", "log_weights"):
        assert torch.equal(getattr(clf, name)[absent], init[name][absent]), f"{name} of the absent class moved"
        assert not torch.equal(getattr(clf, name)[0], init[name][0]) or name == "log_weights"
    assert int(clf.memory.count.view(C, M)[absent].sum()) == 0, "the absent class's memory holds samples"
    assert not bool(clf.seen[absent])
    probe = F.normalize(torch.randn(50, D, generator=g), dim=1)
    assert torch.isfinite(clf.class_log_likelihood(probe)[:, absent]).all()
    assert _all_finite(clf)


def test_class_never_in_training_data_keeps_its_mixture_in_a_real_train_step(quick_dataset, tmp_path):
    """The mmseg path: a training step of the quick SegFormer-GMM on data without any pixel of the
    last class leaves that class's mixture exactly at its initialisation."""
    from mmengine.optim import OptimWrapper
    from PIL import Image

    from gmmseg_lab.data.layout import load_mask
    from gmmseg_lab.data.scenes import CLASSES as QUICK_CLASSES
    from gmmseg_lab.models import build_config, build_dataloader, decode_head_of, load_segmentor

    data = shutil.copytree(quick_dataset, tmp_path / "data")
    absent = len(QUICK_CLASSES) - 1
    for path in (data / "annotations/train").iterdir():
        mask = load_mask(path)
        mask[mask == absent] = 255
        Image.fromarray(mask).save(path)
    cfg = build_config(
        "segformer", "gmm", "quick", data_root=data, work_dir=tmp_path / "work", gmm_cfg=dict(update_interval=1)
    )
    torch.manual_seed(0)
    model, cfg = load_segmentor(cfg, checkpoint=None, device="cpu")
    model.train()
    gmm = decode_head_of(model).gmm
    init = _state(gmm)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    batch = next(iter(build_dataloader(cfg, "train")))
    log = model.train_step(batch, optim)
    assert torch.isfinite(log["loss"]) and int(gmm.num_m_steps) == 1
    for name in ("means", "stds"):
        assert torch.equal(getattr(gmm, name)[absent], init[name][absent]), f"{name} of the absent class moved"
    seen = [c for c in range(len(QUICK_CLASSES)) if not torch.equal(gmm.means[c], init["means"][c])]
    assert seen, "no class's mixture moved: the step did not update the GMM"
    assert _all_finite(gmm)
