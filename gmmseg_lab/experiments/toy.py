"""Notebook 00's experiments: a GMM classifier and a softmax MLP on 2-D multimodal toy data.

- :func:`fit_toy_classifier`: GMMSeg's classifier (:class:`~gmmseg_lab.gmm.GMMClassifier`) fitted
  online on mini-batches of :func:`~gmmseg_lab.data.toy.make_toy_data`.
- :func:`fit_softmax_classifier`: the discriminative baseline, a small torch MLP (or linear model).
- :func:`toy_far_confidence`: how confident both are far from the data.
- :func:`fit_iterations`: one class's mixture by batch EM or Sinkhorn EM, iteration by iteration
  (:class:`FitSnapshots`, drawn by :func:`gmmseg_lab.viz.toy.iterations_figure`).
- :func:`main`: ``gmmseg-lab toy``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data.toy import ToyData, make_toy_data
from ..gmm import GMMClassifier, diag_gaussian_log_prob, fit_gmm
from ..gmm.fit import E_STEPS, FitSnapshots, e_step_responsibilities
from ..gmm.open_set import background_log_density, gmm_open_set_confidence

__all__ = [
    "FitSnapshots",
    "fit_iterations",
    "fit_softmax_classifier",
    "fit_toy_classifier",
    "main",
    "toy_far_confidence",
]


def fit_toy_classifier(
    data: ToyData,
    num_components: int = 3,
    e_step: str = "sinkhorn",
    steps: int = 60,
    batch_size: int = 256,
    mean_momentum: float = 0.8,
    seed: int = 0,
    progress: bool = False,
) -> tuple[GMMClassifier, list[float]]:
    """Fit a :class:`GMMClassifier` online on mini-batches of the toy data.

    Means are not normalised (the toy data is not on a sphere), and the random start is spread over
    the data's scale so that components can separate within a few dozen steps.

    Returns:
        The classifier and the training accuracy after each step.
    """
    from tqdm.auto import tqdm

    num_classes = int(data.labels.max()) + 1
    dim = data.x.shape[1]
    torch.manual_seed(seed)
    clf = GMMClassifier(
        num_classes,
        num_components=num_components,
        embed_dim=dim,
        e_step=e_step,
        normalize_means=False,
        mean_momentum=mean_momentum,
        update_interval=1,
        memory_size=2000,
        samples_per_component=None,
        var_floor=0.01,
        init_std=float(data.x.std()),
    )
    g = torch.Generator().manual_seed(seed)
    history = []
    for _ in tqdm(range(steps), desc=f"EM ({e_step})", disable=not progress):
        idx = torch.randint(0, len(data.x), (batch_size,), generator=g)
        clf.update(data.x[idx], data.labels[idx])
        history.append(float((clf.predict(data.x) == data.labels).float().mean()))
    return clf, history


def fit_softmax_classifier(
    data: ToyData, hidden: int = 32, num_layers: int = 2, steps: int = 400, lr: float = 0.02, seed: int = 0
) -> tuple[nn.Module, list[float]]:
    """Train a small softmax classifier on the toy data, full batch with Adam and cross-entropy.

    Args:
        data: the toy data (any dimension D).
        hidden: units per hidden layer (ReLU); ``0`` gives a linear softmax (logistic regression).
        num_layers: hidden layers when ``hidden > 0``.
        steps: Adam steps on the whole data set.
        lr: Adam learning rate.
        seed: initialisation seed; the result is deterministic for a seed and leaves torch's global
            random state untouched.

    Returns:
        ``(model, accuracy)``: the model in eval mode, mapping ``[N, D]`` float32 to ``[N, C]``
        logits, and the training accuracy after each step.
    """
    if not isinstance(data, ToyData):
        raise TypeError(f"data must be a ToyData, got {type(data).__name__}")
    if hidden < 0 or num_layers < 1 or steps < 1 or not lr > 0:
        raise ValueError(
            f"need hidden >= 0, num_layers >= 1, steps >= 1 and lr > 0, got hidden={hidden}, "
            f"num_layers={num_layers}, steps={steps}, lr={lr}"
        )
    x, labels = data.x.float(), data.labels.long()
    num_classes, dim = int(labels.max()) + 1, x.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hidden == 0:
            model = nn.Linear(dim, num_classes)
        else:
            layers, width = [], dim
            for _ in range(num_layers):
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            model = nn.Sequential(*layers, nn.Linear(width, num_classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    with torch.enable_grad():  # also when called under no_grad (e.g. from a notebook cell that set it)
        for _ in range(steps):
            optimiser.zero_grad()
            logits = model(x)
            nn.functional.cross_entropy(logits, labels).backward()
            optimiser.step()
            history.append(float((logits.argmax(dim=1) == labels).float().mean()))
    return model.eval(), history


def toy_far_confidence(
    data, gmm, softmax_model, radius_factor: float = 3.0, n_points: int = 360, background_quantile: float = 0.01
) -> dict[str, float]:
    """Mean confidence of both classifiers on a circle far outside the toy data.

    The circle has ``radius_factor`` times the largest distance of a training point from the data's
    centre. Softmax confidence is ``max_c p(c|x)``; the GMM's is its open-set posterior with a
    background class (:func:`gmmseg_lab.gmm.open_set.gmm_open_set_confidence`).
    """
    x = data.x.double()
    centre = x.mean(0)
    radius = radius_factor * float((x - centre).norm(dim=1).max())
    angles = torch.linspace(0, 2 * math.pi, n_points + 1, dtype=torch.float64)[:-1]
    ring = (centre + radius * torch.stack([angles.cos(), angles.sin()], 1)).float()
    with torch.no_grad():
        softmax_conf = torch.softmax(softmax_model(ring).double(), dim=1).amax(1)
        gmm_conf, _ = gmm_open_set_confidence(
            gmm.class_log_likelihood(ring), background_log_density(gmm, data.x, background_quantile)
        )
    return {
        "radius": radius,
        "softmax_confidence": float(softmax_conf.mean()),
        "gmm_confidence": float(gmm_conf.mean()),
    }


def _responsibilities(x, means, stds, weights, e_step, sinkhorn_iters, sinkhorn_epsilon):
    """Responsibilities ``[N, M]`` and mean log-likelihood, with ``fit_gmm``'s own E-step."""
    log_prob = diag_gaussian_log_prob(x, means, stds)
    log_weights = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
    resp = e_step_responsibilities(
        log_prob, log_weights, e_step, sinkhorn_iters=sinkhorn_iters, sinkhorn_epsilon=sinkhorn_epsilon
    )
    return resp, float(torch.logsumexp(log_prob + log_weights, dim=1).mean())


