"""Importing a checkpoint of the authors' GMMSeg release (gmmseg_lab.models.release, `gmmseg-lab import-release`).

The checkpoints here are synthetic, in the release's exact layout (its state dict as the reference
on the release's checkpoint lists it, section 2): the backbone's keys and tensors come from mmseg's own
``MixVisionTransformer`` (a tiny one: 2 blocks per stage, embed dims 8..64), the decode head's keys
are written by hand in mmcv's order with random values, and the file is ``torch.save``-d as mmcv
does (``meta``, ``state_dict``, ``optimizer``). The release's test-time logits are computed from the
raw tensors by :func:`release_logits` below (a few lines of torch, nothing of the lab's), and the
imported model must give them to 1e-5.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gmmseg_lab.checkpoints import CheckpointError
from gmmseg_lab.cli import main

pytestmark = pytest.mark.usefixtures("single_thread_torch")

C, M, D, CH, K = 6, 3, 16, 32, 7
LAYERS = (2, 2, 2, 2)
#: Logits must match the release's formula to this (absolute).
TOL = 1e-5
P = "decode_head."
#: An mmcv ``cfg.pretty_text`` as the release's ``meta.config`` holds it (the parts the importer reads).
CONFIG_TEXT = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained=None,
    backbone=dict(
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=4,
        num_stages=4,
        num_layers=[2, 2, 2, 2],
        num_heads=[2, 4, 10, 16],
        patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1),
    decode_head=dict(
        type='SegformerGMMSegHead',
        in_channels=[8, 16, 40, 64],
        in_index=[0, 1, 2, 3],
        channels=32,
        dropout_ratio=0.1,
        num_classes=6,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        num_components=3,
        embedding_dim=16,
        update_GMM_interval=5,
        gamma_mean=0.999,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
gpu_ids = range(0, 8)
work_dir = './work_dirs/segformer_mit-b5_gmmseg_512x512_80k_cocostuff10k'
"""
CLASSES = tuple(f"stuff_{i}" for i in range(C))
PALETTE = [[10 * i, 20 * i, 30 * i] for i in range(C)]


# ---------------------------------------------------------------------- synthetic release checkpoints
def make_mit(base: int = 8, heads=(1, 2, 5, 8), seed: int = 0):
    """mmseg's MixVisionTransformer, tiny: embed dims base * heads = [8, 16, 40, 64], 2 blocks per stage."""
    from mmseg.models.backbones import MixVisionTransformer

    torch.manual_seed(seed)
    mit = MixVisionTransformer(
        in_channels=3,
        embed_dims=base,
        num_stages=4,
        num_layers=list(LAYERS),
        num_heads=list(heads),
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
    )
    mit.init_weights()
    return mit.eval()


def release_state(mit, *, ch: int = CH, queue: int | None = K, seed: int = 1) -> OrderedDict:
    """The release's state dict (backbone., then decode_head. in mmcv's order), random values."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    sd = OrderedDict(("backbone." + k, v.detach().clone()) for k, v in mit.state_dict().items())
    embed = [mit.embed_dims * h for h in mit.num_heads]
    sd[P + "means"] = 0.5 * randn(C, M, D)  # not unit norm: the release normalises them at every forward
    sd[P + "diagonal"] = 0.1 + 0.4 * torch.rand(C, M, D, generator=g)
    sd[P + "eye_matrix"] = torch.ones(D)
    sd[P + "iteration_counter"] = torch.tensor([80.0])
    if queue:
        sd[P + "queue"] = F.normalize(randn(C * M, D, queue), dim=1)  # columns are unit vectors
        sd[P + "queue_ptr"] = torch.randint(0, queue, (C * M,), generator=g)
    sd[P + "conv_seg.weight"] = 0.01 * randn(C, ch, 1, 1)
    sd[P + "conv_seg.bias"] = torch.zeros(C)

    def conv_module(name: str, out: int, inp: int) -> None:
        sd[f"{P}{name}.conv.weight"] = randn(out, inp, 1, 1) / math.sqrt(inp)
        sd[f"{P}{name}.bn.weight"] = 1 + 0.1 * randn(out)
        sd[f"{P}{name}.bn.bias"] = 0.1 * randn(out)
        sd[f"{P}{name}.bn.running_mean"] = 0.1 * randn(out)
        sd[f"{P}{name}.bn.running_var"] = 0.5 + torch.rand(out, generator=g)
        sd[f"{P}{name}.bn.num_batches_tracked"] = torch.tensor(80)

    if ch != D:
        conv_module("projection", D, ch)
    for name, size in (("feat_norm", D), ("mask_norm", C)):
        sd[f"{P}{name}.weight"] = 1 + 0.1 * randn(size)
        sd[f"{P}{name}.bias"] = 0.1 * randn(size)
    for i, e in enumerate(embed):
        conv_module(f"convs.{i}", ch, e)
    conv_module("fusion_conv", ch, len(embed) * ch)
    return sd


def save_release(
    path: Path, sd: OrderedDict, meta: dict | None = None, optimizer: bool = True, bare: bool = False
) -> Path:
    """As mmcv's save_checkpoint: {meta, state_dict, optimizer}; ``bare``: the state dict alone."""
    if bare:
        torch.save(sd, path)
        return path
    obj = {}
    if meta is not None:
        obj["meta"] = meta
    obj["state_dict"] = sd
    if optimizer:
        obj["optimizer"] = {"state": {}, "param_groups": [{"lr": 6e-5, "weight_decay": 0.01, "params": [0, 1, 2]}]}
    torch.save(obj, path)
    return path


