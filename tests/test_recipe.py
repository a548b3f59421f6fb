"""The release's training recipe: class-balanced sampling, head lr x10, the projection, memory size,
and starting a GMMSeg model from another checkpoint (--init-from)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from gmmseg_lab.data.samplers import ClassBalancedSampler, class_presence
from gmmseg_lab.models import build_config, build_dataloader, decode_head_of, gmm_head_configs, list_configs
from gmmseg_lab.models.inference import quiet_mmengine
from gmmseg_lab.models.transfer import read_state_dict, transfer_weights

init_default_scope("mmseg")

from mmseg.registry import DATASETS, MODELS  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Single-threaded torch (see conftest.single_thread_torch)."""


def _train_dataset(data_root):
    cfg = build_config("segformer", "gmm", "quick", data_root=data_root)
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    return DATASETS.build(ds_cfg)


def _build(cfg):
    with quiet_mmengine():
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.init_weights()
    return model


# ---------------------------------------------------------------------- class-balanced sampling
def test_class_presence_is_read_from_the_annotations(quick_dataset):
    dataset = _train_dataset(quick_dataset)
    presence = class_presence(dataset)
    assert presence.shape == (len(dataset), 9)
    for i in range(len(dataset)):
        labels = np.unique(np.asarray(Image.open(dataset.get_data_info(i)["seg_map_path"])))
        assert set(np.flatnonzero(presence[i])) == set(labels[labels != 255].tolist())


def test_sampler_draws_a_class_uniformly_then_an_image_with_it():
    # 3 images: image 0 shows classes {0, 1}, image 1 {0}, image 2 {2}. Drawing a class uniformly then
    # an image with it gives P(image 2) = 1/3, P(image 0) = 1/3 * 1/2 + 1/3 = 1/2, P(image 1) = 1/6.
    presence = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], bool)
    sampler = ClassBalancedSampler(list(range(3)), seed=0, presence=presence)
    draws = np.array(list(itertools.islice(iter(sampler), 30000)))
    freq = np.bincount(draws, minlength=3) / len(draws)
    assert np.allclose(freq, [1 / 2, 1 / 6, 1 / 3], atol=0.015), freq


def test_sampler_oversamples_rare_classes_of_the_embedded_data(quick_dataset):
    dataset = _train_dataset(quick_dataset)
    presence = class_presence(dataset)
    # P(image i) = sum over the classes c it shows of 1 / (classes * images showing c)
    expected = (presence / presence.sum(0)).sum(1) / presence.any(0).sum()
    draws = np.array(list(itertools.islice(iter(ClassBalancedSampler(dataset, seed=0, presence=presence)), 40000)))
    freq = np.bincount(draws, minlength=len(dataset)) / len(draws)
    assert np.abs(freq - expected).max() < 0.006
    rare = int(presence.sum(0).argmin())  # the class shown by the fewest training images
    assert presence[draws, rare].mean() > presence[:, rare].mean()  # uniform sampling shows it less


def test_sampler_stream_is_seeded_resumable_and_split_over_ranks(monkeypatch):
    presence = np.eye(4, dtype=bool).repeat(3, axis=0)  # 12 images, one class each
    data = list(range(12))
    first = list(itertools.islice(iter(ClassBalancedSampler(data, seed=3, presence=presence)), 50))
    again = list(itertools.islice(iter(ClassBalancedSampler(data, seed=3, presence=presence)), 50))
    other = list(itertools.islice(iter(ClassBalancedSampler(data, seed=4, presence=presence)), 50))
    assert first == again and first != other
    resumed = ClassBalancedSampler(data, seed=3, presence=presence)
    resumed.skip(20)
    assert list(itertools.islice(iter(resumed), 30)) == first[20:]
    import gmmseg_lab.data.samplers as samplers

    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(samplers, "get_dist_info", lambda rank=rank: (rank, 2))
        ranks.append(list(itertools.islice(iter(ClassBalancedSampler(data, seed=3, presence=presence)), 25)))
    assert ranks[0] == first[0::2] and ranks[1] == first[1::2]


def test_sampler_refuses_a_data_set_without_any_class():
    with pytest.raises(ValueError, match="no training image shows any class"):
        ClassBalancedSampler([0, 1], seed=0, presence=np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="presence must be"):
        ClassBalancedSampler([0, 1], seed=0, presence=np.ones((3, 3), bool))


def test_both_twins_train_with_the_class_balanced_sampler(quick_dataset):
    for head in ("gmm", "softmax"):
        cfg = build_config("deeplabv3plus", head, "quick", data_root=quick_dataset)
        assert cfg.train_dataloader.sampler.type == "ClassBalancedSampler"
        loader = build_dataloader(cfg, "train")
        assert isinstance(loader.sampler, ClassBalancedSampler)


