"""Temperature scaling (gmmseg_lab.eval.temperature): the fit against scipy on every pixel, a known
temperature recovered, the bounded reservoir, before/after calibration, and the image split."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from gmmseg_lab.eval import CalibrationError, MetricUndefinedWarning
from gmmseg_lab.eval.temperature import (
    LogitReservoir,
    ScaledCalibration,
    fit_temperature,
    nll,
    temperature_split,
)


def _synthetic(n=40_000, classes=9, scale=3.0, seed=0):
    """Labels drawn from softmax(true logits); the observed logits are ``scale`` times too sharp,
    so the best temperature is ``scale`` (up to sampling noise)."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(n, classes, generator=g) * 2.0
    target = torch.multinomial(torch.softmax(true, dim=1), 1, generator=g)[:, 0]
    return true * scale, target


def _scipy_temperature(logits, target):
    """Reference: scipy's bounded scalar minimiser of the float64 NLL over log T, on every pixel."""
    z = logits.double().numpy()
    y = target.numpy()

    def objective(u):
        s = z / math.exp(u)
        top = s.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(s - top).sum(axis=1))
        return float((log_norm - s[np.arange(len(y)), y]).mean())

    res = minimize_scalar(objective, bounds=(math.log(1e-3), math.log(1e4)), method="bounded", options={"xatol": 1e-10})
    return math.exp(res.x)


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_fit_matches_scipy_and_recovers_the_known_temperature(scale):
    logits, target = _synthetic(scale=scale)
    ours = fit_temperature(logits, target)
    reference = _scipy_temperature(logits, target)
    assert ours == pytest.approx(reference, rel=1e-4)
    assert ours == pytest.approx(scale, rel=0.03)  # sampling noise of 40k pixels
    # It is a minimum: nudging T either way raises the NLL.
    best = nll(logits, target, ours)
    assert best < nll(logits, target, ours * 1.01) and best < nll(logits, target, ours / 1.01)
    assert best < nll(logits, target, 1.0)


def test_fit_on_a_bounded_reservoir_is_close_to_the_fit_on_every_pixel():
    logits, target = _synthetic(n=60_000, seed=1)
    target[::10] = 255  # unlabelled pixels are never kept
    labelled = target != 255
    everything = fit_temperature(logits[labelled], target[labelled])
    reservoir = LogitReservoir(capacity=10_000, seed=0)
    for start in range(0, len(target), 4096):  # image-sized updates
        reservoir.update(logits[start : start + 4096], target[start : start + 4096])
    assert len(reservoir) == 10_000 and reservoir.num_seen == int(labelled.sum())
    assert bool((reservoir.target != 255).all())
    assert reservoir.fit() == pytest.approx(everything, rel=0.03)
    # Memory is bounded by the capacity, not by the pixels seen.
    assert reservoir.nbytes() <= 10_000 * (9 * 4 + 16)


def test_reservoir_is_uniform_deterministic_and_keeps_everything_below_capacity():
    n, capacity = 20_000, 2_000
    ids = torch.arange(n, dtype=torch.float32)[:, None]  # the "logit" is the pixel's index
    target = torch.zeros(n, dtype=torch.int64)
    runs = []
    for seed in (0, 0, 1):
        reservoir = LogitReservoir(capacity=capacity, seed=seed)
        for start in range(0, n, 1000):
            reservoir.update(ids[start : start + 1000], target[start : start + 1000])
        runs.append(sorted(reservoir.logits[:, 0].long().tolist()))
    assert runs[0] == runs[1] and runs[0] != runs[2]  # reproducible for a seed
    kept = np.array(runs[0])
    assert len(set(kept)) == capacity and kept.min() >= 0 and kept.max() < n  # a subset, no repeats
    # Uniform: early and late pixels are kept alike (each decile holds ~10% of the sample).
    counts = np.bincount(kept * 10 // n, minlength=10)
    assert counts.min() > 0.07 * capacity and counts.max() < 0.13 * capacity
    small = LogitReservoir(capacity=capacity)
    small.update(ids[:500], target[:500])
    assert len(small) == 500 and sorted(small.logits[:, 0].long().tolist()) == list(range(500))
    assert LogitReservoir().fit() is None


def test_scaled_calibration_before_and_after():
    logits, target = _synthetic(n=20_000, scale=3.0, seed=2)
    target[:100] = 255
    temperature = fit_temperature(logits[100:], target[100:])
    scaled = ScaledCalibration(temperature, n_bins=15)
    for start in range(0, len(target), 5000):
        scaled.update(logits[start : start + 5000], target[start : start + 5000])
    result = scaled.compute()
    # "before" is the ordinary ECE of softmax(z) on the same pixels.
    plain = CalibrationError(n_bins=15)
    plain.update_from_probs(torch.softmax(logits, dim=1), target)
    assert result["ece_before"] == pytest.approx(plain.compute()["ece"], abs=1e-6)
    assert result["num_pixels"] == 20_000 - 100
    assert result["nll_before"] == pytest.approx(nll(logits[100:], target[100:], 1.0))
    assert result["nll_after"] == pytest.approx(nll(logits[100:], target[100:], temperature))
    # Too-sharp logits: scaling cuts the ECE several-fold and lowers the NLL.
    assert result["ece_after"] < result["ece_before"] / 4 and result["nll_after"] < result["nll_before"]
    empty = ScaledCalibration(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        assert empty.compute()["ece_after"] is None and empty.compute()["nll_after"] is None


def test_minimum_beyond_the_bounds_and_validation():
    # Every pixel right by a wide margin: the NLL keeps falling as T -> 0, so the lower bound wins.
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    target = torch.tensor([0, 1])
    assert fit_temperature(logits, target, bounds=(0.5, 10.0)) == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, target, bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="at least one pixel"):
        fit_temperature(logits[:0], target[:0])
    with pytest.raises(ValueError, match=r"logits must have shape \[N, C\]"):
        fit_temperature(logits[0], target)
    with pytest.raises(ValueError, match="temperature"):
        nll(logits, target, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        ScaledCalibration(-1.0)
    with pytest.raises(ValueError, match="capacity"):
        LogitReservoir(capacity=0)
    reservoir = LogitReservoir()
    reservoir.update(logits, target)
    with pytest.raises(ValueError, match="2 classes like the earlier updates"):
        reservoir.update(torch.zeros(2, 3), target)


def test_temperature_split_every_other_image():
    assert temperature_split(5) == ([0, 2, 4], [1, 3])
    assert temperature_split(2) == ([0], [1])
    assert temperature_split(1) == ([0], []) and temperature_split(0) == ([], [])
    with pytest.raises(ValueError, match="num_images"):
        temperature_split(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_stay_on_the_device():
    from gmmseg_lab.eval.components import AnomalyComponents

    logits, target = _synthetic(n=5000, seed=3)
    reservoir = LogitReservoir(capacity=1000)
    reservoir.update(logits.cuda(), target.cuda())
    assert reservoir.logits.is_cuda and len(reservoir) == 1000
    assert reservoir.fit() == pytest.approx(fit_temperature(reservoir.logits.cpu(), reservoir.target.cpu()), rel=1e-6)
    scaled = ScaledCalibration(3.0)
    scaled.update(logits.cuda(), target.cuda())
    on_cpu = ScaledCalibration(3.0)
    on_cpu.update(logits, target)
    assert scaled.compute() == pytest.approx(on_cpu.compute())
    components = AnomalyComponents(0.5)
    components.update(torch.rand(2, 8, 8).cuda(), torch.randint(0, 2, (2, 8, 8)).cuda())
    assert components.compute()["num_gt_components"] > 0
