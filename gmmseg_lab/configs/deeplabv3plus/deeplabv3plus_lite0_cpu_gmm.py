# GMMSeg twin of deeplabv3plus_lite0_cpu_softmax.py: the same network, data, schedule and seed; only the decode
# head's softmax classifier becomes GMMSeg's generative classifier (gmmseg_lab.models.gmm_head).
# Every GMM setting but the memory size is the release's, i.e. the default of GMMHeadMixin /
# GMMClassifier (the method and its settings: docs/method.md; configs/README.md lists them).
_base_ = ['./deeplabv3plus_lite0_cpu_softmax.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='GMMSegHead',
        head={{_base_.model.decode_head}},
        # 1000 samples per component: the last 50 iterations at 20 new samples each, 10 % of the 500-iteration
        # schedule and a third of the demo preset's 150 (the release's 32000 hold 1600 of its 80k iterations,
        # 2 %): a memory of mostly the current network's embeddings, with enough samples per component for
        # 64 variances.
        gmm_cfg=dict(memory_size=1000)))
