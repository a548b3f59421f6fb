# SegFormer MiT-B5 on Cityscapes 512x1024: the softmax twin.
# The GMM twin (segformer_paper_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/segformer_mit.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw_160k.py',
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(embed_dims=64, num_layers=[3, 6, 40, 3]),
    decode_head=dict(
        in_channels=[64, 128, 320, 512], channels=256, num_classes=19, norm_cfg=norm_cfg))
# 8 GPUs x 1 image (mmseg's SegFormer setting)
train_dataloader = dict(batch_size=1)
