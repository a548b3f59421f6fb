# OCRNet, HRNetV2-W48 (branch widths (48, 96, 192, 384)) on Cityscapes 512x1024: the softmax twin.
# The GMM twin (ocrnet_paper_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/ocrnet_hr.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/sgd_80k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
# Stage 1 (stays softmax in the GMM twin): soft object regions.
fcn_head = dict(
    type='FCNHead',
    in_channels=[48, 96, 192, 384],
    channels=720,
    in_index=(0, 1, 2, 3),
    input_transform='resize_concat',
    kernel_size=1,
    num_convs=1,
    concat_input=False,
    dropout_ratio=-1,
    num_classes=19,
    norm_cfg=norm_cfg,
    align_corners=False,
    loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
# Stage 2: object-contextual representations (its classifier is the GMM in the twin).
ocr_head = dict(
    type='OCRHead',
    in_channels=[48, 96, 192, 384],
    in_index=(0, 1, 2, 3),
    input_transform='resize_concat',
    channels=512,
    ocr_channels=256,
    dropout_ratio=-1,
    num_classes=19,
    norm_cfg=norm_cfg,
    align_corners=False,
    loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        norm_cfg=norm_cfg,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                        num_blocks=(4,), num_channels=(64,)),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(4, 4), num_channels=(48, 96)),
            stage3=dict(num_modules=4, num_branches=3, block='BASIC',
                        num_blocks=(4, 4, 4), num_channels=(48, 96, 192)),
            stage4=dict(num_modules=3, num_branches=4, block='BASIC',
                        num_blocks=(4, 4, 4, 4), num_channels=(48, 96, 192, 384)),
        )),
    decode_head=[fcn_head, ocr_head])
