"""GMMSeg heads on mmseg decode heads, the shipped configs and their softmax twins, inference."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from gmmseg_lab.models import (
    ARCHS,
    BACKBONES,
    CONFIG_SETS,
    GMM_HEAD_KEYS,
    PRETRAINED_BACKBONE,
    PRETRAINED_PRESETS,
    build_config,
    build_dataloader,
    config_diff,
    config_path,
    decode_head_of,
    gmm_head_class,
    gmm_head_configs,
    is_gmm_head,
    list_configs,
    predict_batch,
    segmentor_outputs,
)
from gmmseg_lab.models.inference import quiet_mmengine

init_default_scope("mmseg")

from mmengine.structures import PixelData  # noqa: E402
from mmseg.registry import DATASETS, MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Every test here runs with single-threaded torch (see conftest.single_thread_torch)."""


#: The method's settings (gmmseg-method.md), the same in every GMM config.
METHOD = dict(num_components=5, embed_dim=64, loss_component_weight=0.01, update_correct_only=True)
METHOD_GMM = dict(
    e_step="sinkhorn",
    memory="fifo",
    samples_per_component=20,
    update_interval=5,
    mean_momentum=0.999,
    std_momentum=0.0,
    sinkhorn_iters=3,
    sinkhorn_epsilon=0.05,
    var_floor=0.01,
)


def build_model(cfg):
    with quiet_mmengine():
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.init_weights()
    return model


def quick_batches(cfg, n):
    it = iter(build_dataloader(cfg, "train"))
    return [next(it) for _ in range(n)]


# ---------------------------------------------------------------------- registry and head classes
def test_registry_knows_heads_and_dataset():
    assert MODELS.get("GMMSegHead") is not None
    for name in ("GMMSegformerHead", "GMMDepthwiseSeparableASPPHead", "GMMUPerHead", "GMMOCRHead"):
        assert MODELS.get(name) is not None
    assert DATASETS.get("GMMLabDataset") is not None
    base = MODELS.get("SegformerHead")
    cls = gmm_head_class("SegformerHead")
    assert cls is gmm_head_class(base) and issubclass(cls, base) and cls.__name__ == "GMMSegformerHead"
    with pytest.raises(TypeError):
        gmm_head_class("ResNetV1c")


def small_head_cfg(base_type="PSPHead", **extra):
    return dict(
        type="GMMSegHead",
        base_type=base_type,
        in_channels=8,
        channels=8,
        num_classes=3,
        pool_scales=(1, 2),
        dropout_ratio=0.0,
        norm_cfg=dict(type="BN", requires_grad=True),
        num_components=2,
        embed_dim=4,
        gmm_cfg=dict(memory_size=50, update_interval=1),
        **extra,
    )


def samples(labels):
    out = []
    for lab in labels:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=lab[None].long())
        s.set_metainfo(dict(img_shape=tuple(lab.shape), pad_shape=tuple(lab.shape), ori_shape=tuple(lab.shape)))
        out.append(s)
    return out