def fit_iterations(
    data: ToyData,
    class_index: int = 0,
    num_components: int = 3,
    e_step: str = "em",
    n_iters: int = 30,
    seed: int = 0,
    *,
    sinkhorn_iters: int = 3,
    sinkhorn_epsilon: float = 0.05,
) -> FitSnapshots:
    """Fit one class's mixture by batch EM with :func:`~gmmseg_lab.gmm.fit_gmm`, one iteration at a time.

    The start depends only on the data, class, ``num_components`` and ``seed`` (not on ``e_step``),
    so EM and Sinkhorn EM can be compared from the same start: means at ``M`` distinct random
    points of the class, every standard deviation the class's own per-axis one, equal weights.
    Each iteration calls ``fit_gmm(x, means, stds, weights, n_iters=1, e_step=...)`` from the
    previous state, which is exactly ``n_iters`` iterations of ``fit_gmm`` in one call.

    Args:
        data: toy data (any D). class_index: which class. num_components: M.
        e_step: ``"em"`` or ``"sinkhorn"``. n_iters: T. seed: seed of the start.
        sinkhorn_iters, sinkhorn_epsilon: passed to ``fit_gmm`` (Sinkhorn E-step only).

    Returns:
        :class:`FitSnapshots` with ``T + 1`` snapshots.
    """
    if e_step not in E_STEPS:
        raise ValueError(f"e_step must be one of {E_STEPS}, got {e_step!r}")
    labels = data.labels.long()
    num_classes = int(labels.max()) + 1
    if not isinstance(class_index, int) or not 0 <= class_index < num_classes:
        raise ValueError(f"class_index must be an int in [0, {num_classes}), got {class_index!r}")
    x = data.x[labels == class_index].double()
    if not isinstance(num_components, int) or not 1 <= num_components <= len(x):
        raise ValueError(
            f"num_components must be an int in [1, {len(x)}] (points of class {class_index}), got {num_components!r}"
        )
    if not isinstance(n_iters, int) or n_iters < 0:
        raise ValueError(f"n_iters must be an int >= 0, got {n_iters!r}")
    rng = np.random.default_rng(seed)
    means = x[torch.from_numpy(rng.choice(len(x), size=num_components, replace=False))].clone()
    stds = x.std(dim=0).clamp_min(1e-3).expand(num_components, -1).clone()
    weights = torch.full((num_components,), 1.0 / num_components, dtype=torch.float64)
    history = {key: [] for key in ("means", "stds", "weights", "resp", "ll")}
    for t in range(n_iters + 1):
        resp, ll = _responsibilities(x, means, stds, weights, e_step, sinkhorn_iters, sinkhorn_epsilon)
        for key, value in (("means", means), ("stds", stds), ("weights", weights), ("resp", resp)):
            history[key].append(value.numpy().copy())
        history["ll"].append(ll)
        if t < n_iters:
            weights, means, stds = fit_gmm(
                x,
                means,
                stds,
                weights,
                n_iters=1,
                e_step=e_step,
                sinkhorn_iters=sinkhorn_iters,
                sinkhorn_epsilon=sinkhorn_epsilon,
            )
    resp = np.stack(history["resp"])
    return FitSnapshots(
        x=x.numpy(),
        class_index=class_index,
        e_step=e_step,
        seed=seed,
        means=np.stack(history["means"]),
        stds=np.stack(history["stds"]),
        weights=np.stack(history["weights"]),
        responsibilities=resp,
        log_likelihood=np.asarray(history["ll"]),
        masses=resp.mean(axis=1),
    )


