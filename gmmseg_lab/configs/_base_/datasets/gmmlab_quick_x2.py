# The embedded scenes of the `quick` preset (64 px) upscaled 2x for the pretrained encoder: at stride 32 a
# 64-px image would leave a 2x2 map. Predictions are scored at the original size (the test
# pipeline loads the annotation after the resize, and inference resizes back to it).
# Data root, loaders and sampler are the `quick` set's (gmmlab_quick.py); only the pipelines change.
_base_ = ['./gmmlab_quick.py']
crop_size = (128, 128)
input_scale = 2.0
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale_factor=input_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=input_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
