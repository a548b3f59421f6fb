"""The toy demo: multimodal classes a single Gaussian cannot separate and a mixture can."""

import torch

from gmmseg_lab.data.toy import make_toy_data
from gmmseg_lab.experiments.toy import fit_toy_classifier, main


def test_toy_data_is_deterministic_and_multimodal():
    a, b = make_toy_data(seed=3), make_toy_data(seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.x, make_toy_data(seed=4).x)
    assert a.centres.shape == (3, 3, 2)


def test_mixture_beats_one_gaussian_per_class():
    data = make_toy_data(seed=0)
    _, mixture = fit_toy_classifier(data, num_components=3)
    _, single = fit_toy_classifier(data, num_components=1)
    assert mixture[-1] > 0.95 and single[-1] < 0.6


def test_main_prints_a_comparison(capsys):
    main()
    out = capsys.readouterr().out
    assert "GMM, M=3 per class" in out and "Anomaly score" in out
