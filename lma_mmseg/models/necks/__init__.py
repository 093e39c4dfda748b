from .gated_down_fusion import GatedDownFusion
from .gated_fusion import GatedFusion
from .local_memory_neck import FrameMemory, LocalMemoryNeck

__all__ = ['FrameMemory', 'GatedDownFusion', 'GatedFusion', 'LocalMemoryNeck']
