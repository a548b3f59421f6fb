# SegFormer MiT-B5 on COCO-Stuff-10K 512x512: the softmax twin.
# The GMM twin (segformer_paper-cocostuff10k_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/segformer_mit.py',
    '../_base_/datasets/coco-stuff10k_512x512.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw_160k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(embed_dims=64, num_layers=[3, 6, 40, 3]),
    decode_head=dict(
        in_channels=[64, 128, 320, 512], channels=256, num_classes=171, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=(768, 768), stride=(512, 512)))
# 8 GPUs x 2 images (mmseg's SegFormer setting on 512x512 data)
train_dataloader = dict(batch_size=2)
