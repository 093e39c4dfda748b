"""Shared helpers of the test suite (importable: ``tests/`` is on
``sys.path`` through ``pythonpath`` in setup.cfg)."""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TESTS = osp.join(ROOT, 'tests')