def release_meta(config: bool = True) -> dict:
    meta = dict(
        env_info="sys.platform: linux",
        seed=0,
        exp_name="segformer_gmmseg.py",
        mmseg_version="0.22.1+74f882e",
        CLASSES=CLASSES,
        PALETTE=PALETTE,
        epoch=1,
        iter=79999,
        mmcv_version="1.5.0",
        time="Sat Oct 29 17:39:57 2022",
        hook_msgs=dict(last_ckpt="work_dirs/x/iter_80000.pth"),
    )
    if config:
        meta["config"] = CONFIG_TEXT
    return meta


# ---------------------------------------------------------------------- the release's formula
def _conv_bn_relu(x, sd, name):
    x = F.conv2d(x, sd[f"{P}{name}.conv.weight"])
    x = F.batch_norm(
        x,
        sd[f"{P}{name}.bn.running_mean"],
        sd[f"{P}{name}.bn.running_var"],
        sd[f"{P}{name}.bn.weight"],
        sd[f"{P}{name}.bn.bias"],
        training=False,
        eps=1e-5,
    )
    return F.relu(x)


def release_logits(sd: OrderedDict, feats: list[torch.Tensor]) -> torch.Tensor:
    """The release's test-time class logits [B, C, h, w] (float64) from its raw tensors and the MiT's
    4 feature maps: convs + resize + concat + fusion + projection, LayerNorm(D), L2, diagonal Gaussian
    log-density under L2-normalised means, max over components, LayerNorm over classes."""
    size = feats[0].shape[2:]
    outs = [
        F.interpolate(_conv_bn_relu(f, sd, f"convs.{i}"), size=size, mode="bilinear", align_corners=False)
        for i, f in enumerate(feats)
    ]
    x = _conv_bn_relu(torch.cat(outs, dim=1), sd, "fusion_conv")
    if P + "projection.conv.weight" in sd:
        x = _conv_bn_relu(x, sd, "projection")
    b, d, h, w = x.shape
    x = x.permute(0, 2, 3, 1).reshape(-1, d).double()
    x = F.layer_norm(x, (d,), sd[P + "feat_norm.weight"].double(), sd[P + "feat_norm.bias"].double(), eps=1e-5)
    x = F.normalize(x, dim=1)
    mu = F.normalize(sd[P + "means"].double(), dim=-1)  # [C, M, D]
    sigma = sd[P + "diagonal"].double()
    z = (x[:, None, None, :] - mu[None]) / sigma[None]  # [N, C, M, D]
    log_p = -0.5 * d * math.log(2 * math.pi) - sigma.log().sum(-1)[None] - 0.5 * z.square().sum(-1)
    scores = log_p.max(dim=-1).values  # [N, C]
    logits = F.layer_norm(
        scores, (scores.shape[1],), sd[P + "mask_norm.weight"].double(), sd[P + "mask_norm.bias"].double(), eps=1e-5
    )
    return logits.view(b, h, w, -1).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------- a tiny data set in the lab's layout
def write_dataset(root: Path, num_classes: int = C, images: int = 2, size=(64, 96)) -> Path:
    rng = np.random.default_rng(0)
    for split in ("val",):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(images):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            mask = rng.integers(0, num_classes, size, dtype=np.uint8)
            mask[:4] = 255
            Image.fromarray(img).save(root / "images" / split / f"img_{i}.png")
            Image.fromarray(mask).save(root / "annotations" / split / f"img_{i}.png")
    (root / "classes.json").write_text(
        json.dumps({"classes": list(CLASSES), "palette": [[i, i, i] for i in range(num_classes)]})
    )
    return root


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mit_default():
    return make_mit()


