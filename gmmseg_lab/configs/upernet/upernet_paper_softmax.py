# UPerNet, ResNetV1c-101 (stem 64, base 64 channels), head channels 512 on Cityscapes 512x1024: the softmax twin.
# The GMM twin (upernet_paper_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/upernet_r.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/sgd_80k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(depth=101, stem_channels=64, base_channels=64, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[256, 512, 1024, 2048], channels=512, num_classes=19, norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=1024, channels=256, num_classes=19, norm_cfg=norm_cfg))
