# CI-sized fine-tuning of the pretrained encoder: the finetune_cpu recipe (AdamW, decode head lr x10,
# poly; finetune_cpu.py) over 20 iterations, without warm-up.
_base_ = ['./finetune_cpu.py']
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=20, by_epoch=False)
]
train_cfg = dict(max_iters=20, val_interval=20)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=10))
