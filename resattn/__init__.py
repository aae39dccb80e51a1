"""resattn: Residual Attention Networks (Wang et al., CVPR 2017) in plain PyTorch, registered with timm.

Importing the package registers every variant with timm (``timm.create_model("resattn56")``).
"""

from resattn import models  # noqa: F401  (registers the variants with timm)
from resattn.attention import AttentionModule
from resattn.mask import MaskActivation, SoftMaskBranch
from resattn.net import ResidualAttentionNet
from resattn.variants import VARIANTS, StageSpec, VariantSpec, get_variant, list_variants

__all__ = [
    "VARIANTS",
    "AttentionModule",
    "MaskActivation",
    "ResidualAttentionNet",
    "SoftMaskBranch",
    "StageSpec",
    "VariantSpec",
    "get_variant",
    "list_variants",
]
