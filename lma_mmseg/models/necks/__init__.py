from .gated_down_fusion import GatedDownFusion
from .gated_fusion import GatedFusion
from .local_memory_neck import LocalMemoryNeck

__all__ = ['GatedDownFusion', 'GatedFusion', 'LocalMemoryNeck']
