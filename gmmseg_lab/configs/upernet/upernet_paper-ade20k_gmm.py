# GMMSeg twin of upernet_paper-ade20k_softmax.py: the same network, data, schedule and seed; only the decode
# head's softmax classifier becomes GMMSeg's generative classifier (gmmseg_lab.models.gmm_head).
# Every GMM setting is the release's, i.e. the default of GMMHeadMixin / GMMClassifier, the memory's
# 32000 samples per component included (the method and its settings: docs/method.md).
_base_ = ['./upernet_paper-ade20k_softmax.py']
model = dict(
    decode_head=dict(
        _delete_=True,
        type='GMMSegHead',
        head={{_base_.model.decode_head}}))
