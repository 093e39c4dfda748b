"""Leaderboard evaluation: Cityscapes metric, leaderboard, benchmark."""
from .metrics import (CityscapesLeaderboardMetric, category_iou,
                      cityscapes_label_tables, confusion_matrix)

__all__ = [
    'CityscapesLeaderboardMetric', 'category_iou', 'cityscapes_label_tables',
    'confusion_matrix'
]
