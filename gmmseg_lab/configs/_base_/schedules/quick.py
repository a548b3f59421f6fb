# CI-sized schedule: a few dozen iterations from random initialisation (no pretrained weights):
# the cpu schedule's AdamW (cpu.py) over 20 iterations, poly decay without warm-up.
_base_ = ['./cpu.py']
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=20, by_epoch=False)
]
train_cfg = dict(max_iters=20, val_interval=20)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=10))