@pytest.fixture(scope="module")
def mit_heads():
    """Heads [2, 4, 10, 16] of 4 channels: the same embed dims as MiT-B5's heads would give, other features."""
    return make_mit(base=4, heads=(2, 4, 10, 16))


CASES = {
    # name: (which MiT, decode channels, queue, meta, optimizer, bare state dict)
    "full": ("heads", CH, K, "config", True, False),
    "no-meta-no-queue": ("default", CH, None, None, False, False),
    "identity-projection": ("default", D, K, "classes", True, False),
    "bare-state-dict": ("default", CH, None, None, False, True),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, mit_default, mit_heads):
    """Each case of CASES converted once: {name: (release state dict, MiT, work dir, report)}."""
    from gmmseg_lab.models.release import import_release

    root = tmp_path_factory.mktemp("release")
    out = {}
    for name, (which, ch, queue, meta, optimizer, bare) in CASES.items():
        mit = mit_heads if which == "heads" else mit_default
        sd = release_state(mit, ch=ch, queue=queue)
        meta_obj = {"config": release_meta(), "classes": {"CLASSES": CLASSES}}.get(meta) if meta else None
        path = save_release(root / f"{name}.pth", sd, meta_obj, optimizer=optimizer, bare=bare)
        work = root / f"{name}_work"
        out[name] = (sd, mit, work, import_release(path, work))
    return out


# ---------------------------------------------------------------------- the converted model
@pytest.mark.parametrize("case", list(CASES))
def test_the_work_dir_loads_strictly_and_gives_the_release_logits(case, imported):
    from gmmseg_lab.models import load_segmentor
    from gmmseg_lab.models.inference import segmentor_outputs

    sd, mit, work, report = imported[case]
    model, cfg = load_segmentor(work, device="cpu")  # strict: no missing, unexpected or reshaped key
    assert sorted(p.name for p in work.iterdir()) == sorted(report["files"])
    torch.manual_seed(3)
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model.extract_feat(image)
        reference_feats = mit(image)
        for ours, theirs in zip(feats, reference_feats):
            assert torch.equal(ours, theirs)
        expected = release_logits(sd, reference_feats)
        head = model.decode_head
        logits = head.forward(feats)  # [B, C, h, w] at the embeddings' resolution
        out = head.predict_gmm(feats, [dict(img_shape=(64, 96))] * 2)
        whole = segmentor_outputs(model, image, [dict(img_shape=(64, 96))] * 2)
    assert logits.shape == (2, C, 16, 24)
    diff = (logits.double() - expected).abs().max().item()
    up = F.interpolate(expected, size=(64, 96), mode="bilinear", align_corners=False)
    diff_up = (out["seg_logits"].double() - up).abs().max().item()
    print(f"{case}: max |logits - release| = {diff:.2e} (embedding resolution), {diff_up:.2e} (upsampled)")
    assert diff < TOL and diff_up < TOL
    assert torch.equal(whole["seg_logits"], out["seg_logits"])
    assert torch.equal(out["seg_logits"].argmax(1), whole["seg_logits"].argmax(1))


def test_the_mixture_and_memory_are_the_releases(imported):
    from gmmseg_lab.models import load_segmentor

    sd, _, work, report = imported["full"]
    gmm = load_segmentor(work, device="cpu")[0].decode_head.gmm
    assert torch.allclose(gmm.means, F.normalize(sd[P + "means"], dim=-1))
    assert torch.allclose(gmm.means.norm(dim=-1), torch.ones(C, M))
    assert torch.equal(gmm.stds, sd[P + "diagonal"])
    assert torch.allclose(gmm.log_weights, torch.full((C, M), -math.log(M)))
    assert torch.equal(gmm.memory.queue, sd[P + "queue"].transpose(1, 2))  # [C*M, D, K] -> [C*M, K, D]
    assert torch.equal(gmm.memory.ptr, sd[P + "queue_ptr"])
    assert torch.equal(gmm.memory.count, torch.full((C * M,), K))
    assert int(gmm.num_updates) == 80 and int(gmm.num_m_steps) == 16  # M-steps at iterations 1, 6, ..., 76
    assert gmm.memory_size == K and not bool(gmm.seen.any())

    # Without a queue: an empty placeholder memory (the logits do not read it).
    gmm = load_segmentor(imported["no-meta-no-queue"][2], device="cpu")[0].decode_head.gmm
    assert gmm.memory.queue.shape == (C * M, 100, D) and int(gmm.memory.count.sum()) == 0


