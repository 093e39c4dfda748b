#!/usr/bin/env bash
# The GPU check of lma_mmseg: everything that needs a CUDA device, in one call
# that stays within 9 minutes on a machine with one H200 (Python 3.12, torch
# 2.11+cu130, nvcc 13.0, 16 cores, no network).
#
#   bash tools/gpu_check.sh [OUTDIR]            on the GPU machine
#   bash tools/gpu_check.sh --dry-run [OUTDIR]  every step that needs no GPU,
#                                               on a CPU machine
#   bash tools/gpu_check.sh --fetch-wheels      download .whl/ (make gpu-wheels)
#
# Steps on the GPU machine (each with its own time limit; a step that fails is
# logged and the next one runs):
#   wheels          install the wheels carried in .whl/ into $GPU_CHECK_SITE
#   build_mmcv      build mmcv's CPU ops from the carried sdist, CUDA hidden
#   build_ext       build lma_mmseg._ext in place with the CUDA kernels (sm_90)
#   make_data       synthetic Cityscapes-layout video data at 512x1024
#   import_check    versions, the GPU, the extension's CUDA build
#   pytest_cuda     pytest -m cuda tests
#   sanitizer_*     compute-sanitizer memcheck, racecheck and synccheck on
#                   small cases of the CUDA op tests
#   train_amp       20 iterations of tools/train.py --amp, LMA-ERFNet 512x1024
#   benchmark_op_*  tools/analysis/benchmark_op.py --device cuda (ERFNet and
#                   PSPNet shapes) per dtype
#   bench_*         tools/benchmark.py: LMA-ERFNet streaming against ERFNet,
#                   interleaved, at 512x1024 and 1024x2048, fp32 and fp16,
#                   eager and --compile
# The builds run side by side, the correctness steps (tests, sanitizer,
# training) run side by side, the timings run alone and last.
#
# --dry-run checks the wheels and the mmcv sdist without installing them,
# compiles the CUDA sources for sm_90 with nvcc (compile only), collects the
# CUDA tests and the sanitizer's selection, and runs the training, benchmark
# and op benchmark commands on the CPU at tiny sizes (the float16/bfloat16
# ones with --help appended: argparse checks their options, the CPU kernels
# are float32/float64), so that every argument list is exercised.
#
# OUTDIR (default: $OUT when set, else work_dirs/gpu_check) receives
#   gpu_check.log      each step's command and output, in order
#   summary.json       mode, each step's status (ok, failed, timeout,
#                      skipped), seconds, command and a one-line note, and
#                      the figures read off the benchmarks
#   benchmark_op.json  the op benchmark results, one entry per dtype
#   benchmark.json     the tools/benchmark.py results, one entry per run
# Exit status: 0 when no step failed or timed out.
#
# Environment: PYTHON (default .venv/bin/python when present, else python3);
# GPU_CHECK_BUDGET (seconds for the whole run, default 540); GPU_CHECK_ONLY
# (an extended regex: run only the steps whose name matches it);
# GPU_CHECK_SITE (where the wheels go, default /tmp/gpu_check_site);
# MMCV_VERSION, MMENGINE_VERSION, MMSEG_VERSION (the Makefile passes its own).
set -u -o pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
CALLER_PWD=$PWD
cd "$ROOT" || exit 2

MMCV_VERSION=${MMCV_VERSION:-2.1.0}
MMENGINE_VERSION=${MMENGINE_VERSION:-0.10.7}
MMSEG_VERSION=${MMSEG_VERSION:-1.2.2}
WHL_DIR=.whl
# What the GPU machine's Python 3.12 lacks: mmengine, mmsegmentation and
# their pure-Python requirements, this package's own (ftfy, prettytable,
# cityscapesscripts with its requirements), and setuptools < 81, whose
# pkg_resources mmcv's setup.py imports. Pinned to the versions of the
# project's environment; `make gpu-wheels` downloads them.
GPU_WHEELS=(
  "mmengine==$MMENGINE_VERSION" "mmsegmentation==$MMSEG_VERSION"
  addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9
  prettytable==3.18.0 wcwidth==0.9.4 ftfy==6.3.1
  cityscapesScripts==2.3.0 appdirs==1.4.4 pyquaternion==0.9.9
  coloredlogs==15.0.1 humanfriendly==10.0
  setuptools==80.9.0
)
# Built on the GPU machine (its ops must match that machine's torch).
GPU_SDISTS=("mmcv==$MMCV_VERSION")
# manylinux tags of a recent x86-64 Linux (pip matches each tag exactly).
PIP_PLATFORMS=()
for n in 39 35 34 31 28 27 24 17; do
  PIP_PLATFORMS+=(--platform "manylinux_2_${n}_x86_64")
done
PIP_PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PIP_TARGET_ARGS=(--python-version 3.12 --implementation cp "${PIP_PLATFORMS[@]}")

LMA_CONFIG=configs/lma/lma-erfnet_4xb4-160k_cityscapes-seq-512x1024.py
ERFNET_CONFIG=configs/erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py
CUDA_TESTS=tests/ops/test_local_attention_cuda.py
# Small cases of the CUDA op tests for compute-sanitizer (slow): two float32
# shapes of every op, the half types, the log-sum-exp.
SANITIZER_SELECTION='B2T2C4Cv6_5x7_w3d1 or B1T3C5Cv70_6x19_w5d2 or half_types or log_sum_exp'

usage() {
  sed -n '2,/^set -u/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'
}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
  elif [ -x .venv/bin/python ]; then
    PY=$ROOT/.venv/bin/python
  else
    PY=python3
  fi
  export PY
}

