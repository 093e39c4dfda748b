"""The one timer of the benchmarks: interleaved runs, warm-up, CUDA
synchronisation, medians, and the peak memory of one call.

:class:`Timer` runs several functions in rounds: in every round each
function is called once, the order reversing on every other round, so that
slow drifts of a shared machine (thermal state, other jobs) affect all of
them alike. The first ``warmup`` rounds of a function are not timed. On
CUDA the device is synchronised before and after every timed call. Each
call records its wall time and the CPU time of the process (on a machine
shared with other jobs the CPU time is the steadier figure; with one
thread it is what the call costs). :func:`paired_ratio` is the median of
the per-round ratios of two functions timed side by side.

Peak memory (:meth:`Timer.peak_memory`) is measured in a separate pass
after the timing (so that it does not disturb it), one function after the
other: on CUDA, ``torch.cuda.max_memory_allocated`` during a call (reset
before it); on CPU, the peak resident set size (``VmHWM``) of the process
during a call, reset before it by writing ``5`` to ``/proc/self/clear_refs``
(Linux), after glibc's ``malloc_trim(0)`` has handed freed heap memory back
to the system, so that the increase over the resident size just before the
call is the memory the call needed. The absolute CPU figure is process-wide
(interpreter, libraries, every loaded model). Where ``clear_refs`` is
unavailable, ``getrusage`` peak RSS is used (not resettable, so no increase
is measured).
"""
import ctypes
import ctypes.util
import dataclasses
import gc
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .problem import TimerSettings

__all__ = [
    'MemoryProbe', 'Timing', 'Timer', 'paired_ratio', 'summarize', 'sync'
]

#: A timed function: called with the index of the round (0, 1, ...; all
#: functions get the same index in a round, a frame runner the frame of
#: that index).
Timed = Callable[[int], object]


