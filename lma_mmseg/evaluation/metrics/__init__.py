from .cityscapes_leaderboard_metric import (CityscapesLeaderboardMetric,
                                            category_iou,
                                            cityscapes_label_tables,
                                            confusion_matrix)

__all__ = [
    'CityscapesLeaderboardMetric', 'category_iou', 'cityscapes_label_tables',
    'confusion_matrix'
]