def test_any_decode_head_gets_the_gmm_classifier_and_pickles():
    """A head none of the presets use (PSPHead): built, trained one step, picklable; the flat and the
    wrapped config forms build the same class."""
    torch.manual_seed(0)
    head = MODELS.build(small_head_cfg())
    wrapped = MODELS.build(
        dict(
            type="GMMSegHead",
            head=dict(type="PSPHead", in_channels=8, channels=8, num_classes=3, pool_scales=(1, 2)),
            num_components=2,
            embed_dim=4,
        )
    )
    assert type(head) is type(wrapped) and is_gmm_head(head) and not hasattr(head, "conv_seg")
    assert head.gmm.num_classes == 3 and head.gmm.num_components == 2 and head.gmm.embed_dim == 4
    feats = [torch.randn(2, 8, 6, 6)]
    labels = torch.randint(0, 3, (2, 12, 12))
    labels[:, :2] = 255
    head.train()
    losses = head.loss(feats, samples(labels), None)
    assert {
        "loss_ce",
        "loss_component",
        "acc_seg",
        "gmm_pixels",
        "gmm_m_step",
        "gmm_loglik",
        "gmm_balance",
        "gmm_mean_step",
    } <= set(losses)
    # the convergence statistics are what they claim: recompute them from the head's own mixture
    assert 0.0 <= float(losses["gmm_balance"]) <= 1.0
    assert float(losses["gmm_mean_step"]) > 0  # the first M-step moves the means off their init
    assert torch.isfinite(losses["gmm_loglik"])
    total = losses["loss_ce"] + losses["loss_component"]
    total.backward()
    assert next(head.gmm_project.parameters()).grad.abs().sum() > 0
    assert int(head.gmm.num_m_steps) == 1  # update_interval=1
    clone = pickle.loads(pickle.dumps(head))
    assert type(clone).__name__ == "GMMPSPHead" and torch.equal(clone.gmm.means, head.gmm.means)


def test_component_loss_targets_and_memory_gets_only_correct_pixels(monkeypatch):
    torch.manual_seed(0)
    head = MODELS.build(small_head_cfg(loss_component_weight=1.0))
    head.train()
    seen = {}
    real_update = head.gmm.update

    def spy(x, labels, correct=None, assignment=None):
        seen.update(x=x, labels=labels, correct=correct, assignment=assignment)
        return real_update(x, labels, correct=correct, assignment=assignment)

    monkeypatch.setattr(head.gmm, "update", spy)
    feats = [torch.randn(2, 8, 6, 6)]
    labels = torch.randint(0, 3, (2, 6, 6))
    labels[0, 0, 0] = 255
    logits = head.forward(feats)
    cache = dict(head._gmm_cache)
    flat = labels.view(-1)
    assigned = head.gmm.assign_components(cache["x"].detach(), flat)  # before the update's M-step
    losses = head.loss_by_feat(logits, samples(labels))
    assert torch.equal(seen["labels"], flat)
    assert torch.equal(seen["correct"], logits.argmax(1).view(-1) == flat)
    assert torch.equal(seen["assignment"], assigned)  # one E-step: the loss's targets feed the memory
    # the component loss is CE over the C*M log-densities against label*M + Sinkhorn component
    target = torch.where(assigned >= 0, flat * 2 + assigned, torch.full_like(flat, -1))
    expected = torch.nn.functional.cross_entropy(cache["component_log_prob"].flatten(1), target, ignore_index=-1)
    assert torch.allclose(losses["loss_component"], expected)
    # embeddings are unit vectors; class logits are the LayerNorm of the max over components
    assert torch.allclose(cache["x"].norm(dim=1), torch.ones(cache["x"].shape[0]), atol=1e-5)
    scores = head.gmm_score_norm(cache["component_log_prob"].amax(-1))
    assert torch.allclose(logits.permute(0, 2, 3, 1).reshape(-1, 3), scores)


# ---------------------------------------------------------------------- configs
def test_every_shipped_config_parses():
    configs = list_configs()
    pretrained = [a for a in ARCHS if PRETRAINED_BACKBONE in BACKBONES[a]]
    assert len(configs) == (len(ARCHS) * len(CONFIG_SETS) + len(pretrained) * len(PRETRAINED_PRESETS)) * 2
    for arch, head, preset, backbone, path in configs:
        assert path == config_path(arch, head, preset, backbone) and path.is_file()
        cfg = Config.fromfile(str(path))
        assert cfg.default_scope == "mmseg" and "gmmseg_lab.models" in cfg.custom_imports.imports
        assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.val_evaluator.type == "IoUMetric"
        assert bool(gmm_head_configs(cfg)) == (head == "gmm")


