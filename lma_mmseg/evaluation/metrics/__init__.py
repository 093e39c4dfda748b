from .cityscapes_leaderboard_metric import (CityscapesLeaderboardMetric,
                                            category_iou,
                                            cityscapes_label_tables,
                                            confusion_matrix)
from .full_res_iou_metric import FullResIoUMetric
from .temporal_consistency_metric import TemporalConsistencyMetric
from .video_consistency_metric import VideoConsistencyMetric

__all__ = [
    'CityscapesLeaderboardMetric', 'category_iou', 'cityscapes_label_tables',
    'confusion_matrix', 'FullResIoUMetric', 'TemporalConsistencyMetric',
    'VideoConsistencyMetric'
]
