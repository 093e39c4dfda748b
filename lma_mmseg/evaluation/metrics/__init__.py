from .cityscapes_leaderboard_metric import (CityscapesLeaderboardMetric,
                                            category_iou,
                                            cityscapes_label_tables,
                                            confusion_matrix)
from .temporal_consistency_metric import TemporalConsistencyMetric
from .video_consistency_metric import VideoConsistencyMetric

__all__ = [
    'CityscapesLeaderboardMetric', 'category_iou', 'cityscapes_label_tables',
    'confusion_matrix', 'TemporalConsistencyMetric', 'VideoConsistencyMetric'
]