def sync(device) -> None:
    """Wait for the kernels queued on a CUDA ``device`` (no-op on CPU)."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc only)."""
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _read_status(field: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status in bytes, or None."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory of one call (see the module docstring).

    Args:
        device (torch.device | str): The device the calls run on.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        self.clear_refs = False
        if not self.cuda:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')
                self.clear_refs = _read_status('VmHWM') is not None
            except OSError:
                self.clear_refs = False

    @property
    def description(self) -> str:
        """str: How the peak is measured on this device."""
        if self.cuda:
            return ('torch.cuda.max_memory_allocated during a call (reset '
                    'before it), maximum over a separate pass of a few '
                    'calls; increase over memory_allocated before it')
        if self.clear_refs:
            return ('CPU: peak resident set size of the process during a '
                    'call (VmHWM, reset before it via /proc/self/clear_refs '
                    'after malloc_trim), maximum over a separate pass of '
                    'a few calls; absolute figure process-wide, increase '
                    'over the RSS before the call')
        return ('CPU: peak resident set size of the process so far '
                '(getrusage ru_maxrss, not resettable); process-wide')

    def before(self) -> int:
        """Reset the peak counter; return the current usage in bytes."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        if self.clear_refs:
            # young objects only: a full collection of a process with
            # mmseg loaded takes about 0.3 s, and what survived it is not
            # freed during the call either (the increase is unaffected)
            gc.collect(1)
            _malloc_trim()
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            return _read_status('VmRSS') or 0
        return 0

    def after(self) -> int:
        """Peak usage in bytes since :meth:`before`."""
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        if self.clear_refs:
            return _read_status('VmHWM') or 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == 'darwin' else peak * 1024


@dataclasses.dataclass
class Timing:
    """The timed runs of one function.

    Attributes:
        times_s (list[float]): Wall time of each timed run (s).
        cpu_times_s (list[float]): CPU time of the process in each run (s).
        rounds (list[int]): The round of each timed run (to pair runs of
            two functions timed side by side).
    """
    times_s: List[float] = dataclasses.field(default_factory=list)
    cpu_times_s: List[float] = dataclasses.field(default_factory=list)
    rounds: List[int] = dataclasses.field(default_factory=list)

    @property
    def median_s(self) -> float:
        """float: Median wall time (s)."""
        return statistics.median(self.times_s)

    @property
    def cpu_median_s(self) -> float:
        """float: Median CPU time (s)."""
        return statistics.median(self.cpu_times_s)

    def as_dict(self) -> dict:
        """``median_s``, ``cpu_median_s``, ``times_s``."""
        return dict(
            median_s=self.median_s,
            cpu_median_s=self.cpu_median_s,
            times_s=list(self.times_s))


class Timer:
    """Times functions side by side (see the module docstring).

    Args:
        device (torch.device | str): Where the functions run (CUDA is
            synchronised around every timed call).
        settings (TimerSettings): Repeats, warm-up and progress bar.
    """

    def __init__(self, device, settings: TimerSettings = TimerSettings()):
        if not isinstance(settings, TimerSettings):
            raise TypeError(f'Timer: `settings` must be a TimerSettings, got '
                            f'{type(settings).__name__}')
        self.device = torch.device(device)
        self.settings = settings

    def run(self,
            fns: Mapping[str, Timed],
            schedule: Optional[Mapping[str, Tuple[int, int]]] = None
            ) -> Dict[str, Timing]:
        """Time ``fns`` interleaved, round by round.

        Args:
            fns (Mapping[str, callable]): Name -> function of the run index.
            schedule (Mapping[str, tuple[int, int]], optional): Name ->
                ``(warmup, repeats)`` for the functions that do not follow
                the settings (e.g. a slow one timed fewer times). The timed
                rounds of all functions start in the same round (a function
                with a shorter warm-up joins later) and a function leaves
                the rounds after its own runs.

        Returns:
            dict[str, Timing]: The timed runs of each function.
        """
        if not fns:
            raise ValueError('Timer.run: `fns` is empty')
        default = (self.settings.warmup, self.settings.repeats)
        plan = {name: tuple((schedule or {}).get(name, default))
                for name in fns}
        for name, (warmup, repeats) in plan.items():
            if warmup < 0 or repeats < 1:
                raise ValueError(f'Timer.run: `schedule[{name!r}]` must be '
                                 f'(warmup >= 0, repeats >= 1), got '
                                 f'{(warmup, repeats)}')
        names = list(fns)
        # the timed rounds of all functions start together, after the
        # longest warm-up; a function with a shorter one starts later
        first = max(w for w, _ in plan.values())
        rounds = first + max(r for _, r in plan.values())
        out = {name: Timing() for name in names}
        bar = None
        if self.settings.progress:
            from mmengine.utils import ProgressBar
            bar = ProgressBar(sum(w + r for w, r in plan.values()))
        for i in range(rounds):
            for name in (names if i % 2 == 0 else names[::-1]):
                warmup, repeats = plan[name]
                if not first - warmup <= i < first + repeats:
                    continue
                sync(self.device)
                t0, c0 = time.perf_counter(), time.process_time()
                fns[name](i)
                sync(self.device)
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - c0
                if i >= first:
                    out[name].times_s.append(elapsed)
                    out[name].cpu_times_s.append(cpu)
                    out[name].rounds.append(i)
                if bar is not None:
                    bar.update()
        if bar is not None:
            sys.stdout.write('\n')
        return out

    def peak_memory(self, fns: Mapping[str, Timed],
                    calls: int = 1) -> Dict[str, dict]:
        """Peak memory of each function, alone, over ``calls`` calls.

        Returns:
            dict: Per function ``peak_bytes`` and ``increase_bytes``
            (maxima over the calls).
        """
        probe = MemoryProbe(self.device)
        out = {}
        for name, fn in fns.items():
            peak = increase = 0
            for i in range(max(int(calls), 1)):
                sync(self.device)
                base = probe.before()
                fn(i)
                sync(self.device)
                now = probe.after()
                peak = max(peak, now)
                increase = max(increase, now - base)
            out[name] = dict(peak_bytes=peak, increase_bytes=increase)
        return out

    @property
    def memory_description(self) -> str:
        """str: How :meth:`peak_memory` measures on this device."""
        return MemoryProbe(self.device).description


def paired_ratio(a: Timing, b: Timing) -> Optional[float]:
    """Median over the rounds in which both ran of ``time(a) / time(b)``
    (None when no round has both)."""
    b_by_round = dict(zip(b.rounds, b.times_s))
    ratios = [t / b_by_round[r] for r, t in zip(a.rounds, a.times_s)
              if r in b_by_round and b_by_round[r] > 0]
    return statistics.median(ratios) if ratios else None


def summarize(times_ms: Sequence[float]) -> dict:
    """Median, p90, mean, min of per-frame times (ms) and FPS.

    ``fps`` is the throughput ``1000 / mean``; ``fps_median`` is
    ``1000 / median``.
    """
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError('no timed frame')
    median = float(np.median(t))
    mean = float(t.mean())
    return dict(
        frames=int(t.size),
        median_ms=round(median, 3),
        p90_ms=round(float(np.percentile(t, 90)), 3),
        mean_ms=round(mean, 3),
        min_ms=round(float(t.min()), 3),
        fps=round(1000.0 / mean, 2),
        fps_median=round(1000.0 / median, 2))
