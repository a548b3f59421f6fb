# GMMSeg twin of ocrnet_paper-cocostuff10k_softmax.py: the same network, data, schedule and seed; only the decode
# head's softmax classifier becomes GMMSeg's generative classifier (gmmseg_lab.models.gmm_head).
# Every GMM setting is the release's, i.e. the default of GMMHeadMixin / GMMClassifier, the memory's
# 32000 samples per component included (the method and its settings: docs/method.md).
_base_ = ['./ocrnet_paper-cocostuff10k_softmax.py']
# A list is replaced whole through `_base_`: the FCN stage (soft object regions) is the softmax
# twin's `fcn_head`, unchanged; the OCR stage, its `ocr_head`, gets the GMM.
model = dict(decode_head=[
    {{_base_.fcn_head}},
    dict(type='GMMSegHead', head={{_base_.ocr_head}})])