# ---------------------------------------------------------------------------
# the wheels: which are missing, are they consistent (Python, no network)
# ---------------------------------------------------------------------------
# wheels_py missing|check: `missing` prints the specs of GPU_WHEELS and
# GPU_SDISTS that have no file in .whl/; `check` checks every file there:
# one version per project, wheel tags that fit CPython 3.12 on x86-64 Linux,
# and every requirement (of the carried packages and of this package's
# setup.cfg) met by a carried file or by the GPU machine's own packages.
wheels_py() {
  GPU_WHEELS="${GPU_WHEELS[*]}" GPU_SDISTS="${GPU_SDISTS[*]}" \
    "$PY" - "$1" "$WHL_DIR" <<'PYEOF'
import configparser
import os
import os.path as osp
import re
import sys
import tarfile
import zipfile

try:
    from packaging.requirements import Requirement
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import (canonicalize_name, parse_sdist_filename,
                                 parse_wheel_filename)
    from packaging.version import Version
except ImportError:  # a bare virtual environment: pip's copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.tags import compatible_tags, cpython_tags
    from pip._vendor.packaging.utils import (canonicalize_name,
                                             parse_sdist_filename,
                                             parse_wheel_filename)
    from pip._vendor.packaging.version import Version

# Packages of the GPU machine's Python (torch 2.11 image) that the carried
# ones need. A requirement that is neither here nor carried is an error:
# check it against that machine's package list, then add it here or carry it.
PROVIDED = {
    'numpy', 'matplotlib', 'pyyaml', 'rich', 'packaging', 'scipy', 'pillow',
    'tqdm', 'requests', 'regex', 'opencv-python-headless', 'torch',
    'typing-extensions', 'zipp', 'psutil', 'ninja', 'setuptools', 'wheel',
    'pytest', 'pytest-timeout', 'pip'
}
# Requirements deliberately not carried.
EXCUSED = {
    'opencv-python': 'opencv-python-headless provides the same cv2 there',
    'typing': 'a backport of the standard library module; carried into '
    'the target folder it would shadow the real one',
}
ENV = dict(python_version='3.12', python_full_version='3.12.3',
           sys_platform='linux', platform_system='Linux',
           platform_machine='x86_64', os_name='posix',
           implementation_name='cpython',
           platform_python_implementation='CPython', extra='')
PLATFORMS = ([f'manylinux_2_{n}_x86_64' for n in range(39, 16, -1)] +
             ['manylinux2014_x86_64', 'manylinux2010_x86_64',
              'manylinux1_x86_64', 'linux_x86_64'])
TAGS = set(cpython_tags((3, 12), platforms=PLATFORMS)) | set(
    compatible_tags((3, 12), 'cp312', PLATFORMS))

mode, whl_dir = sys.argv[1], sys.argv[2]
expected = [('wheel', s) for s in os.environ['GPU_WHEELS'].split()] + [
    ('sdist', s) for s in os.environ['GPU_SDISTS'].split()]
files = sorted(os.listdir(whl_dir)) if osp.isdir(whl_dir) else []


def parse(fname):
    """(kind, canonical name, version) of a file of .whl/, or None."""
    if fname.endswith('.whl'):
        name, version, _, tags = parse_wheel_filename(fname)
        return 'wheel', canonicalize_name(name), version, tags
    if fname.endswith(('.tar.gz', '.zip')):
        name, version = parse_sdist_filename(fname)
        return 'sdist', canonicalize_name(name), version, None
    return None


carried = {}  # canonical name -> [(fname, kind, version, tags)]
errors = []
for fname in files:
    try:
        parsed = parse(fname)
    except Exception as e:  # noqa: BLE001  (a malformed name)
        errors.append(f'{whl_dir}/{fname}: not a wheel or sdist name ({e})')
        continue
    if parsed is not None:
        kind, name, version, tags = parsed
        carried.setdefault(name, []).append((fname, kind, version, tags))

missing = []
for kind, spec in expected:
    req = Requirement(spec)
    have = [f for f in carried.get(canonicalize_name(req.name), [])
            if f[1] == kind and f[2] in req.specifier]
    if not have:
        missing.append(f'{kind} {spec}')
if mode == 'missing':
    print('\n'.join(missing))
    sys.exit(0)

for item in missing:
    errors.append(f'{whl_dir}: no {item} (run `make gpu-wheels`)')
for name, entries in carried.items():
    if len(entries) > 1:
        errors.append(f'{whl_dir}: {len(entries)} files of {name} '
                      f'({", ".join(e[0] for e in entries)}); keep one, '
                      'two stop the whole install')


def read_requirements(fname, kind):
    path = osp.join(whl_dir, fname)
    if kind == 'wheel':
        with zipfile.ZipFile(path) as z:
            meta = [n for n in z.namelist()
                    if re.fullmatch(r'[^/]+\.dist-info/METADATA', n)]
            if len(meta) != 1:
                raise ValueError('no single top-level .dist-info/METADATA')
            text = z.read(meta[0]).decode('utf-8')
        return [line.split(':', 1)[1].strip() for line in text.splitlines()
                if line.startswith('Requires-Dist:')]
    with tarfile.open(path) as t:
        names = t.getnames()
        base = names[0].split('/')[0]
        if f'{base}/setup.py' not in names or f'{base}/PKG-INFO' not in names:
            raise ValueError('no setup.py and PKG-INFO at its top level')
        runtime = f'{base}/requirements/runtime.txt'
        if runtime in names:
            text = t.extractfile(runtime).read().decode('utf-8')
            return [line.strip() for line in text.splitlines()
                    if line.strip() and not line.startswith('#')]
        text = t.extractfile(f'{base}/PKG-INFO').read().decode('utf-8')
        return [line.split(':', 1)[1].strip() for line in text.splitlines()
                if line.startswith('Requires-Dist:')]


def check_requirement(owner, spec):
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate(ENV):
        return
    name = canonicalize_name(req.name)
    if name in carried:
        version = carried[name][0][2]
        if not req.specifier.contains(version, prereleases=True):
            errors.append(f'{owner} requires {spec}, {whl_dir} has '
                          f'{name} {version}')
    elif name not in PROVIDED and name not in EXCUSED:
        errors.append(f'{owner} requires {spec}: neither carried in '
                      f'{whl_dir} nor among the GPU machine\'s packages')


rows, total = [], 0
for name, entries in sorted(carried.items()):
    for fname, kind, version, tags in entries:
        size = osp.getsize(osp.join(whl_dir, fname))
        total += size
        rows.append((fname, size))
        if kind == 'wheel' and not (set(tags) & TAGS):
            errors.append(f'{whl_dir}/{fname}: no tag for CPython 3.12 on '
                          'x86-64 Linux')
        try:
            requirements = read_requirements(fname, kind)
        except Exception as e:  # noqa: BLE001  (a broken archive)
            errors.append(f'{whl_dir}/{fname}: unreadable ({e})')
            continue
        for spec in requirements:
            check_requirement(fname, spec)
cfg = configparser.ConfigParser()
cfg.read('setup.cfg')
for spec in cfg.get('options', 'install_requires', fallback='').split('\n'):
    if spec.strip():
        check_requirement('setup.cfg', spec.strip())

for fname, size in rows:
    print(f'{size / 1024:10.1f} KiB  {fname}')
print(f'{total / 2**20:10.2f} MiB  in {len(rows)} files')
for error in errors:
    print('error:', error)
print(f'note: {len(rows)} files, {total / 2**20:.1f} MiB'
      + (f', {len(errors)} problems' if errors else ', consistent'))
sys.exit(1 if errors else 0)
PYEOF
}

