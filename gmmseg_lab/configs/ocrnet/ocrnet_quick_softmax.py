# OCRNet, a tiny HRNet (branch widths (8, 16, 32, 64)) on the embedded scenes at 64 px (quick): the softmax twin.
# The GMM twin (ocrnet_quick_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/ocrnet_hr.py',
    '../_base_/datasets/gmmlab_quick.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/quick.py',
]
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
# The base's two stages (a list: written out from its fcn_head / ocr_head) at these widths.
fcn_head = dict(_base_.fcn_head, in_channels=[8, 16, 32, 64], channels=sum([8, 16, 32, 64]), num_classes=9)
ocr_head = dict(_base_.ocr_head, in_channels=[8, 16, 32, 64], channels=64, ocr_channels=32, num_classes=9)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                        num_blocks=(1,), num_channels=(16,)),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(1, 1), num_channels=(8, 16)),
            stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                        num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
            stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                        num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 32, 64)),
        )),
    decode_head=[fcn_head, ocr_head])