# ---------------------------------------------------------------------- head lr, projection, memory
def _param_lrs(cfg):
    from mmengine.optim import build_optim_wrapper

    model = _build(cfg)
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    lr_of = {}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    return model, {name: lr_of[id(p)] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["segformer", "deeplabv3plus", "upernet"])
def test_the_whole_decode_head_learns_ten_times_faster_than_the_pretrained_encoder(arch):
    cfg = build_config(arch, "gmm", "cpu", backbone="efficientnet-lite0")
    base = cfg.optim_wrapper.optimizer.lr
    _, lrs = _param_lrs(cfg)
    head = {n: lr for n, lr in lrs.items() if n.startswith("decode_head.")}
    assert {
        "decode_head.gmm_project.conv.weight",
        "decode_head.gmm_project.bn.weight",
        "decode_head.gmm_embed_norm.weight",
        "decode_head.gmm_score_norm.weight",
        "decode_head.gmm_score_norm.bias",
    } <= set(head)
    assert all(lr == pytest.approx(10 * base) for lr in head.values())
    assert all(lr == pytest.approx(base) for n, lr in lrs.items() if n.startswith("backbone."))


def test_projection_is_the_releases_conv_bn_relu_or_left_out(quick_dataset):
    from mmcv.cnn import ConvModule

    cfg = build_config("upernet", "gmm", "quick", data_root=quick_dataset)
    head = decode_head_of(_build(cfg))
    proj = head.gmm_project
    assert head.channels != head.embed_dim
    assert isinstance(proj, ConvModule) and proj.conv.bias is None and proj.with_norm and proj.with_activation
    assert proj.conv.kernel_size == (1, 1) and proj.conv.out_channels == head.embed_dim
    assert type(proj.bn).__name__ == "BatchNorm2d" and type(proj.activate).__name__ == "ReLU"
    linear = decode_head_of(_build(build_config("upernet", "gmm", "quick", gmm_head=dict(projection="linear"))))
    assert isinstance(linear.gmm_project, torch.nn.Conv2d) and linear.gmm_project.bias is not None
    # the release leaves the projection out when the head's channels already equal D
    same = build_config("segformer", "gmm", "quick")
    assert gmm_head_configs(same)[0].head.channels == 64 == gmm_head_configs(same)[0].get("embed_dim", 64)
    assert isinstance(decode_head_of(_build(same)).gmm_project, torch.nn.Identity)
    with pytest.raises(ValueError, match="projection must be one of"):
        _build(build_config("upernet", "gmm", "quick", gmm_head=dict(projection="mlp")))


def test_memory_is_sized_for_the_schedule():
    """The FIFO fills within the schedule (at samples_per_component new samples per iteration), so it
    holds embeddings of the trained network rather than everything since the start."""
    for arch, head, preset, backbone, path in list_configs():
        if head != "gmm":
            continue
        cfg = Config.fromfile(str(path))
        (h,) = gmm_head_configs(cfg)
        gmm_cfg = h.get("gmm_cfg") or {}
        size, per_iter = gmm_cfg.get("memory_size", 32000), gmm_cfg.get("samples_per_component", 20)
        assert size / per_iter <= cfg.train_cfg.max_iters, path.name


# ---------------------------------------------------------------------- --init-from
def test_init_from_the_softmax_twin_loads_everything_but_its_classifier(quick_dataset, tmp_path):
    torch.manual_seed(0)
    softmax = _build(build_config("upernet", "softmax", "quick", data_root=quick_dataset))
    ckpt = tmp_path / "softmax.pth"
    torch.save({"state_dict": softmax.state_dict(), "meta": {}}, ckpt)
    torch.manual_seed(1)
    gmm = _build(build_config("upernet", "gmm", "quick", data_root=quick_dataset))
    report = transfer_weights(gmm, ckpt)
    assert sorted(report.skipped_classifier) == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    assert not report.unexpected and not report.mismatched
    source, own = softmax.state_dict(), gmm.state_dict()
    assert report.loaded and all(torch.equal(own[k], source[k]) for k in report.loaded)
    backbone_and_head = [k for k in source if not k.startswith("decode_head.conv_seg.")]
    assert set(report.loaded) == set(backbone_and_head)  # every backbone and head tensor, aux head included
    assert all(k.startswith("decode_head.gmm") for k in report.missing)  # only the GMM's own parts
    assert "decode_head.gmm.means" in report.missing and "softmax classifier not loaded" in report.summary()


def test_init_from_in_training_runs_once_before_the_first_iteration(quick_dataset, tmp_path):
    from gmmseg_lab.train import train

    softmax_dir = train(
        build_config(
            "segformer", "softmax", "quick", data_root=quick_dataset, work_dir=tmp_path / "softmax", max_iters=2
        ),
        progress=False,
        log_level="WARNING",
    )
    ckpt = softmax_dir / "iter_2.pth"
    cfg = build_config(
        "segformer",
        "gmm",
        "quick",
        data_root=quick_dataset,
        work_dir=tmp_path / "gmm",
        max_iters=1,
        init_from=ckpt,
        cfg_options={"optim_wrapper.optimizer.lr": 0.0, "optim_wrapper.optimizer.weight_decay": 0.0},
    )
    train(cfg, progress=False, log_level="WARNING")
    text = (tmp_path / "gmm" / "init_from.txt").read_text()
    assert "loaded" in text and "decode_head.conv_seg.weight" in text and "decode_head.gmm.means" in text
    trained = read_state_dict(tmp_path / "gmm" / "iter_1.pth")
    source = read_state_dict(ckpt)
    params = [n for n, _ in _build(cfg).named_parameters() if n in source]
    assert params and all(torch.equal(trained[n], source[n]) for n in params)  # lr 0: exactly the twin's
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        build_config("segformer", "gmm", "quick", init_from=tmp_path / "missing.pth")
