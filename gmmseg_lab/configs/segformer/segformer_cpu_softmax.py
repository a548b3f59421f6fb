# SegFormer, MiT-B0 (embed_dims 32, 2 layers per stage), head channels 128 on the embedded scenes at 128 px (cpu): the softmax twin.
# The GMM twin (segformer_cpu_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/segformer_mit.py',
    '../_base_/datasets/gmmlab_cpu.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/cpu.py',
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(embed_dims=32, num_layers=[2, 2, 2, 2]),
    decode_head=dict(
        in_channels=[32, 64, 160, 256], channels=128, num_classes=9))
