# GMMSeg twin of upernet_lite0_quick_softmax.py: the same network, data, schedule and seed; only the
# decode head's softmax classifier becomes GMMSeg's generative classifier (gmmseg_lab.models.gmm_head).
# Every GMM setting is the release's default (M=5, D=64, Sinkhorn E-step, FIFO memory, M-step every 5
# iterations, mean momentum 0.999: see the method page of the docs) except the memory size.
_base_ = ['./upernet_lite0_quick_softmax.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='GMMSegHead',
        head={{_base_.model.decode_head}},
        # 200 samples per component: the last 10 iterations at 20 new samples each (half the 20-iteration schedule).
        gmm_cfg=dict(memory_size=200)))
