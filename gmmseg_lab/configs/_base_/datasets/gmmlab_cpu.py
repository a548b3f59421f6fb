# The embedded procedural street scenes, `cpu` size: 128 px, 300 train / 60 val images, batches of 8.
# Generate with gmmseg_lab.data.scenes.make_dataset(DIR, preset='cpu');
# gmmseg_lab.models.build_config(..., data_root=DIR) points the loaders at it.
# The layout, pipelines and loaders are the `quick` set's (gmmlab_quick.py).
_base_ = ['./gmmlab_quick.py']
data_root = 'data/generated/cpu'
crop_size = (128, 128)
train_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
