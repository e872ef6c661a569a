"""Import every built-in search-space family so that its ``@register_space`` decorator runs.

:func:`mednas.spaces._registry._ensure_builtins` imports this module on first use of the registry, which
keeps ``import mednas`` light; the families themselves import neither torch nor MONAI.
"""

from __future__ import annotations

from mednas.spaces._densenet import DenseNetSpace
from mednas.spaces._dynunet import DynUNetSpace
from mednas.spaces._efficientnet import EfficientNetSpace
from mednas.spaces._resnet import ResNetSpace
from mednas.spaces._segresnet import SegResNetSpace
from mednas.spaces._unet import UNetSpace

__all__ = ["DenseNetSpace", "DynUNetSpace", "EfficientNetSpace", "ResNetSpace", "SegResNetSpace", "UNetSpace"]
