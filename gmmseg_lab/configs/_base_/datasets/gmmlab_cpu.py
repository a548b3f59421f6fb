# The embedded procedural street scenes, `cpu` size: 128 px, 300 train / 60 val images.
# Generate with gmmseg_lab.data.scenes.make_dataset(DIR, preset='cpu');
# gmmseg_lab.models.build_config(..., data_root=DIR) points the loaders at it.
dataset_type = 'GMMLabDataset'
data_root = 'data/generated/cpu'
crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    # The release's class-balanced sampling: a class drawn uniformly, then an image showing it
    # (gmmseg_lab.data.samplers); both twins draw the same images.
    sampler=dict(type='ClassBalancedSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/train', seg_map_path='annotations/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
