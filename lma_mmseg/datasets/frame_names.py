# Copyright (c) lma_mmseg contributors. All rights reserved.
"""Frame numbers in video frame file names."""
import os.path as osp
import re
from typing import Optional, Tuple


class FramePattern:
    """A regular expression with a named group ``frame`` that finds the
    frame number in a file stem, e.g. ``r'^.+_(?P<frame>\\d+)$'`` for
    ``aachen_000000_000019``.

    The text before and after the group names the video (snippet): frames of
    one video differ only in the group.

    Args:
        pattern (str): The regular expression.
        owner (str): Who uses it, named in error messages (e.g. the class).
    """

    def __init__(self, pattern: str, owner: str) -> None:
        self.owner = owner
        self.regex = re.compile(pattern)
        if 'frame' not in self.regex.groupindex:
            raise ValueError(f'{owner}: frame_pattern {pattern!r} has no '
                             "named group 'frame'")

    @property
    def pattern(self) -> str:
        """str: The regular expression's text."""
        return self.regex.pattern

    def try_split(self, stem: str) -> Optional[Tuple[str, str, str]]:
        """``(before, frame digits, after)`` of a file stem, None when the
        stem does not match."""
        match = self.regex.match(stem)
        if match is None:
            return None
        start, end = match.span('frame')
        return stem[:start], stem[start:end], stem[end:]

    def split(self, stem: str, path: Optional[str] = None
              ) -> Tuple[str, str, str]:
        """``(before, frame digits, after)`` of a file stem.

        Raises:
            ValueError: The stem does not match; the message names ``path``
                (or the stem) and the pattern.
        """
        parts = self.try_split(stem)
        if parts is None:
            raise ValueError(
                f'{self.owner}: the file name of {path or stem!r} does not '
                f'match frame_pattern {self.pattern!r}')
        return parts

    def video_and_frame(self, path: str) -> Tuple[str, int]:
        """The video of a frame file, as ``folder/before*after`` (the glob
        of its frames), and its frame number."""
        folder, name = osp.split(path)
        before, digits, after = self.split(osp.splitext(name)[0], path)
        return osp.join(folder, f'{before}*{after}'), int(digits)