def test_the_report_says_what_was_found_and_left_out(imported):
    _, _, work, report = imported["full"]
    assert json.loads((work / "import_report.json").read_text()) == json.loads(json.dumps(report))
    found = report["found"]
    assert (found["num_classes"], found["num_components"], found["embed_dim"], found["channels"]) == (C, M, D, CH)
    assert found["in_channels"] == [8, 16, 40, 64] and found["projection"] == "conv_bn_relu"
    assert found["backbone"]["num_layers"] == list(LAYERS) and found["backbone"]["embed_dims"] == [8, 16, 40, 64]
    assert found["backbone"]["num_heads"] == [2, 4, 10, 16] and found["backbone"]["num_heads_from"] == "meta.config"
    assert found["memory"] == dict(
        present=True, size=K, gigabytes=C * M * D * K * 4 / 1e9, imported=True, memory_size=K
    )
    assert found["meta"]["present"] and found["meta"]["config"] and found["meta"]["CLASSES"]
    assert found["iterations"] == 80 and report["checkpoint"] == "iter_80.pth"
    left = {e["key"] for e in report["left_out"]}
    assert left == {"decode_head.conv_seg.*", "decode_head.eye_matrix", "decode_head.iteration_counter", "optimizer"}
    assert any("counts every slot as data" in n for n in report["notes"])
    assert {"release": P + "diagonal", "lab": P + "gmm.stds"} in report["mapping"]
    assert {"release": P + "projection.conv.weight", "lab": P + "gmm_project.conv.weight"} in report["mapping"]
    classes = json.loads((work / "classes.json").read_text())
    assert classes == {"classes": list(CLASSES), "palette": PALETTE}
    ckpt = torch.load(work / "iter_80.pth", map_location="cpu", weights_only=False)
    assert ckpt["meta"]["dataset_meta"]["classes"] == list(CLASSES)
    assert (work / "release_config.txt").read_text() == CONFIG_TEXT
    assert (work / "last_checkpoint").read_text() == "iter_80.pth"  # relative: the work dir may move

    _, _, work, report = imported["no-meta-no-queue"]
    found = report["found"]
    assert not found["meta"]["present"] and not found["memory"]["present"]
    assert found["backbone"]["num_heads"] == [1, 2, 5, 8] and found["backbone"]["num_heads_from"] == "default (MiT-B5)"
    assert {e["key"] for e in report["left_out"]} == {
        "decode_head.conv_seg.*",
        "decode_head.eye_matrix",
        "decode_head.iteration_counter",
        "decode_head.queue",
    }
    notes = " ".join(report["notes"])
    assert "MiT-B5's default [1, 2, 5, 8] assumed" in notes and "generic names" in notes
    assert json.loads((work / "classes.json").read_text())["classes"] == [f"class_{i}" for i in range(C)]
    assert imported["identity-projection"][3]["found"]["projection"].startswith("identity")


def test_the_attention_heads_of_meta_config_matter(tmp_path, mit_heads):
    """Without meta.config the heads are MiT-B5's [1, 2, 5, 8] (noted): here wrong, so other features."""
    from gmmseg_lab.models import load_segmentor
    from gmmseg_lab.models.release import import_release

    sd = release_state(mit_heads, queue=None)
    report = import_release(save_release(tmp_path / "r.pth", sd, {"CLASSES": CLASSES}), tmp_path / "w")
    assert report["found"]["backbone"]["num_heads"] == [1, 2, 5, 8]
    model = load_segmentor(tmp_path / "w", device="cpu")[0]
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model.extract_feat(image)[0], mit_heads(image)[0])


def test_a_large_queue_is_left_out(tmp_path, mit_default):
    from gmmseg_lab.models import load_segmentor
    from gmmseg_lab.models.release import import_release

    path = save_release(tmp_path / "r.pth", release_state(mit_default), release_meta())
    report = import_release(path, tmp_path / "w", max_memory_gb=0, memory_size=3)
    assert report["found"]["memory"]["present"] and not report["found"]["memory"]["imported"]
    left = {e["key"]: e["why"] for e in report["left_out"]}
    assert "over --max-memory-gb 0" in left["decode_head.queue"] and "decode_head.queue_ptr" in left
    gmm = load_segmentor(tmp_path / "w", device="cpu")[0].decode_head.gmm
    assert gmm.memory.queue.shape == (C * M, 3, D) and int(gmm.memory.count.sum()) == 0