@pytest.mark.parametrize("arch, preset, backbone", sorted({(a, p, b) for a, _, p, b, _ in list_configs()}))
def test_twins_differ_only_in_the_classifier(arch, preset, backbone):
    softmax = Config.fromfile(str(config_path(arch, "softmax", preset, backbone)))
    gmm = Config.fromfile(str(config_path(arch, "gmm", preset, backbone)))
    diff = config_diff(softmax, gmm)
    head_prefix = "model.decode_head.1." if arch == "ocrnet" else "model.decode_head."
    assert f"{head_prefix}type" in diff
    for key, (a, b) in diff.items():
        assert key.startswith(head_prefix), f"{key} differs outside the decode head: {a!r} vs {b!r}"
        field = key[len(head_prefix) :].split(".")[0]
        assert field == "type" or field in GMM_HEAD_KEYS, f"{key} differs: {a!r} vs {b!r}"
        if field != "type":
            assert a == "<missing>", f"{key} present in the softmax config"
    assert diff[f"{head_prefix}type"][1] == "GMMSegHead"
    assert diff[f"{head_prefix}base_type"][1] == diff[f"{head_prefix}type"][0]


def _effective(cfg: dict, fn) -> dict:
    """A config's keyword arguments for ``fn`` with ``fn``'s defaults filled in."""
    import inspect

    defaults = {
        k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **cfg}


def test_gmm_settings_follow_the_method():
    from gmmseg_lab.gmm import GMMClassifier
    from gmmseg_lab.models.gmm_head import GMMHeadMixin

    for arch, head, preset, backbone, path in list_configs():
        if head != "gmm":
            continue
        (h,) = gmm_head_configs(Config.fromfile(str(path)))
        settings = _effective(dict(h), GMMHeadMixin.__init__)
        gmm_cfg = _effective(dict(h.get("gmm_cfg") or {}), GMMClassifier.__init__)
        assert {k: settings[k] for k in METHOD} == METHOD, path.name
        assert {k: gmm_cfg[k] for k in METHOD_GMM} == METHOD_GMM, path.name
        size = gmm_cfg["memory_size"]
        assert (size == 32000) if preset.startswith("paper") else (100 <= size <= 2000), path.name


def test_paper_configs_have_the_paper_sizes():
    cfg = {a: Config.fromfile(str(config_path(a, "gmm", "paper"))) for a in ARCHS}
    mit = cfg["segformer"].model.backbone
    assert (mit.type, mit.embed_dims, mit.num_layers) == ("MixVisionTransformer", 64, [3, 6, 40, 3])
    seg = cfg["segformer"]
    assert seg.optim_wrapper.optimizer.type == "AdamW" and seg.optim_wrapper.optimizer.lr == 6e-5
    assert seg.optim_wrapper.paramwise_cfg.custom_keys.head.lr_mult == 10.0
    assert [s.type for s in seg.param_scheduler] == ["LinearLR", "PolyLR"]
    for arch in ("deeplabv3plus", "upernet"):
        assert cfg[arch].model.backbone.type == "ResNetV1c" and cfg[arch].model.backbone.depth == 101
        assert cfg[arch].model.auxiliary_head.type == "FCNHead"
    hr = cfg["ocrnet"].model.backbone.extra.stage4.num_channels
    assert tuple(hr) == (48, 96, 192, 384) and cfg["ocrnet"].model.type == "CascadeEncoderDecoder"
    assert cfg["ocrnet"].model.decode_head[0].type == "FCNHead"
    for c in cfg.values():
        assert c.train_dataloader.dataset.type == "CityscapesDataset" and c.crop_size == (512, 1024)
        assert gmm_head_configs(c)[0].head.num_classes == 19
    for preset, dataset, classes in (
        ("paper-ade20k", "ADE20KDataset", 150),
        ("paper-cocostuff10k", "COCOStuffDataset", 171),
    ):
        for arch in ARCHS:
            c = Config.fromfile(str(config_path(arch, "gmm", preset)))
            assert c.train_dataloader.dataset.type == dataset and c.crop_size == (512, 512)
            assert c.model.test_cfg.mode == "slide" and tuple(c.model.test_cfg.crop_size) == (768, 768)
            assert gmm_head_configs(c)[0].head.num_classes == classes


