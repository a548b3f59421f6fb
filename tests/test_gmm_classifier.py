"""GMMClassifier: learning, memories, robustness, checkpoints and multi-process equivalence."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from gmmseg_lab.gmm import FIFOMemory, GMMClassifier, StatsMemory


def multimodal_sphere_data(num_classes=3, modes=3, dim=16, n_per_mode=60, spread=0.05, seed=0):
    """Well-separated classes on the unit sphere, each a union of `modes` tight clusters."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_classes, modes, dim, generator=g), dim=-1)
    x = centres[:, :, None, :] + spread * torch.randn(num_classes, modes, n_per_mode, dim, generator=g)
    labels = torch.arange(num_classes)[:, None, None].expand(num_classes, modes, n_per_mode)
    modes_idx = torch.arange(modes)[None, :, None].expand(num_classes, modes, n_per_mode)
    perm = torch.randperm(num_classes * modes * n_per_mode, generator=g)
    return (F.normalize(x.reshape(-1, dim), dim=-1)[perm], labels.reshape(-1)[perm], modes_idx.reshape(-1)[perm])


def all_buffers_finite(clf):
    return all(torch.isfinite(b).all() for b in clf.buffers() if b.is_floating_point())


@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_learns_multimodal_classes_and_uses_every_component(memory):
    torch.manual_seed(0)
    x, labels, _ = multimodal_sphere_data()
    clf = GMMClassifier(
        3,
        num_components=3,
        embed_dim=16,
        memory=memory,
        mean_momentum=0.5,
        update_interval=1,
        memory_size=200,
        samples_per_component=None,
    )
    for _ in range(30):
        clf.update(x, labels)
    accuracy = (clf.predict(x) == labels).float().mean()
    assert accuracy > 0.99
    assignment = clf.assign_components(x, labels)
    usage = torch.bincount(labels * 3 + assignment, minlength=9)
    assert usage.min() > 0.5 * len(x) / 9, usage  # every component of every class carries data
    assert all_buffers_finite(clf)


