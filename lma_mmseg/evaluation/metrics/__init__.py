from .cityscapes_leaderboard_metric import (CityscapesLeaderboardMetric,
                                            category_iou,
                                            cityscapes_label_tables,
                                            confusion_matrix)
from .full_res_iou_metric import FullResIoUMetric

__all__ = [
    'CityscapesLeaderboardMetric', 'category_iou', 'cityscapes_label_tables',
    'confusion_matrix', 'FullResIoUMetric'
]
