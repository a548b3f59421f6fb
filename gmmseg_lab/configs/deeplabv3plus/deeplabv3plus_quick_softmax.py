# DeepLabV3+, ResNetV1c-18 (stem 16, base 16 channels), head channels 32 on the embedded scenes at 64 px (quick): the softmax twin.
# The GMM twin (deeplabv3plus_quick_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/deeplabv3plus_r.py',
    '../_base_/datasets/gmmlab_quick.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/quick.py',
]
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(depth=18, stem_channels=16, base_channels=16),
    decode_head=dict(
        in_channels=128, c1_in_channels=16, c1_channels=8, channels=32,
        dilations=(1, 2, 4, 6), num_classes=9),
    auxiliary_head=dict(
        in_channels=64, channels=16, num_classes=9))
