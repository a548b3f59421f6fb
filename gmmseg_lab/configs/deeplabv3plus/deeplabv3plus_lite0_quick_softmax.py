# DeepLabV3+ (output stride 16) on the ImageNet-pretrained EfficientNet-Lite0 encoder, embedded scenes at 64 px upscaled 2x
# (quick): the softmax twin. The GMM twin (deeplabv3plus_lite0_quick_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/deeplabv3plus_lite0.py',
    '../_base_/datasets/gmmlab_quick_x2.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/finetune_quick.py',
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(channels=32, c1_channels=8, num_classes=9),
    auxiliary_head=dict(channels=16, num_classes=9))