def test_the_queue_is_transposed_block_by_block():
    from gmmseg_lab.models.release import QUEUE_BLOCK_ROWS, _transposed_queue

    queue = torch.randn(2 * QUEUE_BLOCK_ROWS + 3, 5, 11, dtype=torch.float16)
    out = _transposed_queue(queue)
    assert out.dtype == torch.float32 and torch.equal(out, queue.float().transpose(1, 2))


def test_a_legacy_format_file_is_read(tmp_path, mit_default):
    from gmmseg_lab.models.release import import_release

    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": release_state(mit_default, queue=None)}, path, _use_new_zipfile_serialization=False)
    report = import_release(path, tmp_path / "w")
    assert any("legacy" in n for n in report["notes"])


def test_the_config_text_is_parsed_not_run():
    from gmmseg_lab.models.release import parse_release_config

    cfg = parse_release_config(CONFIG_TEXT + "evil = __import__('os').system('exit 3')\nneg = dict(a=-1.5, b=[-2])\n")
    assert cfg["model"]["backbone"]["num_heads"] == [2, 4, 10, 16]
    assert cfg["model"]["backbone"]["out_indices"] == (0, 1, 2, 3)
    assert cfg["neg"] == {"a": -1.5, "b": [-2]}
    assert "gpu_ids" not in cfg and "evil" not in cfg
    assert parse_release_config("model = dict(\n") == {}


# ---------------------------------------------------------------------- the command line
def test_the_command_imports_and_evaluate_takes_the_work_dir(tmp_path, mit_default, capsys):
    path = save_release(tmp_path / "release.pth", release_state(mit_default), release_meta(config=False))
    work = tmp_path / "w"
    assert main(["import-release", str(path), "--out", str(work)]) == 0
    printed = capsys.readouterr().out
    for text in (
        f"C={C}",
        f"M={M}",
        f"D={D}",
        f"Ch={CH}",
        "depths [2, 2, 2, 2]",
        f"K={K}",
        "meta: CLASSES, PALETTE",
        "left out: decode_head.conv_seg.*",
        "decode_head.eye_matrix",
        "optimizer",
        "wrote config.py",
    ):
        assert text in printed, (text, printed)
    data = write_dataset(tmp_path / "data")
    for extra in ([], ["--slide", "512", "341"]):
        metrics = tmp_path / f"metrics{len(extra)}.json"
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    str(work),
                    "--data",
                    str(data),
                    "--no-progress",
                    "--batch-size",
                    "2",
                    "--out",
                    str(metrics),
                ]
                + extra
            )
            == 0
        )
        result = json.loads(metrics.read_text())
        assert result["head"] == "gmm" and 0 <= result["miou"] <= 1 and result["checkpoint"].endswith("iter_80.pth")


