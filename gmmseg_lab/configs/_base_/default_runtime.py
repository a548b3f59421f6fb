# Runtime shared by every gmmseg-lab config (mmseg 1.x idiom).
default_scope = 'mmseg'
# Registers GMMSegHead, GMMLabDataset, ClassBalancedSampler and EfficientNetLite (gmmseg_lab.models) and the
# lab's training hooks (gmmseg_lab.train.hooks: --init-from) when a config is used outside gmmseg_lab.train.
custom_imports = dict(imports=['gmmseg_lab.models', 'gmmseg_lab.train.hooks'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
# No fixed `name`: the Runner names the visualizer after the (unique) experiment, so several runs
# in one process (a notebook, the tests) each write their own scalars.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# Same seed for both twins; gmmseg_lab.models.build_config(seed=...) sets it.
randomness = dict(seed=0, deterministic=False)
