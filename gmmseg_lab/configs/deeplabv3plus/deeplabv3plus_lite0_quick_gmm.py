# GMMSeg twin of deeplabv3plus_lite0_quick_softmax.py: the same network, data, schedule and seed; only the decode
# head's softmax classifier becomes GMMSeg's generative classifier (gmmseg_lab.models.gmm_head).
# Every GMM setting but the memory size is the release's, i.e. the default of GMMHeadMixin /
# GMMClassifier (the method and its settings: docs/method.md; configs/README.md lists them).
_base_ = ['./deeplabv3plus_lite0_quick_softmax.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='GMMSegHead',
        head={{_base_.model.decode_head}},
        # 200 samples per component: the last 10 iterations at 20 new samples each (half the 20-iteration
        # schedule; the release's 32000 hold 1600 of its 80k iterations).
        gmm_cfg=dict(memory_size=200)))
