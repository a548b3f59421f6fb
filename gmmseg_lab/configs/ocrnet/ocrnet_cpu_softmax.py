# OCRNet, a small HRNet (branch widths (16, 32, 64, 128)) on the embedded scenes at 128 px (cpu): the softmax twin.
# The GMM twin (ocrnet_cpu_gmm.py) differs only in the decode head's classifier.
_base_ = [
    '../_base_/models/ocrnet_hr.py',
    '../_base_/datasets/gmmlab_cpu.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/cpu.py',
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
# The base's two stages (a list: written out from its fcn_head / ocr_head) at these widths.
fcn_head = dict(_base_.fcn_head, in_channels=[16, 32, 64, 128], channels=sum([16, 32, 64, 128]), num_classes=9)
ocr_head = dict(_base_.ocr_head, in_channels=[16, 32, 64, 128], channels=128, ocr_channels=64, num_classes=9)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                        num_blocks=(2,), num_channels=(32,)),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(2, 2), num_channels=(16, 32)),
            stage3=dict(num_modules=1, num_branches=3, block='BASIC',
                        num_blocks=(2, 2, 2), num_channels=(16, 32, 64)),
            stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                        num_blocks=(2, 2, 2, 2), num_channels=(16, 32, 64, 128)),
        )),
    decode_head=[fcn_head, ocr_head])