@pytest.mark.slow
def test_paper_segformer_b5_builds_and_runs_a_small_forward():
    cfg = build_config("segformer", "gmm", "paper")
    model = build_model(cfg).eval()
    assert sum(p.numel() for p in model.parameters()) > 80e6  # MiT-B5
    head = decode_head_of(model)
    assert head.gmm.memory.queue.shape == (19 * 5, 32000, 64)
    metas = [dict(img_shape=(64, 96), pad_shape=(64, 96), ori_shape=(64, 96))]
    out = segmentor_outputs(model, torch.randn(1, 3, 64, 96), metas)
    assert out["seg_logits"].shape == out["class_log_likelihood"].shape == (1, 19, 64, 96)


def test_build_config_sets_data_root_seed_work_dir_and_overrides(quick_dataset, tmp_path):
    cfg = build_config(
        "deeplabv3plus",
        "gmm",
        "quick",
        data_root=quick_dataset,
        work_dir=tmp_path / "w",
        seed=7,
        max_iters=12,
        gmm_cfg=dict(memory_size=300),
        gmm_head=dict(num_components=3),
        cfg_options={"train_dataloader.batch_size": 2},
    )
    assert cfg.randomness.seed == 7 and cfg.work_dir == str(tmp_path / "w")
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[key].dataset.data_root == str(quick_dataset)
    assert cfg.train_cfg.max_iters == 12 and cfg.param_scheduler[-1].end == 12
    assert cfg.default_hooks.checkpoint.interval <= 12 and cfg.train_cfg.val_interval <= 12
    (h,) = gmm_head_configs(cfg)
    from gmmseg_lab.gmm import GMMClassifier

    effective = _effective(dict(h.gmm_cfg), GMMClassifier.__init__)  # the merge keeps the others' defaults
    assert h.gmm_cfg.memory_size == 300 and h.num_components == 3 and effective["mean_momentum"] == 0.999
    assert cfg.train_dataloader.batch_size == 2
    with pytest.raises(ValueError):
        build_config("deeplabv3plus", "softmax", "quick", gmm_cfg=dict(memory_size=10))
    with pytest.raises(ValueError):
        config_path("resnet", "gmm", "quick")


# ---------------------------------------------------------------------- every architecture, quick
def _buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", ["gmm", "softmax"])
def test_quick_build_train_save_load_predict(arch, head, quick_dataset, tmp_path):
    torch.manual_seed(0)
    cfg = build_config(arch, head, "quick", data_root=quick_dataset, work_dir=tmp_path)
    model = build_model(cfg)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    final = decode_head_of(model)
    assert is_gmm_head(final) == (head == "gmm")
    if arch in ("deeplabv3plus", "upernet"):
        assert not is_gmm_head(model.auxiliary_head)  # the auxiliary head stays softmax
    if arch == "ocrnet":
        assert not is_gmm_head(model.decode_head[0])  # the soft object regions stay softmax

    steps = final.gmm.update_interval if head == "gmm" else 1
    before = _buffers(final.gmm) if head == "gmm" else None
    model.train()
    for batch in quick_batches(cfg, steps):
        log = model.train_step(batch, optim)
        assert torch.isfinite(log["loss"])
    if head == "gmm":
        assert any(k.endswith("loss_component") for k in log) and any(k.endswith("gmm_pixels") for k in log)
        assert int(final.gmm.num_updates) == steps and int(final.gmm.num_m_steps) == 1
        assert not torch.equal(before["means"], final.gmm.means)
        assert not torch.equal(before["stds"], final.gmm.stds)
        assert int(final.gmm.memory.count.sum()) > 0

    # save / load: bit-identical state (GMM buffers included) and predictions
    path = tmp_path / "model.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    clone = build_model(cfg)
    clone.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, clone.state_dict()[key]), key

    val = next(iter(build_dataloader(cfg, "val")))
    res, res_clone = predict_batch(model, val), predict_batch(clone, val)
    num_classes = final.num_classes
    for r, rc in zip(res, res_clone):
        assert r["seg_logits"].shape == (num_classes, 64, 64) and r["pred"].shape == (64, 64)
        assert r["gt"].shape == (64, 64)
        assert torch.equal(r["seg_logits"], rc["seg_logits"])
        if head == "gmm":
            assert r["class_log_likelihood"].shape == (num_classes, 64, 64)
            assert torch.equal(r["class_log_likelihood"], rc["class_log_likelihood"])
            assert torch.allclose(r["anomaly_score"], -r["class_log_likelihood"].amax(0))
            assert torch.isfinite(r["class_log_likelihood"]).all()
            assert r["embeddings"].shape[0] == 64
        else:
            assert "class_log_likelihood" not in r
    # our inference path gives exactly mmseg's logits
    model.eval()
    with torch.no_grad():
        mm = model.test_step(val)
    assert torch.allclose(mm[0].seg_logits.data, res[0]["seg_logits"], atol=1e-5)


