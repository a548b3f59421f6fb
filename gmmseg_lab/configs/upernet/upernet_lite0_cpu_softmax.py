# UPerNet on the ImageNet-pretrained EfficientNet-Lite0 encoder, embedded scenes at their 128 px (a 2x upscale would cost 4x: see configs/README.md)
# (cpu): the softmax twin. The GMM twin (upernet_lite0_cpu_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/upernet_lite0.py',
    '../_base_/datasets/gmmlab_cpu.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/finetune_cpu.py',
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(channels=96, num_classes=9),
    auxiliary_head=dict(channels=32, num_classes=9))
