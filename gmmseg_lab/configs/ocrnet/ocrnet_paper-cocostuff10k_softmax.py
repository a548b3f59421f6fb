# OCRNet, HRNetV2-W48 (branch widths (48, 96, 192, 384)) on COCO-Stuff-10K 512x512: the softmax twin.
# The GMM twin (ocrnet_paper-cocostuff10k_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/ocrnet_hr.py',
    '../_base_/datasets/coco-stuff10k_512x512.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/sgd_80k.py',
]
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
# The base's two stages (a list: written out from its fcn_head / ocr_head) at W48's widths; the OCR
# stage keeps the base's 512 / 256 channels.
fcn_head = dict(_base_.fcn_head, in_channels=[48, 96, 192, 384], channels=sum([48, 96, 192, 384]),
                num_classes=171, norm_cfg=norm_cfg)
ocr_head = dict(_base_.ocr_head, in_channels=[48, 96, 192, 384], num_classes=171, norm_cfg=norm_cfg)
model = dict(
    data_preprocessor=data_preprocessor,
    # HRNetV2-W48: the base's W18 stages (modules, blocks) at 48-384 channels.
    backbone=dict(
        norm_cfg=norm_cfg,
        extra=dict(
            stage2=dict(num_channels=(48, 96)),
            stage3=dict(num_channels=(48, 96, 192)),
            stage4=dict(num_channels=(48, 96, 192, 384)))),
    decode_head=[fcn_head, ocr_head],
    test_cfg=dict(mode='slide', crop_size=(768, 768), stride=(512, 512)))
