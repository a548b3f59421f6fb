# OCRNet: HRNetV2 + a cascade of two heads: FCNHead (soft object regions; stays softmax in the GMM
# twin) -> OCRHead (object-contextual representations; its classifier becomes the GMM).
# HRNetV2-W18 shape here. mmengine does not merge list items through `_base_`, so the two heads are
# also the variables `fcn_head` and `ocr_head`: a leaf config writes its list from them,
# `decode_head=[dict(_base_.fcn_head, in_channels=..., ...), dict(_base_.ocr_head, ...)]`, and the GMM
# twin wraps `{{_base_.ocr_head}}`.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
# Stage 1: soft object regions, a 1x1 conv over the concatenated branches (channels = their sum).
fcn_head = dict(
    type='FCNHead',
    in_channels=[18, 36, 72, 144],
    channels=sum([18, 36, 72, 144]),
    in_index=(0, 1, 2, 3),
    input_transform='resize_concat',
    kernel_size=1,
    num_convs=1,
    concat_input=False,
    dropout_ratio=-1,
    num_classes=9,
    norm_cfg=norm_cfg,
    align_corners=False,
    loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
# Stage 2: object-contextual representations of the same concatenated branches.
ocr_head = dict(
    type='OCRHead',
    in_channels=[18, 36, 72, 144],
    in_index=(0, 1, 2, 3),
    input_transform='resize_concat',
    channels=512,
    ocr_channels=256,
    dropout_ratio=-1,
    num_classes=9,
    norm_cfg=norm_cfg,
    align_corners=False,
    loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
model = dict(
    type='CascadeEncoderDecoder',
    data_preprocessor=data_preprocessor,
    num_stages=2,
    pretrained=None,
    backbone=dict(
        type='HRNet',
        norm_cfg=norm_cfg,
        norm_eval=False,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                        num_blocks=(4, ), num_channels=(64, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(4, 4), num_channels=(18, 36)),
            stage3=dict(num_modules=4, num_branches=3, block='BASIC',
                        num_blocks=(4, 4, 4), num_channels=(18, 36, 72)),
            stage4=dict(num_modules=3, num_branches=4, block='BASIC',
                        num_blocks=(4, 4, 4, 4),
                        num_channels=(18, 36, 72, 144)))),
    decode_head=[fcn_head, ocr_head],
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