fetch_wheels() {
  pick_python
  mkdir -p "$WHL_DIR"
  local missing wheels=() sdists=() kind spec
  missing=$(wheels_py missing) || exit 1
  while read -r kind spec; do
    [ -z "$kind" ] && continue
    if [ "$kind" = wheel ]; then wheels+=("$spec"); else sdists+=("$spec"); fi
  done <<<"$missing"
  if [ ${#wheels[@]} -eq 0 ] && [ ${#sdists[@]} -eq 0 ]; then
    echo "gpu-wheels: every wheel and sdist is in $WHL_DIR already;" \
      "nothing to download"
  else
    echo "gpu-wheels: downloading ${wheels[*]} ${sdists[*]} into $WHL_DIR"
    if [ ${#wheels[@]} -gt 0 ] && ! "$PY" -m pip download -q --no-deps \
      --only-binary=:all: "${PIP_TARGET_ARGS[@]}" -d "$WHL_DIR" \
      "${wheels[@]}"; then
      echo "gpu-wheels: could not download ${wheels[*]}: is the package" \
        "index reachable? Offline, the files must be in $WHL_DIR already." >&2
      exit 1
    fi
    # pip reads an sdist's metadata by running its setup.py, and mmcv's
    # imports pkg_resources (gone from setuptools 81, which an isolated build
    # would pick): a throwaway environment with setuptools < 81 runs it.
    if [ ${#sdists[@]} -gt 0 ]; then
      local env_dir ok=0
      env_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu_wheels_env.XXXXXX")
      "$PY" -m venv "$env_dir" &&
        "$env_dir/bin/python" -m pip install -q "setuptools>=77,<81" wheel &&
        "$env_dir/bin/python" -m pip download -q --no-deps \
          --no-binary=:all: --no-build-isolation -d "$WHL_DIR" \
          "${sdists[@]}" && ok=1
      rm -rf "$env_dir"
      if [ $ok -eq 0 ]; then
        echo "gpu-wheels: could not download ${sdists[*]}: is the package" \
          "index reachable? Offline, the files must be in $WHL_DIR" \
          "already." >&2
        exit 1
      fi
    fi
  fi
  wheels_py check
}

# ---------------------------------------------------------------------------
# steps (run as `bash tools/gpu_check.sh --step NAME`, under a time limit)
# ---------------------------------------------------------------------------
step_wheels() {
  wheels_py check || return 1
  if [ "$MODE" = dry ]; then
    # pip's own view: every file installs for CPython 3.12 on x86-64 Linux
    local target
    target=$(mktemp -d "$WORK/pipdry.XXXX")
    "$PY" -m pip install --dry-run --no-index --no-deps --only-binary=:all: \
      "${PIP_TARGET_ARGS[@]}" --target "$target" "$WHL_DIR"/*.whl || return 1
    echo "note: consistent; pip would install every wheel for CPython 3.12"
  else
    mkdir -p "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "$WHL_DIR"/*.whl || return 1
    echo "note: $(ls "$WHL_DIR"/*.whl | wc -l) wheels installed into $SITE"
  fi
}

step_build_mmcv() {
  local sdist=$WHL_DIR/mmcv-$MMCV_VERSION.tar.gz
  if [ ! -f "$sdist" ]; then
    echo "no $sdist (run make gpu-wheels)"
    return 1
  fi
  tar -tzf "$sdist" | grep -x "mmcv-$MMCV_VERSION/setup.py" >/dev/null || {
    echo "$sdist has no mmcv-$MMCV_VERSION/setup.py"
    return 1
  }
  if [ "$MODE" = dry ]; then
    echo "note: $sdist present; its ops are built on the GPU machine"
    return 0
  fi
  # CPU ops only: with CUDA hidden mmcv's setup.py builds no CUDA kernels
  # (this package's models need none of mmcv's; mmseg needs mmcv.ops).
  # -g0: no debug information, a third less compile time.
  CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$MMCV_JOBS \
    CFLAGS="${CFLAGS:-} -g0" "$PY" -m pip install --no-index --no-deps --no-build-isolation \
    --no-cache-dir --upgrade --target "$SITE" "$sdist" || return 1
  CUDA_VISIBLE_DEVICES= "$PY" -c "import mmcv, mmcv.ops
print('note: mmcv', mmcv.__version__, 'with ops, CPU build')"
}

# Registers, spills and stack of every kernel, from nvcc -Xptxas -v output.
ptxas_summary() {
  "$PY" - "$1" <<'PYEOF'
import re
import sys

text = open(sys.argv[1], errors='replace').read()
kernels = len(re.findall(r"Compiling entry function '([^']+)' for 'sm_90'",
                         text))
regs = [int(x) for x in re.findall(r'Used (\d+) registers', text)]
spills = sum(int(x) for x in re.findall(r'(\d+) bytes spill stores', text))
stack = [int(x) for x in re.findall(r'(\d+) bytes stack frame', text)]
if not kernels:
    print('note: no sm_90 kernel in the compiler report')
    sys.exit(1)
print(f'note: {kernels} sm_90 kernels, at most {max(regs)} registers, '
      f'{max(stack)} bytes stack, {spills} bytes spilled')
PYEOF
}

# Compile-only check of the CUDA build on a machine without a GPU: every .cu
# source of setup.py's extension with nvcc for sm_90 and the same flags, and
# the C++ sources that call the CUDA entry points in a CUDA build (under
# #ifdef WITH_CUDA), syntax only.
step_cuda_compile_check() {
  local shim=$WORK/cuda_shim report=$WORK/ptxas.txt
  # A CPU build of torch ships the ATen/c10 CUDA headers but not the cuBLAS,
  # cuSPARSE and cuSOLVER headers that ATen/cuda/CUDAContext.h includes for
  # its handle getters; the kernels only take the current stream from it.
  mkdir -p "$shim/ATen/cuda"
  cat >"$shim/ATen/cuda/CUDAContext.h" <<'EOF'
#pragma once
#include <ATen/Context.h>
#include <c10/cuda/CUDAStream.h>
EOF
  FORCE_CUDA=1 SHIM=$shim OBJ_DIR=$WORK REPORT=$report "$PY" - <<'PYEOF'
import os
import re
import subprocess
import sys
import sysconfig

import torch.utils.cpp_extension as cpp_extension

import setup

# A CPU build of torch cannot make a CUDAExtension (no CUDA_HOME): record
# what setup.py asks for instead.
cpp_extension.CUDAExtension = lambda name, sources, **kw: dict(
    name=name, sources=sources, **kw)
ext = setup.make_extension()
torch_inc = cpp_extension.include_paths()
includes = [f'-I{d}' for d in [os.environ['SHIM']] + ext['include_dirs']]
for d in torch_inc + [sysconfig.get_paths()['include']]:
    includes += ['-isystem', d]
defines = [f'-D{k}' if v is None else f'-D{k}={v}'
           for k, v in ext['define_macros']]
defines += ['-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE',
            '-DTORCH_API_INCLUDE_EXTENSION_H', '-DTORCH_EXTENSION_NAME=_ext']
flags = ext['extra_compile_args']
failed = 0
with open(os.environ['REPORT'], 'w') as report:
    for src in ext['sources']:
        if src.endswith('.cu'):
            obj = os.path.join(os.environ['OBJ_DIR'],
                               os.path.basename(src) + '.o')
            cmd = (['nvcc', '-c', src, '-o', obj,
                    '-gencode=arch=compute_90,code=sm_90', '-Xptxas=-v',
                    '--compiler-options', '-fPIC'] +
                   cpp_extension.COMMON_NVCC_FLAGS + flags['nvcc'] +
                   includes + defines)
        elif re.search(r'#ifdef WITH_CUDA\b[^#]*\w+_cuda\(',
                       open(src).read()):
            cmd = (['c++', '-fsyntax-only', src] + flags['cxx'] + includes +
                   defines)
        else:
            continue
        print('$', ' '.join(cmd), flush=True)
        res = subprocess.run(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        report.write(res.stdout)
        # the compiler's errors, not its per-kernel resource lines
        print('\n'.join(line for line in res.stdout.splitlines()
                        if 'ptxas info' not in line and
                        'bytes stack frame' not in line), flush=True)
        if res.returncode:
            print(f'FAILED ({res.returncode}): {src}', flush=True)
            failed += 1
sys.exit(1 if failed else 0)
PYEOF
  local rc=$?
  grep -E "Compiling entry|Used [0-9]+ registers|spill stores" "$report" |
    sed 's/^ptxas info *: //'
  [ $rc -eq 0 ] || return 1
  ptxas_summary "$report"
}

step_build_ext() {
  if [ "$MODE" = dry ]; then
    step_cuda_compile_check
    return
  fi
  local out=$WORK/build_ext.txt
  # NVCC_APPEND_FLAGS: nvcc's own variable; the resource report of every
  # kernel lands in the build log.
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$EXT_JOBS \
    NVCC_APPEND_FLAGS="-Xptxas=-v" "$PY" setup.py build_ext --inplace 2>&1 |
    tee "$out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
  # The module alone (the package's import needs mmseg, built beside it).
  "$PY" - <<'PYEOF' || return 1
import glob
import importlib.util

path, = glob.glob('lma_mmseg/_ext*.so')
spec = importlib.util.spec_from_file_location('lma_mmseg._ext', path)
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
assert ext.with_cuda(), f'{path} was built without the CUDA kernels'
print(path, 'has the CUDA kernels')
PYEOF
  ptxas_summary "$out" || echo "note: built; no resource report in the log"
}

step_import_check() {
  "$PY" - "$MODE" <<'PYEOF'
import platform
import sys

import mmcv
import mmcv.ops  # noqa: F401
import mmengine
import mmseg
import torch

import lma_mmseg
from lma_mmseg import _ext

gpu = sys.argv[1] == 'gpu'
print('python', platform.python_version(), sys.executable)
print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'available', torch.cuda.is_available())
print('mmcv', mmcv.__version__, 'mmengine', mmengine.__version__, 'mmseg',
      mmseg.__version__, 'lma_mmseg', lma_mmseg.__version__)
print('lma_mmseg._ext', _ext.__file__, 'with CUDA kernels:', _ext.with_cuda())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'GPU {p.name}: compute capability {p.major}.{p.minor}, '
          f'{p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB')
if gpu:
    assert torch.cuda.is_available(), 'torch sees no CUDA device'
    assert _ext.with_cuda(), 'lma_mmseg._ext has no CUDA kernels'
    print(f'note: {torch.cuda.get_device_name(0)}, torch {torch.__version__},'
          f' mmcv {mmcv.__version__}, mmseg {mmseg.__version__}')
else:
    print(f'note: torch {torch.__version__}, mmcv {mmcv.__version__}, mmseg '
          f'{mmseg.__version__}; lma_mmseg._ext with CUDA: {_ext.with_cuda()}')
PYEOF
  local rc=$?
  if [ "$MODE" = gpu ]; then
    command -v nvidia-smi >/dev/null && nvidia-smi
    nvcc --version | tail -2
    local san
    san=$(sanitizer_bin) && "$san" --version | head -2
  fi
  return $rc
}

sanitizer_bin() {
  local c
  for c in "$(command -v compute-sanitizer)" \
    /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

step_sanitizer() {
  local tool=$1 san
  if [ "$MODE" = dry ]; then
    "$PY" -m pytest --collect-only -q -p no:cacheprovider -m cuda \
      "$CUDA_TESTS" -k "$SANITIZER_SELECTION" || return 1
    echo "note: the selection collects tests for memcheck, racecheck and" \
      "synccheck"
    return 0
  fi
  san=$(sanitizer_bin) || {
    echo "compute-sanitizer not found"
    return 1
  }
  local env=()
  # without the caching allocator every tensor is its own allocation, so
  # memcheck sees accesses past its end
  [ "$tool" = memcheck ] && env=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
  env "${env[@]}" "$san" --tool "$tool" --error-exitcode 1 \
    "$PY" -m pytest -q -x -p no:cacheprovider -m cuda "$CUDA_TESTS" \
    -k "$SANITIZER_SELECTION" 2>&1 | tee "$WORK/sanitizer_$tool.txt"
  local rc=${PIPESTATUS[0]}
  echo "note: $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' \
    "$WORK/sanitizer_$tool.txt" | tail -1 | sed 's/^=* *//')"
  return "$rc"
}

step_train() {
  local iters=$1 out=$WORK/train.txt
  shift
  "$PY" tools/train.py "$@" 2>&1 | tee "$out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
  if ! grep -q "Iter(train) \[$iters/$iters\]" "$out"; then
    echo "the log has no Iter(train) [$iters/$iters] line"
    return 1
  fi
  if grep -E "Iter\(train\).* loss: (nan|inf)" "$out"; then
    echo "the loss is not finite"
    return 1
  fi
  echo "note: $(grep -o "Iter(train) \[$iters/$iters\].*" "$out" |
    sed -E 's/ +/ /g' | cut -c1-160)"
}

# The argument list of a half-precision run, checked on the CPU (whose
# kernels are float32/float64): argparse checks every option and its value
# before --help, appended last, stops the tool.
step_args_only() {
  "$@" --help || return 1
  echo "note: arguments accepted (--help appended: the CPU runs float32 only)"
}

# ---------------------------------------------------------------------------
# the runner: time limits, logs, summary
# ---------------------------------------------------------------------------
now_s() { date +%s.%N; }

# record NAME STATUS SECONDS START NOTE COMMAND
record() {
  local clean=()
  local x
  for x in "$@"; do clean+=("$(printf '%s' "$x" | tr '\t\n' '  ')"); done
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${clean[@]}" >"$WORK/steps/$1.tsv"
  printf '[gpu_check] %-30s %-8s %7.1f s  %s\n' "$1" "$2" "$3" \
    "$(printf '%s' "$5" | cut -c1-110)"
}

# run_step NAME LIMIT CMD...: CMD with a time limit of LIMIT seconds (less
# when the budget has less left), its output in the step's log. NOTE_RE (a
# grep -E pattern) picks the summary's note from the output: the last
# matching line (default: the line an internal step prints as "note: ...").
run_step() {
  local name=$1 limit=$2
  shift 2
  local log=$WORK/logs/$name.log start left rc status secs note
  start=$(now_s)
  if ! selected "$name"; then
    skip_step "$name" "not selected (GPU_CHECK_ONLY=$GPU_CHECK_ONLY)" "$*"
    return 0
  fi
  left=$((DEADLINE - ${start%.*}))
  if [ "$left" -lt "$MIN_STEP_S" ]; then
    echo "skipped: ${left} s left of the ${BUDGET} s budget" >"$log"
    record "$name" skipped 0 "$start" \
      "no time left in the ${BUDGET} s budget" "$*"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  printf '$ %s\n(time limit %s s)\n' "$*" "$limit" >"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1 </dev/null
  rc=$?
  secs=$(awk -v a="$start" -v b="$(now_s)" 'BEGIN{printf "%.1f", b-a}')
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  local re=${NOTE_RE:-^note: }
  note=$(grep -E "$re" "$log" | tail -1 | sed -E 's/^note: //; s/ +/ /g')
  if [ "$status" = timeout ]; then
    note="stopped after its limit of $limit s${note:+; last: $note}"
  elif [ "$status" = failed ]; then
    note="exit $rc: $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-200)"
  fi
  record "$name" "$status" "$secs" "$start" "$note" "$*"
}

# selected NAME: GPU_CHECK_ONLY is unset or matches NAME.
selected() {
  [ -z "${GPU_CHECK_ONLY:-}" ] || [[ $1 =~ $GPU_CHECK_ONLY ]]
}

# skip_step NAME REASON COMMAND: recorded as skipped without running.
skip_step() {
  local start
  start=$(now_s)
  echo "skipped: $2" >"$WORK/logs/$1.log"
  record "$1" skipped 0 "$start" "$2" "$3"
}

# collect: append the logs of finished steps to gpu_check.log (in the order
# the steps started), show the end of the failed ones, rewrite the summary
# and the merged benchmark files.
collect() {
  local f name status
  for f in $(cut -f1,4 "$WORK"/steps/*.tsv 2>/dev/null | sort -t$'\t' -k2,2n |
    cut -f1); do
    grep -qx "$f" "$WORK/collected" 2>/dev/null && continue
    echo "$f" >>"$WORK/collected"
    IFS=$'\t' read -r name status _ <"$WORK/steps/$f.tsv"
    {
      printf '\n===== %s: %s =====\n' "$name" "$(cut -f2,3 \
        "$WORK/steps/$f.tsv" | tr '\t' ' ')s"
      cat "$WORK/logs/$f.log"
    } >>"$LOG"
    if [ "$status" = failed ] || [ "$status" = timeout ]; then
      echo "----- end of the $name log -----"
      tail -n 25 "$WORK/logs/$f.log"
      echo "-----"
    fi
  done
  write_summary
}

write_summary() {
  WORK=$WORK OUTDIR=$OUTDIR MODE=$MODE BUDGET=$BUDGET T0=$T0 \
    "$PY" - "${1:-}" <<'PYEOF'
import datetime
import glob
import json
import os
import os.path as osp
import sys
import time

work, outdir = os.environ['WORK'], os.environ['OUTDIR']
final = sys.argv[1] == 'final'


def write_json(path, data):
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


steps = []
for path in glob.glob(osp.join(work, 'steps', '*.tsv')):
    with open(path) as f:
        name, status, secs, start, note, command = f.read().rstrip(
            '\n').split('\t')
    steps.append(dict(name=name, status=status, seconds=float(secs),
                      start=float(start), note=note, command=command))
steps.sort(key=lambda s: s['start'])
t0 = float(os.environ['T0'])
for s in steps:
    s['start'] = round(s.pop('start') - t0, 1)


def load_runs(prefix):
    runs = {}
    for path in sorted(glob.glob(osp.join(work, 'json', prefix + '*.json'))):
        key = osp.basename(path)[len(prefix):-len('.json')]
        try:
            with open(path) as f:
                runs[key] = json.load(f)
        except (OSError, ValueError) as e:
            runs[key] = dict(error=f'unreadable: {e}')
    return runs


figures = {}
bench = load_runs('bench_')
if bench:
    write_json(osp.join(outdir, 'benchmark.json'),
               dict(kind='lma_mmseg.gpu_check.benchmark', runs=bench))
    for key, res in bench.items():
        try:
            med = {(r['role'], r['mode']): r['median_ms']
                   for r in res['results']}
            over = res['overhead'][0] if res.get('overhead') else {}
            figures[f'benchmark/{key}'] = dict(
                device=res.get('device_name'),
                lma_streaming_median_ms=med.get(('model', 'streaming')),
                erfnet_median_ms=med.get(('baseline', 'single')),
                overhead_ratio=over.get('ratio'),
                overhead_ms=over.get('ms'),
                paired_overhead_ms=over.get('paired_median_ms'))
        except (KeyError, TypeError, IndexError) as e:
            figures[f'benchmark/{key}'] = dict(error=f'unexpected JSON: {e}')
ops = load_runs('benchmark_op_')
if ops:
    write_json(osp.join(outdir, 'benchmark_op.json'),
               dict(kind='lma_mmseg.gpu_check.benchmark_op', runs=ops))
    for key, res in ops.items():
        try:
            for r in res.get('results', []):
                entry = {}
                for part in ('forward', 'forward_backward'):
                    if isinstance(r.get(part), dict) and \
                            r[part].get('median_s') is not None:
                        entry[f'{part}_ms'] = round(
                            1e3 * r[part]['median_s'], 4)
                if entry:
                    figures[f'benchmark_op/{key}/{r.get("device")}/'
                            f'{r.get("shape")}/{r.get("method")}'] = entry
            if 'ratios' in res:
                figures[f'benchmark_op/{key}/ratios'] = res['ratios']
        except (AttributeError, TypeError) as e:
            figures[f'benchmark_op/{key}'] = dict(error=f'unexpected JSON: {e}')

bad = [s['name'] for s in steps if s['status'] in ('failed', 'timeout')]
summary = dict(
    kind='lma_mmseg.gpu_check',
    mode='gpu' if os.environ['MODE'] == 'gpu' else 'dry-run',
    started=datetime.datetime.fromtimestamp(
        t0, datetime.timezone.utc).isoformat(timespec='seconds'),
    finished=final,
    total_s=round(time.time() - t0, 1),
    budget_s=int(os.environ['BUDGET']),
    ok=not bad,
    failed=bad,
    skipped=[s['name'] for s in steps if s['status'] == 'skipped'],
    steps=steps,
    figures=figures)
write_json(osp.join(outdir, 'summary.json'), summary)
if final:
    print(f'\n{"step":30s} {"status":8s} {"s":>7s}  note')
    for s in steps:
        print(f'{s["name"]:30s} {s["status"]:8s} {s["seconds"]:7.1f}  '
              f'{s["note"][:100]}')
    for key, fig in figures.items():
        if key.startswith('benchmark/') and 'error' not in fig:
            print(f'{key}: LMA-ERFNet {fig["lma_streaming_median_ms"]} ms, '
                  f'ERFNet {fig["erfnet_median_ms"]} ms, '
                  f'x{fig["overhead_ratio"]}, {fig["overhead_ms"]:+} ms')
    print(f'\n{len(steps)} steps, {len(bad)} failed or timed out, '
          f'{len(summary["skipped"])} skipped, {summary["total_s"]} s; '
          f'{outdir}/summary.json')
PYEOF
}

# The --help of a tool, once (empty when it cannot even print that).
tool_help() {
  local f=$WORK/help_$(basename "$1" .py).txt
  [ -f "$f" ] || "$PY" "$1" --help >"$f" 2>/dev/null || : >"$f"
  cat "$f"
}

# has_option TOOL OPTION: the tool's --help lists OPTION (or could not be
# read, so that the step runs and shows why).
has_option() {
  local help
  help=$(tool_help "$1")
  [ -z "$help" ] && return 0
  grep -qE -- "$2([^-a-z_]|$)" <<<"$help"
}

# dtype_args TOOL fp16|bf16: the options that select that dtype, if any:
# --dtype with one of its choices, else (fp16) --amp or --fp16.
dtype_args() {
  local tool=$1 want=$2 choices c cands
  case $want in
    fp16) cands="float16 fp16 half" ;;
    bf16) cands="bfloat16 bf16" ;;
  esac
  if has_option "$tool" --dtype; then
    choices=$(tool_help "$tool" | grep -oE -- '--dtype \{[^}]*\}' | head -1)
    [ -z "$choices" ] && {
      echo "--dtype ${cands%% *}"
      return 0
    }
    for c in $cands; do
      if grep -qE "[{,]$c[,}]" <<<"$choices"; then
        echo "--dtype $c"
        return 0
      fi
    done
    return 1
  fi
  [ "$want" = fp16 ] || return 1
  if has_option "$tool" --amp; then
    echo --amp
  elif has_option "$tool" --fp16; then
    echo --fp16
  else
    return 1
  fi
}

cleanup() {
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${GPU_CHECK_KEEP:-}" ]; then
    rm -rf "$WORK"
  fi
}

main() {
  case "${1:-}" in
    -h | --help)
      usage
      exit 0
      ;;
    --fetch-wheels)
      fetch_wheels
      exit
      ;;
    --step)  # one step, in the MODE and WORK of the run that started it
      shift
      local step=$1
      shift
      MODE=${MODE:-gpu}
      pick_python
      "step_$step" "$@"
      exit
      ;;
  esac
  MODE=gpu
  case "${1:-}" in
    --dry-run)
      MODE=dry
      shift
      ;;
    -*)
      echo "gpu_check.sh: unknown option $1 (see --help)" >&2
      exit 2
      ;;
  esac
  [ $# -le 1 ] || {
    echo "gpu_check.sh: one OUTDIR at most (see --help)" >&2
    exit 2
  }
  if [ $# -eq 1 ]; then
    case $1 in
      /*) OUTDIR=$1 ;;
      *) OUTDIR=$CALLER_PWD/$1 ;;
    esac
  else
    OUTDIR=${OUT:-work_dirs/gpu_check}
  fi
  mkdir -p "$OUTDIR" || exit 2
  OUTDIR=$(cd "$OUTDIR" && pwd)
  LOG=$OUTDIR/gpu_check.log
  rm -f "$LOG" "$OUTDIR/summary.json" "$OUTDIR/benchmark.json" \
    "$OUTDIR/benchmark_op.json"
  pick_python
  T0=$(now_s)
  BUDGET=${GPU_CHECK_BUDGET:-540}
  DEADLINE=$((${T0%.*} + BUDGET - 10))
  MIN_STEP_S=20
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  trap cleanup EXIT
  mkdir -p "$WORK/steps" "$WORK/logs" "$WORK/json"
  SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
  local nproc
  nproc=$(nproc)
  MMCV_JOBS=$((nproc * 3 / 4 > 0 ? nproc * 3 / 4 : 1))
  EXT_JOBS=$((nproc - MMCV_JOBS > 0 ? nproc - MMCV_JOBS : 1))
  export MODE WORK SITE PY MMCV_JOBS EXT_JOBS MMCV_VERSION
  if [ "$MODE" = gpu ]; then
    export PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  fi
  export PYTHONUNBUFFERED=1
  {
    echo "gpu_check ($MODE) in $ROOT, $(date -u +%FT%TZ)"
    echo "python: $PY; output: $OUTDIR; budget ${BUDGET} s"
    git -C "$ROOT" log -1 --format='commit %h %s' 2>/dev/null
  } | tee "$LOG"

  local me=(bash "$SELF" --step)
  local data=$WORK/data
  # ---- set-up ------------------------------------------------------------
  if [ "$MODE" = dry ] && ! ls "$WHL_DIR"/*.whl >/dev/null 2>&1; then
    skip_step wheels "no $WHL_DIR/ (make gpu-wheels downloads it)" \
      "${me[*]} wheels"
    skip_step build_mmcv "no $WHL_DIR/ (make gpu-wheels downloads it)" \
      "${me[*]} build_mmcv"
  else
    run_step wheels 120 "${me[@]}" wheels
    collect
    if [ "$MODE" = gpu ]; then
      run_step build_mmcv 360 "${me[@]}" build_mmcv &
    else
      run_step build_mmcv 60 "${me[@]}" build_mmcv
    fi
  fi
  if [ "$MODE" = dry ] && ! command -v nvcc >/dev/null; then
    skip_step build_ext "nvcc not found: no compile check of the CUDA code" \
      "${me[*]} build_ext"
  else
    run_step build_ext 300 "${me[@]}" build_ext
  fi
  wait
  collect
  if [ "$MODE" = gpu ]; then
    NOTE_RE='key-frame pixels' run_step make_data 120 \
      "$PY" tools/make_demo_data.py --out "$data" --size 512 1024 \
      --num-train 8 --num-val 1 --num-test 0 --frames memory
  else
    NOTE_RE='key-frame pixels' run_step make_data 120 \
      "$PY" tools/make_demo_data.py --out "$data" --size 128 256 \
      --num-train 1 --num-val 1 --num-test 0 --frames memory
  fi
  run_step import_check 120 "${me[@]}" import_check
  collect

  # ---- correctness: tests, sanitizer, training (side by side on the GPU) --
  local train_opts=(
    model.decode_head.norm_cfg.type=BN model.neck.fusion.norm_cfg.type=BN
    load_from=None train_dataloader.dataset.data_root="$data"
    val_dataloader.dataset.data_root="$data"
    test_dataloader.dataset.data_root="$data"
    train_cfg.val_begin=1000000 default_hooks.checkpoint.interval=1000000
    default_hooks.checkpoint.save_last=False)
  if [ "$MODE" = gpu ]; then
    NOTE_RE=' (passed|failed|error)' run_step pytest_cuda 240 \
      "$PY" -m pytest -m cuda -q -p no:cacheprovider tests &
    local tool
    for tool in memcheck racecheck synccheck; do
      run_step "sanitizer_$tool" 180 "${me[@]}" sanitizer "$tool" &
    done
    run_step train_amp 240 "${me[@]}" train 20 "$LMA_CONFIG" --amp \
      --work-dir "$WORK/train" --cfg-options "${train_opts[@]}" \
      train_dataloader.batch_size=4 train_dataloader.num_workers=8 \
      train_cfg.max_iters=20 default_hooks.logger.interval=5 &
    wait
  else
    NOTE_RE='tests? collected' run_step pytest_cuda 120 \
      "$PY" -m pytest -m cuda --collect-only -q -p no:cacheprovider tests
    run_step sanitizer 120 "${me[@]}" sanitizer all
    # AmpOptimWrapper needs a GPU: the dry run trains in float32.
    run_step train_amp 300 "${me[@]}" train 1 "$LMA_CONFIG" \
      --work-dir "$WORK/train" --cfg-options "${train_opts[@]}" \
      train_dataloader.batch_size=1 train_dataloader.num_workers=1 \
      train_cfg.max_iters=1 default_hooks.logger.interval=1
  fi
  collect

  # ---- timings (alone) ----------------------------------------------------
  local bop=tools/analysis/benchmark_op.py bench=tools/benchmark.py
  local bop_args bench_args dtype extra name shape mode
  if [ "$MODE" = gpu ]; then
    bop_args=(--device cuda --shapes erfnet pspnet --repeats 50 --warmup 5)
    bench_args=(--device cuda --frames 200 --warmup 20)
  else
    bop_args=(--device cpu --quick --threads 1 --repeats 1 --ref-repeats 1
      --warmup 0)
    bench_args=(--device cpu --frames 2 --warmup 1 --threads 1)
  fi
  # the op at the paper's two settings, per dtype
  for dtype in fp32 fp16 bf16; do
    extra=
    if ! selected "benchmark_op_$dtype"; then
      run_step "benchmark_op_$dtype" 0 "$PY" "$bop"
      continue
    fi
    if [ "$dtype" != fp32 ] && ! extra=$(dtype_args "$bop" "$dtype"); then
      skip_step "benchmark_op_$dtype" "$bop has no --dtype option for $dtype" \
        "$PY $bop ${bop_args[*]}"
      continue
    fi
    local check=()
    [ "$MODE" = dry ] && [ "$dtype" != fp32 ] && check=("${me[@]}" args_only)
    # shellcheck disable=SC2086  (extra: zero or more words)
    NOTE_RE='fused forward =|^note: ' run_step "benchmark_op_$dtype" 150 \
      "${check[@]}" "$PY" "$bop" "${bop_args[@]}" $extra \
      --out "$WORK/json/benchmark_op_$dtype.json"
    collect
  done
  # LMA-ERFNet streaming against ERFNet, eager runs first
  local shapes=("512 1024" "1024 2048")
  [ "$MODE" = dry ] && shapes=("512 1024")
  for mode in eager compile; do
    for shape in "${shapes[@]}"; do
      for dtype in fp32 fp16; do
        name=bench_${shape/ /x}_${dtype}_$mode
        if ! selected "$name"; then
          run_step "$name" 0 "$PY" "$bench"
          continue
        fi
        extra=
        if [ "$dtype" = fp16 ] && ! extra=$(dtype_args "$bench" fp16); then
          skip_step "$name" "$bench has no option for fp16 (--dtype, --amp)" \
            "$PY $bench"
          continue
        fi
        local env=()
        if [ "$mode" = compile ]; then
          if ! has_option "$bench" --compile; then
            skip_step "$name" "$bench has no --compile option" "$PY $bench"
            continue
          fi
          extra="$extra --compile"
          # on the CPU only the argument list is exercised: compiling the
          # models would take minutes
          [ "$MODE" = dry ] && env=(TORCH_COMPILE_DISABLE=1)
        fi
        local size=($shape) check=()
        [ "$MODE" = dry ] && size=(64 128)
        [ "$MODE" = dry ] && [ "$dtype" != fp32 ] && check=("${me[@]}" args_only)
        # shellcheck disable=SC2086
        NOTE_RE='overhead of|^note: ' run_step "$name" \
          "$([ "$mode" = compile ] && echo 240 || echo 120)" \
          "${check[@]}" env "${env[@]}" "$PY" "$bench" "$LMA_CONFIG" \
          --baseline "$ERFNET_CONFIG" --modes streaming --shape "${size[@]}" \
          "${bench_args[@]}" --no-flops --no-progress $extra \
          --out "$WORK/json/bench_${name#bench_}.json"
        collect
      done
    done
  done

  collect
  write_summary final | tee -a "$LOG"
  "$PY" -c "import json, sys
sys.exit(0 if json.load(open(sys.argv[1]))['ok'] else 1)" \
    "$OUTDIR/summary.json"
}

main "$@"