def test_the_command_refuses_bad_input_and_writes_nothing(tmp_path, mit_default, capsys):
    path = save_release(tmp_path / "release.pth", release_state(mit_default, queue=None))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (["import-release", str(tmp_path / "none.pth"), "--out", str(tmp_path / "w")], 1, "does not exist"),
        (["import-release", str(path), "--out", str(tmp_path / "full")], 2, "not empty"),
        (["import-release", str(path), "--out", str(path)], 2, "not a directory"),
        (["import-release", str(path), "--out", str(tmp_path / "w"), "--max-memory-gb", "-1"], 2, "non-negative"),
    ]
    before = sorted(tmp_path.rglob("*"))
    for argv, status, text in cases:
        try:
            got = main(argv)
        except SystemExit as exc:  # argparse's own errors
            got = exc.code
        err = capsys.readouterr().err
        assert got == status and text in err and err.count("error:") == 1, (argv, got, err)
    assert sorted(tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------- other layouts are refused
def _edit(sd: OrderedDict, *, drop=(), replace=None, insert_after=None) -> OrderedDict:
    """A copy of ``sd`` with keys dropped, tensors replaced, and ``{after_key: (key, tensor)}`` inserted."""
    out = OrderedDict()
    for key, value in sd.items():
        if key in drop:
            continue
        out[key] = (replace or {}).get(key, value)
        if insert_after and key in insert_after:
            new_key, new_value = insert_after[key]
            out[new_key] = new_value
    return out


def _softmax_segformer(sd: OrderedDict) -> OrderedDict:
    keep = ("backbone.", P + "convs.", P + "fusion_conv.", P + "conv_seg.")
    return OrderedDict((k, v) for k, v in sd.items() if k.startswith(keep))


REFUSED = {
    "a softmax SegFormer": (
        _softmax_segformer,
        ["no decode_head.means: not a GMMSeg release checkpoint", "decode_head.conv_seg.weight", "softmax"],
    ),
    "a head tensor of another shape": (
        lambda sd: _edit(sd, replace={P + "diagonal": torch.ones(C, M, D + 1)}),
        ["decode_head.diagonal: shape (6, 3, 17)", "(6, 3, 16)"],
    ),
    "a backbone tensor of another shape": (
        lambda sd: _edit(sd, replace={"backbone.layers.1.1.1.attn.sr.weight": torch.ones(16, 16, 2, 2)}),
        ["backbone.layers.1.1.1.attn.sr.weight: shape (16, 16, 2, 2)", "(16, 16, 4, 4)"],
    ),
    "the first of two bad keys": (
        lambda sd: _edit(
            sd,
            replace={P + "mask_norm.weight": torch.ones(C + 1)},
            insert_after={P + "diagonal": (P + "covariance", torch.ones(3))},
        ),
        ["decode_head.covariance: not a key of the release's layout"],
    ),
    "an auxiliary head": (
        lambda sd: _edit(
            sd,
            insert_after={
                P + "fusion_conv.bn.num_batches_tracked": ("auxiliary_head.conv_seg.weight", torch.ones(C, 8, 1, 1))
            },
        ),
        ["auxiliary_head.conv_seg.weight: not a key of the release's layout"],
    ),
    "a missing key": (lambda sd: _edit(sd, drop={P + "feat_norm.bias"}), ["no decode_head.feat_norm.bias"]),
    "no projection with channels != embed_dim": (
        lambda sd: _edit(sd, drop={k for k in sd if k.startswith(P + "projection.")}),
        ["no decode_head.projection.conv.weight"],
    ),
    "a projection with channels == embed_dim": (
        lambda sd: _edit(
            sd,
            replace={
                P + "means": torch.randn(C, M, CH),
                P + "diagonal": torch.ones(C, M, CH),
                P + "feat_norm.weight": torch.ones(CH),
                P + "feat_norm.bias": torch.ones(CH),
                P + "eye_matrix": torch.ones(CH),
            },
            drop={P + "queue", P + "queue_ptr"},
        ),
        ["decode_head.projection.conv.weight: the release has a projection only when channels != embed_dim"],
    ),
    "standard deviations <= 0": (
        lambda sd: _edit(sd, replace={P + "diagonal": -torch.ones(C, M, D)}),
        ["decode_head.diagonal", "<= 0"],
    ),
    "a queue pointer out of range": (
        lambda sd: _edit(sd, replace={P + "queue_ptr": torch.full((C * M,), K)}),
        ["decode_head.queue_ptr", "[0, 7)"],
    ),
    "a backbone that is no MiT": (
        lambda sd: _edit(sd, insert_after={"backbone.layers.0.2.bias": ("backbone.conv1.weight", torch.ones(1))}),
        ["backbone.conv1.weight: not a MixVisionTransformer key"],
    ),
    "a missing backbone block tensor": (
        lambda sd: _edit(sd, drop={"backbone.layers.2.1.1.norm1.weight"}),
        ["no backbone.layers.2.1.1.norm1.weight"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_checkpoint_of_another_layout_is_refused_naming_the_key(case, tmp_path, mit_default):
    from gmmseg_lab.models.release import import_release

    make, wanted = REFUSED[case]
    path = save_release(tmp_path / "other.pth", make(release_state(mit_default)), release_meta())
    with pytest.raises(CheckpointError) as info:
        import_release(path, tmp_path / "w")
    message = str(info.value)
    assert message.startswith(f"cannot import {path}: ")
    for text in wanted:
        assert text in message, (text, message)
    assert not (tmp_path / "w").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["other.pth"]


def test_a_lab_checkpoint_is_refused(imported, tmp_path):
    from gmmseg_lab.models.release import import_release

    work = imported["full"][2]
    with pytest.raises(
        CheckpointError,
        match=r"no decode_head\.means: .*decode_head\.gmm\.means: a gmmseg-lab "
        r"checkpoint already",
    ):
        import_release(work / "iter_80.pth", tmp_path / "w")
    assert not (tmp_path / "w").exists()
