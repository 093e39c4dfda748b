"""Leaderboard evaluation: Cityscapes metric, atomic result files."""
from .fileio import (atomic_open, atomic_write_bytes, atomic_write_json,
                     atomic_write_png, atomic_write_text, atomic_write_zip)
from .metrics import (CityscapesLeaderboardMetric, category_iou,
                      cityscapes_label_tables, confusion_matrix)

__all__ = [
    'atomic_open', 'atomic_write_bytes', 'atomic_write_json',
    'atomic_write_png', 'atomic_write_text', 'atomic_write_zip',
    'CityscapesLeaderboardMetric', 'category_iou', 'cityscapes_label_tables',
    'confusion_matrix'
]