def main() -> None:
    """Print what a GMM classifier learns on the toy data, against one Gaussian per class and softmax."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    seed = 0
    data = make_toy_data(seed=seed)
    print(f"Toy data (seed {seed}): {len(data.x)} points in 2-D, 3 classes x 3 interleaved modes on a circle.\n")
    rows = []
    for label, m in (("GMM, M=3 per class (Sinkhorn EM)", 3), ("one Gaussian per class (M=1)", 1)):
        clf, history = fit_toy_classifier(data, num_components=m, seed=seed, progress=True)
        rows.append((label, history[-1]))
        if m == 3:
            gmm = clf
    x_np, y_np = data.x.numpy(), data.labels.numpy()
    linear = LogisticRegression(max_iter=1000).fit(x_np, y_np)
    rows.append(("linear softmax (logistic regression)", linear.score(x_np, y_np)))
    softmax = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=2000, random_state=seed).fit(x_np, y_np)
    rows.append(("MLP softmax (2 x 64 hidden)", softmax.score(x_np, y_np)))
    print(f"\n{'classifier':40s} train accuracy")
    for label, acc in rows:
        print(f"{label:40s} {acc:.3f}")

    print("\nLearned component means against the true mode centres (class 0..2):")
    for c in range(gmm.num_classes):
        learned = gmm.means[c]
        true = data.centres[c]
        dist = torch.cdist(learned, true)
        print(f"  class {c}: learned " + ", ".join(f"({a:+.2f}, {b:+.2f})" for a, b in learned[:, :2].tolist()))
        print("           nearest true mode at distance " + ", ".join(f"{d:.2f}" for d in dist.min(1).values.tolist()))
    far = torch.tensor([[30.0, 30.0]])
    near = data.centres[0, :1]
    print(
        f"\nAnomaly score -max_c log p(x|c): at a mode centre {float(gmm.anomaly_score(near)):.2f}, "
        f"far from all data {float(gmm.anomaly_score(far)):.1f}"
    )
    print(
        f"MLP softmax at the same far point: max p(c|x) = {softmax.predict_proba(far.numpy()).max():.3f} "
        "(a discriminative model has no notion of 'far from the data')."
    )


if __name__ == "__main__":
    main()
