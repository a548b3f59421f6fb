# OCRNet, a small HRNet (branch widths (16, 32, 64, 128)) on the embedded scenes at 128 px (cpu): the softmax twin.
# The GMM twin (ocrnet_cpu_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/ocrnet_hr.py',
    '../_base_/datasets/gmmlab_cpu.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/cpu.py',
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='BN', requires_grad=True)
# Stage 1 (stays softmax in the GMM twin): soft object regions.
fcn_head = dict(
    type='FCNHead',
    in_channels=[16, 32, 64, 128],
    channels=240,
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
# Stage 2: object-contextual representations (its classifier is the GMM in the twin).
ocr_head = dict(
    type='OCRHead',
    in_channels=[16, 32, 64, 128],
    in_index=(0, 1, 2, 3),
    input_transform='resize_concat',
    channels=128,
    ocr_channels=64,
    dropout_ratio=-1,
    num_classes=9,
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
                        num_blocks=(2,), num_channels=(32,)),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(2, 2), num_channels=(16, 32)),
            stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                        num_blocks=(2, 2, 2), num_channels=(16, 32, 64)),
            stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                        num_blocks=(2, 2, 2, 2), num_channels=(16, 32, 64, 128)),
        )),
    decode_head=[fcn_head, ocr_head])
