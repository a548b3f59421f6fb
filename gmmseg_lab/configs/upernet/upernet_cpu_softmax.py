# UPerNet, ResNetV1c-18 (stem 32, base 32 channels), head channels 64 on the embedded scenes at 128 px (cpu): the softmax twin.
# The GMM twin (upernet_cpu_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/upernet_r.py',
    '../_base_/datasets/gmmlab_cpu.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/cpu.py',
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(depth=18, stem_channels=32, base_channels=32),
    decode_head=dict(
        in_channels=[32, 64, 128, 256], channels=64, num_classes=9),
    auxiliary_head=dict(
        in_channels=128, channels=32, num_classes=9))