def test_mixture_densities_match_torch_distributions():
    torch.manual_seed(1)
    clf = GMMClassifier(4, num_components=3, embed_dim=5, e_step="em", normalize_means=False)
    clf.means.normal_()
    clf.stds.uniform_(0.3, 2.0)
    clf.log_weights.copy_(torch.log_softmax(torch.randn(4, 3), dim=1))
    x = torch.randn(50, 5)
    dists = torch.distributions
    oracle = torch.stack(
        [
            dists.MixtureSameFamily(
                dists.Categorical(logits=clf.log_weights[c]),
                dists.Independent(dists.Normal(clf.means[c], clf.stds[c]), 1),
            ).log_prob(x)
            for c in range(4)
        ],
        dim=1,
    )
    torch.testing.assert_close(clf.class_log_likelihood(x), oracle, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(clf.anomaly_score(x), -oracle.amax(1), rtol=1e-5, atol=1e-4)
    assert torch.equal(clf.predict(x), clf.class_log_likelihood(x).argmax(1))
    assert clf.component_log_prob(x).shape == (50, 4, 3)


def test_m_step_follows_the_method():
    """One update with mean_momentum 0: mean = normalised sum, var = mean sq. deviation + floor."""
    torch.manual_seed(2)
    x, labels, _ = multimodal_sphere_data(num_classes=2, modes=2, dim=8)
    clf = GMMClassifier(
        2,
        num_components=2,
        embed_dim=8,
        mean_momentum=0.0,
        update_interval=1,
        samples_per_component=None,
        memory_size=10_000,
    )
    assignment = clf.assign_components(x, labels)
    clf.update(x, labels)
    for c in range(2):
        for m in range(2):
            rows = x[(labels == c) & (assignment == m)].double()
            mean = F.normalize(rows.sum(0), dim=0)
            std = (((rows - mean) ** 2).mean(0) + 0.01).sqrt()
            torch.testing.assert_close(clf.means[c, m].double(), mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(clf.stds[c, m].double(), std, rtol=1e-5, atol=1e-6)


def test_momentum_schedule_and_correct_mask():
    torch.manual_seed(3)
    x, labels, _ = multimodal_sphere_data(num_classes=2, modes=2, dim=8)
    clf = GMMClassifier(2, num_components=2, embed_dim=8, update_interval=3)
    before = clf.means.clone()
    info = [clf.update(x, labels) for _ in range(2)]
    assert not any(i["m_step"] for i in info) and torch.equal(clf.means, before)
    assert clf.update(x, labels)["m_step"]
    moved = (clf.means - before).norm(dim=-1)
    assert (moved > 0).all() and (moved < 0.1).all()  # momentum 0.999 moves means a little
    # Only pixels marked correct feed the memory.
    clf2 = GMMClassifier(2, num_components=2, embed_dim=8)
    correct = labels == 0
    assert clf2.update(x, labels, correct=correct)["pixels"] == int(correct.sum())
    assert int(clf2.memory.count.view(2, 2)[1].sum()) == 0


def test_ignored_labels_and_absent_classes_are_left_alone():
    torch.manual_seed(4)
    clf = GMMClassifier(3, num_components=2, embed_dim=4, update_interval=1, mean_momentum=0.0)
    x = F.normalize(torch.randn(40, 4), dim=1)
    labels = torch.full((40,), 255)
    labels[:20] = 0
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    clf.update(x, labels)
    assert not torch.equal(clf.means[0], before["means"][0])
    for c in (1, 2):  # absent from the batch
        assert torch.equal(clf.means[c], before["means"][c]) and torch.equal(clf.stds[c], before["stds"][c])
    assert clf.update(x, torch.full((40,), 255))["pixels"] == 0  # an all-ignored batch is a no-op
    assert all_buffers_finite(clf)


def test_fifo_wraps_around_and_never_reads_unwritten_slots():
    mem = FIFOMemory(num_slots=2, capacity=5, dim=1)
    mem.push(0, torch.arange(3.0)[:, None])
    assert int(mem.count[0]) == 3 and set(mem.valid(0).flatten().tolist()) == {0, 1, 2}
    mem.push(0, torch.arange(3.0, 7.0)[:, None])  # 7 pushed in all, capacity 5: 0 and 1 are gone
    assert int(mem.count[0]) == 5 and int(mem.ptr[0]) == 2
    assert set(mem.valid(0).flatten().tolist()) == {2, 3, 4, 5, 6}
    mem.push(0, torch.arange(10.0, 22.0)[:, None])  # more than capacity at once: the newest survive
    assert set(mem.valid(0).flatten().tolist()) == set(range(17, 22))
    count, total, total_sq = mem.moments(torch.tensor([0, 1]))
    assert count.tolist() == [5, 0] and total[1].item() == 0  # slot 1 never written: no data
    torch.testing.assert_close(total[0], torch.tensor([float(sum(range(17, 22)))], dtype=torch.float64))


def test_fifo_m_step_uses_only_written_samples():
    clf = GMMClassifier(1, num_components=1, embed_dim=3, update_interval=1, mean_momentum=0.0, memory_size=100)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    clf.update(x, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(clf.means[0, 0], F.normalize(torch.tensor([1.0, 1.0, 0.0]), dim=0))
    mean = clf.means[0, 0]
    expected = (((x - mean) ** 2).mean(0) + 0.01).sqrt()  # 98 zero slots would shrink this
    torch.testing.assert_close(clf.stds[0, 0], expected)


def test_stats_memory_equals_fifo_when_nothing_decays():
    torch.manual_seed(5)
    x, labels, _ = multimodal_sphere_data(num_classes=3, modes=2, dim=8)
    kwargs = dict(
        num_classes=3,
        num_components=2,
        embed_dim=8,
        update_interval=2,
        mean_momentum=0.9,
        samples_per_component=7,
        memory_size=100_000,
    )
    torch.manual_seed(6)
    fifo = GMMClassifier(memory="fifo", **kwargs)
    torch.manual_seed(6)
    stats = GMMClassifier(memory="stats", stats_decay=1.0, **kwargs)
    for step in range(6):
        batch = slice(step * 50, step * 50 + 120)
        fifo.update(x[batch], labels[batch])
        stats.update(x[batch], labels[batch])
    torch.testing.assert_close(fifo.means, stats.means, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fifo.stds, stats.stds, rtol=1e-6, atol=1e-6)
    assert stats.memory_nbytes() == 3 * 2 * (2 * 8 + 1) * 8  # C*M*(2D+1) float64


def test_stats_memory_decay_weights():
    mem = StatsMemory(num_slots=1, dim=1, decay=0.5)
    mem.push(0, torch.tensor([[4.0]]))
    mem.push(0, torch.tensor([[1.0], [1.0]]))  # older sample decays by 0.5**2
    count, total, total_sq = mem.moments(torch.tensor([0]))
    assert count.item() == pytest.approx(2.25) and total.item() == pytest.approx(3.0)
    assert total_sq.item() == pytest.approx(16 * 0.25 + 2)


@pytest.mark.parametrize("memory", ["fifo", "stats"])
@pytest.mark.parametrize("e_step", ["sinkhorn", "em"])
def test_no_nan_under_adversarial_batches(memory, e_step):
    g = torch.Generator().manual_seed(7)
    for normalize in (True, False):
        clf = GMMClassifier(
            4,
            num_components=3,
            embed_dim=6,
            e_step=e_step,
            memory=memory,
            update_interval=1,
            mean_momentum=0.5,
            memory_size=50,
            normalize_means=normalize,
        )
        for step in range(40):
            kind = step % 8
            n = int(torch.randint(1, 60, (1,), generator=g))
            x = torch.randn(n, 6, generator=g)
            if kind == 1:
                x = x * 1e18  # huge
            elif kind == 2:
                x = x * 1e-30  # tiny
            elif kind == 3:
                x = torch.ones(n, 6)  # identical points
            elif kind == 4:
                x = torch.zeros(n, 6)  # zero vectors cannot be normalised
            elif kind == 5:
                n, x = 1, x[:1]  # a one-pixel class
            labels = torch.randint(0, 4, (n,), generator=g)
            if kind == 6:
                labels[:] = 255
            clf.update(x, labels)
            assert all_buffers_finite(clf), (step, kind)
            assert (clf.stds >= math.sqrt(0.01) - 1e-6).all()
        probe = torch.randn(10, 6)
        assert torch.isfinite(clf.class_log_likelihood(probe)).all()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda c: c.update(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)), "x must have 8 columns"),
        (lambda c: c.update(torch.randn(4, 8), torch.zeros(3, dtype=torch.long)), r"labels must have shape \[4\]"),
        (lambda c: c.update(torch.randn(4, 8), torch.zeros(4)), "labels must be an integer tensor"),
        (lambda c: c.update(torch.randn(4, 8), torch.tensor([0, 1, 2, 7])), r"labels must be in \[0, 3\)"),
        (lambda c: c.update(torch.randn(4, 8), torch.tensor([0, 1, -1, 255])), r"labels must be in \[0, 3\)"),
        (lambda c: c.update(torch.full((4, 8), float("nan")), torch.zeros(4, dtype=torch.long)), "x must be finite"),
        (
            lambda c: c.update(torch.randn(4, 8), torch.zeros(4, dtype=torch.long), correct=torch.ones(4)),
            "correct must be a bool tensor",
        ),
        (lambda c: c.predict(torch.randn(4, 8, 1)), "x must have shape"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    clf = GMMClassifier(3, num_components=2, embed_dim=8)
    with pytest.raises(ValueError, match=match):
        call(clf)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(e_step="hard"), "e_step must be one of"),
        (dict(memory="disk"), "memory must be one of"),
        (dict(mean_momentum=1.5), "mean_momentum"),
        (dict(num_components=0), "num_components"),
        (dict(var_floor=0.0), "var_floor"),
        (dict(memory="stats", stats_decay=0.0), "stats_decay"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GMMClassifier(3, **kwargs)


@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_state_dict_round_trip(memory, tmp_path):
    torch.manual_seed(8)
    x, labels, _ = multimodal_sphere_data(num_classes=2, modes=2, dim=8)
    clf = GMMClassifier(2, num_components=2, embed_dim=8, memory=memory, update_interval=2, memory_size=64)
    for _ in range(5):
        clf.update(x, labels)
    torch.save(clf.state_dict(), tmp_path / "gmm.pth")
    clone = GMMClassifier(2, num_components=2, embed_dim=8, memory=memory, update_interval=2, memory_size=64)
    clone.load_state_dict(torch.load(tmp_path / "gmm.pth"))
    assert torch.equal(clone.class_log_likelihood(x), clf.class_log_likelihood(x))
    clf.update(x, labels)  # the counters and memory came along: the next step is identical
    clone.update(x, labels)
    for (name, a), b in zip(clf.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------- torch.distributed (gloo)
CLF_KWARGS = dict(
    num_classes=3,
    num_components=2,
    embed_dim=8,
    update_interval=2,
    mean_momentum=0.9,
    memory_size=40,
    samples_per_component=5,
)


def _batches(steps=6):
    x, labels, _ = multimodal_sphere_data(num_classes=3, modes=2, dim=8, n_per_mode=40, seed=11)
    g = torch.Generator().manual_seed(12)
    out = []
    for step in range(steps):
        # Ranks see different numbers of pixels: gathering must handle ragged batches.
        n0, n1 = 30 + 7 * step, 50 - 3 * step
        idx = torch.randperm(len(x), generator=g)[: n0 + n1]
        out.append(((x[idx[:n0]], labels[idx[:n0]]), (x[idx[n0:]], labels[idx[n0:]])))
    return out


def _dist_worker(rank, world, init_file, out_dir, memory):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        clf = GMMClassifier(memory=memory, **CLF_KWARGS)
        for pair in _batches():
            clf.update(*pair[rank])
        torch.save(clf.state_dict(), os.path.join(out_dir, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("memory", ["fifo", "stats"])
def test_two_gloo_processes_equal_one_process_on_the_concatenated_batch(memory, tmp_path):
    """The E-step is local to each rank (as the release's), the memory push global: one process that
    assigns each rank's shard on its own, then updates on the concatenation with that assignment."""
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path), memory), nprocs=2, join=True)
    torch.manual_seed(0)
    single = GMMClassifier(memory=memory, **CLF_KWARGS)
    for (x0, l0), (x1, l1) in _batches():
        assignment = torch.cat([single.assign_components(x0, l0), single.assign_components(x1, l1)])
        single.update(torch.cat([x0, x1]), torch.cat([l0, l1]), assignment=assignment)
    rank0 = torch.load(tmp_path / "rank0.pth")
    rank1 = torch.load(tmp_path / "rank1.pth")
    for name, value in single.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), f"ranks differ in {name}"
        assert torch.equal(rank0[name], value), f"2-process run differs from 1 process in {name}"


def _bad_input_worker(rank, world, init_file, out_dir, case):
    """One rank gets a bad batch; every rank records what its update raised, then all go on."""
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    # A short timeout: without the agreement the good rank would wait in the gather until it expires.
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20)
    )
    try:
        torch.manual_seed(0)
        clf = GMMClassifier(memory="fifo", **CLF_KWARGS)
        x, labels = (t.clone() for t in _batches(1)[0][rank])
        if case == "nan" and rank == 1:
            x[3, 0] = math.nan
        if case == "labels" and rank == 0:
            labels[0] = 99
        before = {k: v.clone() for k, v in clf.state_dict().items()}
        try:
            clf.update(x, labels)
            outcome = "returned"
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            outcome = f"{type(exc).__name__}: {exc}"
        unchanged = all(torch.equal(v, before[k]) for k, v in clf.state_dict().items())
        clf.update(*_batches(1)[0][rank])  # the ranks are still in step: a clean update goes through
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as fh:
            fh.write(f"{unchanged}\n{outcome}\n{int(clf.num_updates)}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "case, bad_rank, own",
    [
        ("nan", 1, "ValueError: x must be finite, found 1 NaN or infinite value(s) in 1 of"),
        ("labels", 0, "ValueError: labels must be in [0, 3) or 255 (ignore), found [99]"),
    ],
)
def test_a_bad_batch_on_one_rank_stops_every_rank_together(case, bad_rank, own, tmp_path):
    """update is collective (it gathers every rank's pixels): a batch refused on one rank must make
    every rank raise, not leave the others blocked in the gather (gloo until its timeout, NCCL for ever)."""
    mp.spawn(_bad_input_worker, args=(2, str(tmp_path / "init"), str(tmp_path), case), nprocs=2, join=True)
    results = {r: (tmp_path / f"rank{r}.txt").read_text().splitlines() for r in range(2)}
    for rank, (unchanged, outcome, updates) in results.items():
        assert unchanged == "True", f"rank {rank} changed its mixture although it raised"
        assert updates == "1", f"rank {rank}: the clean update after the error did not run"
        if rank == bad_rank:
            assert outcome.startswith(own), outcome
        else:
            assert outcome.startswith(
                f"ValueError: GMMClassifier.update's input is invalid on rank {bad_rank} (rank {bad_rank}: {own}"
            ), outcome


def test_the_float32_range_check_runs_once_per_call_not_once_per_class(monkeypatch):
    """The float64 fallback's min/max passes (and host sync) run once per batch in the public entry
    points, not in every per-class scoring of the E-step."""
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, labels, _ = multimodal_sphere_data(num_classes=3, modes=2, dim=8, n_per_mode=10)
    clf = GMMClassifier(3, num_components=2, embed_dim=8, update_interval=1)
    for name, call in (
        ("update", lambda: clf.update(x, labels)),
        ("assign_components", lambda: clf.assign_components(x, labels)),
        ("component_log_prob", lambda: clf.component_log_prob(x)),
    ):
        calls.clear()
        call()
        assert len(calls) == 2, f"{name}: {len(calls)} aminmax passes for 3 classes (x and the means: 2)"
