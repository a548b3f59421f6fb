"""Low-dimensional multimodal toy data and a fitted GMM classifier: the smallest GMMSeg demo.

Each class is a union of well-separated Gaussian blobs ("modes") interleaved with the other classes'
modes, the case where one Gaussian per class, or a linear softmax, is the wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .gmm import GMMClassifier


@dataclass
class ToyData:
    """Points ``x [N, D]``, class ``labels [N]``, generating ``modes [N]`` and mode ``centres [C, K, D]``."""

    x: torch.Tensor
    labels: torch.Tensor
    modes: torch.Tensor
    centres: torch.Tensor


def make_toy_data(num_classes: int = 3, modes_per_class: int = 3, n_per_mode: int = 200, dim: int = 2,
                  spread: float = 0.35, seed: int = 0) -> ToyData:
    """Classes whose modes sit on interleaved points of a circle of radius 3 (for ``dim=2``).

    Returns float32 tensors; deterministic for a seed.
    """
    if num_classes < 1 or modes_per_class < 1 or n_per_mode < 1 or dim < 2:
        raise ValueError("num_classes, modes_per_class and n_per_mode must be >= 1 and dim >= 2")
    rng = np.random.default_rng(seed)
    total_modes = num_classes * modes_per_class
    angles = 2 * np.pi * np.arange(total_modes) / total_modes
    ring = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    centres = np.zeros((total_modes, dim))
    centres[:, :2] = ring
    if dim > 2:
        centres[:, 2:] = rng.normal(scale=1.0, size=(total_modes, dim - 2))
    # Mode j belongs to class j % C: neighbouring modes on the circle belong to different classes.
    mode_class = np.arange(total_modes) % num_classes
    mode_index = np.arange(total_modes) // num_classes
    which = np.repeat(np.arange(total_modes), n_per_mode)
    x = centres[which] + rng.normal(scale=spread, size=(len(which), dim))
    order = rng.permutation(len(which))
    by_class = np.zeros((num_classes, modes_per_class, dim))
    by_class[mode_class, mode_index] = centres
    return ToyData(
        x=torch.tensor(x[order], dtype=torch.float32),
        labels=torch.tensor(mode_class[which][order], dtype=torch.long),
        modes=torch.tensor(mode_index[which][order], dtype=torch.long),
        centres=torch.tensor(by_class, dtype=torch.float32),
    )


def fit_toy_classifier(data: ToyData, num_components: int = 3, e_step: str = "sinkhorn", steps: int = 60,
                       batch_size: int = 256, mean_momentum: float = 0.8, seed: int = 0,
                       progress: bool = False) -> tuple[GMMClassifier, list[float]]:
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
    clf = GMMClassifier(num_classes, num_components=num_components, embed_dim=dim, e_step=e_step,
                        normalize_means=False, mean_momentum=mean_momentum, update_interval=1,
                        memory_size=2000, samples_per_component=None, var_floor=0.01,
                        init_std=float(data.x.std()))
    g = torch.Generator().manual_seed(seed)
    history = []
    for _ in tqdm(range(steps), desc=f"EM ({e_step})", disable=not progress):
        idx = torch.randint(0, len(data.x), (batch_size,), generator=g)
        clf.update(data.x[idx], data.labels[idx])
        history.append(float((clf.predict(data.x) == data.labels).float().mean()))
    return clf, history


# The discriminative baseline and the GMM's open-set confidence (drawn by gmmseg_lab.viz.toy).


def fit_softmax_classifier(data: ToyData, hidden: int = 32, num_layers: int = 2, steps: int = 400,
                           lr: float = 0.02, seed: int = 0) -> tuple[nn.Module, list[float]]:
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
        raise ValueError(f"need hidden >= 0, num_layers >= 1, steps >= 1 and lr > 0, got hidden={hidden}, "
                         f"num_layers={num_layers}, steps={steps}, lr={lr}")
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


def gmm_open_set_confidence(class_log_likelihood: torch.Tensor, background_log_density: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes' posterior of the predicted class with a "none of these" class of constant density.

    ``conf(x) = p(x|c*) / (sum_c p(x|c) + b)`` with ``b = exp(background_log_density)``, computed
    as a softmax over ``[log p(x|1), ..., log p(x|C), log b]`` (equal priors). Near the data the
    background is negligible and this is the plain posterior ``max_c p(c|x)``; where every class
    density falls below ``b`` it falls to 0, at the rate the densities fall.

    Args:
        class_log_likelihood: ``[N, C]`` ``log p(x|c)``.
        background_log_density: ``log b``.

    Returns:
        ``(confidence [N] float64, predicted [N] int64)``.
    """
    ll = class_log_likelihood.double()
    background = torch.full((ll.shape[0], 1), float(background_log_density), dtype=torch.float64)
    log_post = ll - torch.logsumexp(torch.cat([ll, background], dim=1), dim=1, keepdim=True)
    confidence, predicted = log_post.max(dim=1)
    return confidence.exp(), predicted


def background_log_density(gmm: GMMClassifier, data: ToyData, quantile: float = 0.01) -> float:
    """The ``quantile`` of ``max_c log p(x_n|c)`` over the training points.

    As the background density of :func:`gmm_open_set_confidence`, it puts the confidence at about
    one half on the level set that leaves out the ``quantile`` least typical training points.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    with torch.no_grad():
        best = gmm.class_log_likelihood(data.x.float()).amax(dim=1).double()
    return float(torch.quantile(best, quantile))


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
        print(f"           nearest true mode at distance " + ", ".join(f"{d:.2f}" for d in dist.min(1).values.tolist()))
    far = torch.tensor([[30.0, 30.0]])
    near = data.centres[0, :1]
    print(f"\nAnomaly score -max_c log p(x|c): at a mode centre {float(gmm.anomaly_score(near)):.2f}, "
          f"far from all data {float(gmm.anomaly_score(far)):.1f}")
    print(f"MLP softmax at the same far point: max p(c|x) = {softmax.predict_proba(far.numpy()).max():.3f} "
          "(a discriminative model has no notion of 'far from the data').")


if __name__ == "__main__":
    main()
