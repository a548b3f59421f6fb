# SegFormer, MiT with embed_dims 16 and 1 layer per stage on the embedded scenes at 64 px (quick): the softmax twin.
# The GMM twin (segformer_quick_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/segformer_mit.py',
    '../_base_/datasets/gmmlab_quick.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/quick.py',
]
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(embed_dims=16, num_layers=[1, 1, 1, 1]),
    decode_head=dict(
        in_channels=[16, 32, 80, 128], channels=64, num_classes=9))
