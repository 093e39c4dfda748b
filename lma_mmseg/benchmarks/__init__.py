"""Benchmarks: one problem description, one timer, one report.

* :mod:`.problem`: what is measured, as dataclasses (:class:`OpProblem`,
  :class:`OpBenchmarkSettings`, :class:`ModelProblem`,
  :class:`TimerSettings`);
* :mod:`.timer`: interleaved timing, warm-up, CUDA synchronisation, medians
  and the peak memory of a call;
* :mod:`.report`: text tables and JSON files;
* :mod:`.peers`: the op written with other PyTorch tools (plain PyTorch,
  ``scaled_dot_product_attention``, FlexAttention);
* :mod:`.op_benchmark`: the op and its peers, side by side;
* :mod:`.model_benchmark`: a segmentor frame by frame (single-frame,
  streaming, re-encoding), against a baseline.

The temporal benchmark suite (:mod:`.temporal_suite`) and the GPU check
(:mod:`.gpu_check`) live here too.
"""
from .model_benchmark import (BENCH_KIND, PRIMARY_KEYS, describe_model,
                              load_config, run_model_benchmark)
from .op_benchmark import run_op_benchmark
from .problem import (DTYPES, MODEL_MODES, OP_METHODS, OP_SHAPES, ModelProblem,
                      OpBenchmarkSettings, OpProblem, TimerSettings)
from .report import (baseline_report, model_report, op_table, peer_table,
                     write_json)
from .timer import MemoryProbe, Timer, paired_ratio, summarize

__all__ = [
    'BENCH_KIND', 'PRIMARY_KEYS', 'describe_model', 'load_config',
    'run_model_benchmark', 'run_op_benchmark', 'DTYPES', 'MODEL_MODES',
    'OP_METHODS', 'OP_SHAPES', 'ModelProblem', 'OpBenchmarkSettings',
    'OpProblem', 'TimerSettings', 'baseline_report', 'model_report',
    'op_table', 'peer_table', 'write_json', 'MemoryProbe', 'Timer',
    'paired_ratio', 'summarize'
]
