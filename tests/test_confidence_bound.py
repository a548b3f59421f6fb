"""The LayerNorm bound on the top softmax probability of GMMSeg's class logits."""

from __future__ import annotations

import pytest
import torch

from gmmseg_lab.eval.confidence_bound import layernorm_confidence_bound, layernorm_confidence_bound_per_class


def _top_probability_of_layernormed(scores: torch.Tensor, gamma, beta) -> torch.Tensor:
    ln = torch.nn.functional.layer_norm(scores, scores.shape[-1:], eps=1e-5)
    return torch.softmax(ln * gamma + beta, dim=-1).amax(-1)


@pytest.mark.parametrize("classes, expected", [(9, 0.75), (19, 0.83), (150, 0.999)])
def test_the_method_pages_numbers(classes, expected):
    bound = layernorm_confidence_bound(classes)
    assert bound == pytest.approx(expected, abs=0.005) if expected < 0.99 else bound > expected


def test_no_score_vector_beats_the_bound_and_the_extreme_one_reaches_it():
    torch.manual_seed(0)
    for c in (2, 5, 9, 19):
        bound = layernorm_confidence_bound(c, gamma=1.3)
        scores = torch.randn(20000, c, dtype=torch.float64) * torch.rand(20000, 1, dtype=torch.float64) * 50
        scores[:, 0] += 100 * torch.rand(20000, dtype=torch.float64)  # very peaked ones too
        assert float(_top_probability_of_layernormed(scores, 1.3, 0.2).max()) <= bound + 1e-9
        extreme = torch.zeros(1, c, dtype=torch.float64)
        extreme[0, 0] = 1.0  # one class up, the rest equal: LN gives sqrt(C-1) and -1/sqrt(C-1)
        assert float(_top_probability_of_layernormed(extreme, 1.3, 0.2)) == pytest.approx(bound, rel=1e-4)


def test_per_class_bound_equals_the_closed_form_for_a_common_gamma():
    bounds = layernorm_confidence_bound_per_class(torch.full((9,), 0.7), torch.full((9,), -0.3))
    assert torch.allclose(bounds, torch.full((9,), layernorm_confidence_bound(9, 0.7), dtype=torch.float64), atol=1e-6)


def test_per_class_bound_is_never_beaten_by_layernormed_scores():
    torch.manual_seed(1)
    c = 7
    gamma = torch.rand(c, dtype=torch.float64) * 3
    beta = torch.randn(c, dtype=torch.float64)
    bounds = layernorm_confidence_bound_per_class(gamma, beta)
    scores = torch.randn(50000, c, dtype=torch.float64) * 10
    ln = torch.nn.functional.layer_norm(scores, (c,), eps=0.0)
    probs = torch.softmax(ln * gamma + beta, dim=-1)
    assert bool((probs <= bounds + 1e-7).all())
    # ... and it is tight: a search from the sampled best does not get more than a hair above it
    assert float((bounds - probs.max(0).values).min()) >= -1e-7
    assert float((bounds - probs.max(0).values).max()) < 0.05


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        layernorm_confidence_bound(1)
    with pytest.raises(ValueError, match="gamma"):
        layernorm_confidence_bound(9, -1.0)
    with pytest.raises(ValueError, match="beta must have 3"):
        layernorm_confidence_bound_per_class(torch.ones(3), torch.ones(4))