def test_slide_inference_matches_shapes(quick_dataset, tmp_path):
    cfg = build_config(
        "upernet",
        "gmm",
        "quick",
        data_root=quick_dataset,
        work_dir=tmp_path,
        model=dict(test_cfg=dict(mode="slide", crop_size=(48, 48), stride=(32, 32))),
    )
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 64, 80)
    metas = [dict(img_shape=(64, 80), pad_shape=(64, 80), ori_shape=(64, 80))] * 2
    out = segmentor_outputs(model, x, metas)
    assert out["seg_logits"].shape == out["class_log_likelihood"].shape == (2, 9, 64, 80)
    with torch.no_grad():
        mm = model.inference(x, [dict(m) for m in metas])
    assert torch.allclose(mm, out["seg_logits"], atol=1e-5)


def test_slide_inference_stitches_embeddings_and_softmax_features(quick_dataset):
    """Slide mode gives the GMM's embeddings (unit vectors on the stride grid) and a softmax head's
    fused features; with one window covering the image they equal whole-image inference."""
    import copy as _copy

    from mmengine.config import ConfigDict

    for head_kind, key in (("gmm", "embeddings"), ("softmax", "features")):
        torch.manual_seed(0)
        cfg = build_config("segformer", head_kind, "quick", data_root=quick_dataset)
        model = build_model(cfg).eval()
        inputs = torch.rand(1, 3, 64, 96)
        metas = [dict(img_shape=(64, 96), pad_shape=(64, 96), ori_shape=(64, 96))]
        whole = segmentor_outputs(model, inputs, metas, features=True)
        one = _copy.deepcopy(model)
        one.test_cfg = ConfigDict(mode="slide", crop_size=(64, 96), stride=(64, 96))
        single = segmentor_outputs(one, inputs, metas, features=True)
        assert torch.allclose(single[key], whole[key], atol=1e-5) and torch.allclose(
            single["seg_logits"], whole["seg_logits"], atol=1e-5
        )
        tiled = _copy.deepcopy(model)
        tiled.test_cfg = ConfigDict(mode="slide", crop_size=(32, 32), stride=(24, 24))
        out = segmentor_outputs(tiled, inputs, metas, features=True)
        assert out[key].shape == whole[key].shape and out["seg_logits"].shape == (1, 9, 64, 96)
        if key == "embeddings":
            assert torch.allclose(out[key].norm(dim=1), torch.ones(1, *out[key].shape[2:]), atol=1e-5)
        else:
            assert out[key].shape[1] == decode_head_of(model).conv_seg.in_channels
