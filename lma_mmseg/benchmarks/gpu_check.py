"""The GPU check: everything of lma_mmseg that needs a CUDA device, in one
call that keeps to a time budget (written for one H200 with 16 cores, Python
3.12, torch with CUDA, nvcc and no network).

The check is a table of steps (:func:`build_steps`): each has a name, the
command it runs, what it checks, a time limit and, for the dry run, the
smallest command line that still exercises it. The runner (:func:`run_check`)
runs the table in stages; the steps of a stage run side by side (on the GPU
machine: the builds, then the tests, the sanitizer and the training), the
timings run alone and last. A step that fails or runs out of time is logged
and the next one runs; a step that would start with less than
:data:`MIN_STEP_S` seconds of the budget left is skipped.

Two modes:

* ``'gpu'``: installs the carried wheels, builds mmcv's CPU ops and the
  extension with its CUDA kernels for sm_90, runs the CUDA tests, the
  sanitizer, AMP training and the benchmarks (the op per dtype and against
  its peers; the model at 512x1024 and 1024x2048, fp32 and fp16, eager and
  compiled);
* ``'dry-run'``: what needs no GPU, on a CPU machine: the carried files are
  checked but not installed, the CUDA sources are compiled for sm_90 (no
  host object), the CUDA tests and the sanitizer's selection are collected,
  the training and the fp32 eager benchmarks run at tiny sizes, and the
  half-precision, compiled and peer command lines are checked against the
  tool's ``--help`` (the CPU kernels are float32; compiling takes minutes on
  a CPU). The CUDA compile is the one heavy step; the steps run in two
  lanes.

Everything the check runs comes in through :class:`CheckPaths` (the
repository root, the tools, configs and tests of the checkout): the package
holds no path into the checkout. The module needs only the standard library
and :mod:`lma_mmseg.fileio` at import time: the command line loads it without
the package's ``__init__`` (which registers every component), so that it runs
on a machine that has torch but not yet mmengine, mmseg or mmcv's ops (the
check installs them).

Outputs, in :attr:`CheckSettings.out_dir`: ``gpu_check.log`` (each step's
command and output, in order), ``summary.json`` (each step's status, seconds,
command and a one-line note, plus the benchmark figures; rewritten after
every step), ``benchmark_op.json`` and ``benchmark.json`` (the benchmark
results, one entry per run). :func:`run_check` returns the summary; its
``ok`` is false when a step failed or timed out.
"""
import configparser
import dataclasses
import datetime
import json
import os
import os.path as osp
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..fileio import atomic_write_json

__all__ = [
    'KIND', 'MODES', 'MIN_STEP_S', 'SANITIZER_SELECTION', 'Versions',
    'CheckPaths', 'CheckSettings', 'Step', 'StepFailed', 'StepSkipped',
    'gpu_wheel_specs', 'missing_wheels', 'check_wheels', 'fetch_wheels',
    'check_arguments', 'ptxas_summary', 'report_imports', 'build_steps',
    'describe_steps', 'run_check'
]

KIND = 'lma_mmseg.gpu_check'
MODES = ('gpu', 'dry-run')
#: A step that would start with less than this many seconds of the budget
#: left is skipped.
MIN_STEP_S = 20
#: Seconds of the budget kept for the summary at the end.
BUDGET_MARGIN_S = 10
#: Small cases of the CUDA op tests for compute-sanitizer (slow): two float32
#: shapes of every op, the half types, the log-sum-exp.
SANITIZER_SELECTION = (
    'B2T2C4Cv6_5x7_w3d1 or B1T3C5Cv70_6x19_w5d2 or '
    'half_types or log_sum_exp')
SANITIZER_TOOLS = ('memcheck', 'racecheck', 'synccheck')
#: Methods of the op benchmark that are the op's peers (the unfold
#: reference, scaled_dot_product_attention with a dense mask,
#: FlexAttention), timed against the fused op.
PEER_METHODS = ('reference', 'sdpa', 'flex')

# ---------------------------------------------------------------------------
# the carried wheels
# ---------------------------------------------------------------------------
#: Pure-Python packages the GPU machine's Python 3.12 lacks (besides
#: mmengine and mmsegmentation): their requirements, this package's own
#: (ftfy, prettytable, cityscapesscripts with its requirements), and
#: setuptools < 81, whose pkg_resources mmcv's setup.py imports. Pinned to
#: the versions of the project's environment.
GPU_WHEELS = (
    'addict==2.4.0', 'termcolor==3.3.0', 'yapf==0.43.0',
    'platformdirs==4.14.9', 'prettytable==3.18.0', 'wcwidth==0.9.4',
    'ftfy==6.3.1', 'cityscapesScripts==2.3.0', 'appdirs==1.4.4',
    'pyquaternion==0.9.9', 'coloredlogs==15.0.1', 'humanfriendly==10.0',
    'setuptools==80.9.0')
#: Packages of the GPU machine's Python (torch 2.11 image) that the carried
#: ones need. A requirement that is neither here nor carried is an error:
#: check it against that machine's package list, then add it here or carry
#: it.
PROVIDED = frozenset(
    {
        'numpy', 'matplotlib', 'pyyaml', 'rich', 'packaging', 'scipy',
        'pillow', 'tqdm', 'requests', 'regex', 'opencv-python-headless',
        'torch', 'typing-extensions', 'zipp', 'psutil', 'ninja', 'setuptools',
        'wheel', 'pytest', 'pytest-timeout', 'pip'
    })
#: Requirements deliberately not carried.
EXCUSED = {
    'opencv-python': 'opencv-python-headless provides the same cv2 there',
    'typing': 'a backport of the standard library module; carried into the '
    'target folder it would shadow the real one',
}
#: The GPU machine's interpreter, for requirement markers.
GPU_MARKER_ENV = dict(
    python_version='3.12',
    python_full_version='3.12.3',
    sys_platform='linux',
    platform_system='Linux',
    platform_machine='x86_64',
    os_name='posix',
    implementation_name='cpython',
    platform_python_implementation='CPython',
    extra='')
#: pip's target options for that interpreter (pip matches every manylinux
#: tag exactly).
PIP_TARGET_ARGS = (
    ['--python-version', '3.12', '--implementation', 'cp'] + [
        a for n in (39, 35, 34, 31, 28, 27, 24, 17)
        for a in ('--platform', f'manylinux_2_{n}_x86_64')
    ] +
    ['--platform', 'manylinux2014_x86_64', '--platform', 'manylinux1_x86_64'])

#: ``(kind, requirement)`` pairs of carried files.
Specs = List[Tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Versions:
    """The OpenMMLab versions the check carries and builds.

    Args:
        mmcv (str): mmcv, built on the GPU machine from its sdist.
        mmengine (str): mmengine, carried as a wheel.
        mmseg (str): mmsegmentation, carried as a wheel.
    """
    mmcv: str = '2.1.0'
    mmengine: str = '0.10.7'
    mmseg: str = '1.2.2'


def gpu_wheel_specs(versions: Versions = Versions()) -> Specs:
    """What the GPU machine needs carried, as ``(kind, requirement)`` pairs
    with ``kind`` ``'wheel'`` or ``'sdist'`` (mmcv: its ops are built
    there, against that machine's torch)."""
    wheels = [
        f'mmengine=={versions.mmengine}', f'mmsegmentation=={versions.mmseg}',
        *GPU_WHEELS
    ]
    return [('wheel', s)
            for s in wheels] + [('sdist', f'mmcv=={versions.mmcv}')]


def _packaging():
    """``packaging``'s modules, or pip's copy in a bare environment."""
    try:
        from packaging import requirements, tags, utils
    except ImportError:
        from pip._vendor.packaging import requirements, tags, utils
    return requirements, tags, utils


def _carried(whl_dir: str, errors: List[str]) -> Dict[str, list]:
    """The wheels and sdists of ``whl_dir``: canonical name -> list of
    ``(file name, kind, version, tags)``; malformed names go to
    ``errors``."""
    _, _, utils = _packaging()
    carried: Dict[str, list] = {}
    files = sorted(os.listdir(whl_dir)) if osp.isdir(whl_dir) else []
    for fname in files:
        try:
            if fname.endswith('.whl'):
                name, version, _, tags = utils.parse_wheel_filename(fname)
                kind = 'wheel'
            elif fname.endswith(('.tar.gz', '.zip')):
                name, version = utils.parse_sdist_filename(fname)
                kind, tags = 'sdist', None
            else:
                continue
        except Exception as e:  # noqa: BLE001  (a malformed name)
            errors.append(
                f'{whl_dir}/{fname}: not a wheel or sdist name '
                f'({e})')
            continue
        carried.setdefault(utils.canonicalize_name(name), []).append(
            (fname, kind, version, tags))
    return carried


def missing_wheels(whl_dir: str, versions: Versions = Versions()) -> Specs:
    """The ``(kind, requirement)`` pairs of :func:`gpu_wheel_specs` that have
    no file in ``whl_dir``."""
    requirements, _, utils = _packaging()
    carried = _carried(whl_dir, [])
    missing = []
    for kind, spec in gpu_wheel_specs(versions):
        req = requirements.Requirement(spec)
        have = [
            f for f in carried.get(utils.canonicalize_name(req.name), [])
            if f[1] == kind and f[2] in req.specifier
        ]
        if not have:
            missing.append((kind, spec))
    return missing


def _archive_requirements(path: str, kind: str) -> List[str]:
    """The requirements of a wheel (its METADATA) or of an sdist (its
    ``requirements/runtime.txt``, else its PKG-INFO)."""
    if kind == 'wheel':
        with zipfile.ZipFile(path) as z:
            meta = [
                n for n in z.namelist()
                if re.fullmatch(r'[^/]+\.dist-info/METADATA', n)
            ]
            if len(meta) != 1:
                raise ValueError('no single top-level .dist-info/METADATA')
            text = z.read(meta[0]).decode('utf-8')
        return [
            line.split(':', 1)[1].strip() for line in text.splitlines()
            if line.startswith('Requires-Dist:')
        ]
    with tarfile.open(path) as t:
        names = t.getnames()
        base = names[0].split('/')[0]
        if f'{base}/setup.py' not in names or f'{base}/PKG-INFO' not in names:
            raise ValueError('no setup.py and PKG-INFO at its top level')
        runtime = f'{base}/requirements/runtime.txt'
        if runtime in names:
            text = t.extractfile(runtime).read().decode('utf-8')
            return [
                line.strip() for line in text.splitlines()
                if line.strip() and not line.startswith('#')
            ]
        text = t.extractfile(f'{base}/PKG-INFO').read().decode('utf-8')
        return [
            line.split(':', 1)[1].strip() for line in text.splitlines()
            if line.startswith('Requires-Dist:')
        ]


def check_wheels(
        whl_dir: str,
        setup_cfg: str,
        versions: Versions = Versions(),
        log: Callable[[str], None] = print) -> List[str]:
    """Check the carried files: every one of :func:`gpu_wheel_specs` there,
    one version per project, wheel tags that fit CPython 3.12 on x86-64
    Linux, and every requirement (of the carried packages and of the
    package's ``setup.cfg``) met by a carried file or by the GPU machine's
    own packages (:data:`PROVIDED`).

    Args:
        whl_dir (str): The folder of the carried wheels and sdists.
        setup_cfg (str): The package's ``setup.cfg`` (its
            ``install_requires``).
        versions (Versions): The OpenMMLab versions to carry.
        log (callable): Receives the listing, the errors and a last
            ``note: ...`` line.

    Returns:
        list[str]: The problems found (empty: consistent).
    """
    requirements, tags_mod, utils = _packaging()
    platforms = (
        [f'manylinux_2_{n}_x86_64' for n in range(39, 16, -1)] + [
            'manylinux2014_x86_64', 'manylinux2010_x86_64',
            'manylinux1_x86_64', 'linux_x86_64'
        ])
    gpu_tags = set(tags_mod.cpython_tags((3, 12), platforms=platforms)) | set(
        tags_mod.compatible_tags((3, 12), 'cp312', platforms))
    errors: List[str] = []
    carried = _carried(whl_dir, errors)
    for kind, spec in missing_wheels(whl_dir, versions):
        errors.append(f'{whl_dir}: no {kind} {spec} (run `make gpu-wheels`)')
    for name, entries in carried.items():
        if len(entries) > 1:
            errors.append(
                f'{whl_dir}: {len(entries)} files of {name} '
                f'({", ".join(e[0] for e in entries)}); keep one, '
                'two stop the whole install')

    def check_requirement(owner: str, spec: str) -> None:
        req = requirements.Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(GPU_MARKER_ENV):
            return
        name = utils.canonicalize_name(req.name)
        if name in carried:
            version = carried[name][0][2]
            if not req.specifier.contains(version, prereleases=True):
                errors.append(
                    f'{owner} requires {spec}, {whl_dir} has '
                    f'{name} {version}')
        elif name not in PROVIDED and name not in EXCUSED:
            errors.append(
                f'{owner} requires {spec}: neither carried in '
                f"{whl_dir} nor among the GPU machine's packages")

    rows, total = [], 0
    for name, entries in sorted(carried.items()):
        for fname, kind, _, file_tags in entries:
            size = osp.getsize(osp.join(whl_dir, fname))
            total += size
            rows.append((fname, size))
            if kind == 'wheel' and not (set(file_tags) & gpu_tags):
                errors.append(
                    f'{whl_dir}/{fname}: no tag for CPython 3.12 '
                    'on x86-64 Linux')
            try:
                reqs = _archive_requirements(osp.join(whl_dir, fname), kind)
            except Exception as e:  # noqa: BLE001  (a broken archive)
                errors.append(f'{whl_dir}/{fname}: unreadable ({e})')
                continue
            for spec in reqs:
                check_requirement(fname, spec)
    cfg = configparser.ConfigParser()
    if not cfg.read(setup_cfg):
        errors.append(f'{setup_cfg}: cannot be read')
    for spec in cfg.get('options', 'install_requires', fallback='').split():
        check_requirement(osp.basename(setup_cfg), spec)
    for fname, size in rows:
        log(f'{size / 1024:10.1f} KiB  {fname}')
    log(f'{total / 2**20:10.2f} MiB  in {len(rows)} files')
    for error in errors:
        log(f'error: {error}')
    log(
        f'note: {len(rows)} files, {total / 2**20:.1f} MiB' +
        (f', {len(errors)} problems' if errors else ', consistent'))
    return errors


def fetch_wheels(
        whl_dir: str,
        setup_cfg: str,
        python: str = sys.executable,
        versions: Versions = Versions(),
        log: Callable[[str], None] = print) -> int:
    """Download what :func:`missing_wheels` lists into ``whl_dir`` (for
    CPython 3.12 on x86-64 Linux), then :func:`check_wheels`.

    Files already there are not fetched again; offline it succeeds only when
    all of them are there. The sdists are fetched from a throwaway virtual
    environment with setuptools < 81: pip reads an sdist's metadata by
    running its setup.py, and mmcv's imports ``pkg_resources``.

    Args:
        whl_dir (str): Destination folder (created).
        setup_cfg (str): The package's ``setup.cfg``.
        python (str): The interpreter whose pip downloads.
        versions (Versions): The OpenMMLab versions to carry.
        log (callable): Receives the messages.

    Returns:
        int: 0 when the folder is complete and consistent, else 1.
    """
    os.makedirs(whl_dir, exist_ok=True)
    missing = missing_wheels(whl_dir, versions)
    wheels = [s for k, s in missing if k == 'wheel']
    sdists = [s for k, s in missing if k == 'sdist']
    offline = (
        'is the package index reachable? Offline, the files must be '
        f'in {whl_dir} already.')
    if not missing:
        log(
            f'gpu-wheels: every wheel and sdist is in {whl_dir} already; '
            'nothing to download')
    else:
        log(
            f'gpu-wheels: downloading {" ".join(wheels + sdists)} into '
            f'{whl_dir}')
    if wheels and subprocess.run([
            python, '-m', 'pip', 'download', '-q', '--no-deps',
            '--only-binary=:all:', *PIP_TARGET_ARGS, '-d', whl_dir, *wheels
    ]).returncode:
        log(f'gpu-wheels: could not download {" ".join(wheels)}: {offline}')
        return 1
    if sdists:
        env_dir = tempfile.mkdtemp(prefix='gpu_wheels_env.')
        env_py = osp.join(env_dir, 'bin', 'python')
        try:
            ok = all(
                subprocess.run(cmd).returncode == 0 for cmd in (
                    [python, '-m', 'venv', env_dir], [
                        env_py, '-m', 'pip', 'install', '-q',
                        'setuptools>=77,<81', 'wheel'
                    ], [
                        env_py, '-m', 'pip', 'download', '-q', '--no-deps',
                        '--no-binary=:all:', '--no-build-isolation', '-d',
                        whl_dir, *sdists
                    ]))
        finally:
            shutil.rmtree(env_dir, ignore_errors=True)
        if not ok:
            log(
                f'gpu-wheels: could not download {" ".join(sdists)}: '
                f'{offline}')
            return 1
    return 1 if check_wheels(whl_dir, setup_cfg, versions, log) else 0


# ---------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckPaths:
    """What the check runs, in the checkout it checks. Relative paths are
    relative to ``root``, the working folder of every step.

    Args:
        root (str): The repository root.
        setup_py (str): The build script with ``make_extension()``.
        setup_cfg (str): The package's ``setup.cfg``.
        train (str): The training tool.
        benchmark (str): The model benchmark tool.
        benchmark_op (str): The op benchmark tool.
        make_demo_data (str): The synthetic data tool.
        lma_config (str): The LMA-ERFNet config (trained and timed).
        erfnet_config (str): The single-frame ERFNet config (the baseline).
        tests (str): The test folder (``pytest -m cuda``).
        cuda_tests (str): The CUDA op tests (the sanitizer's).
        whl_dir (str): The carried wheels and sdists.
    """
    root: str
    setup_py: str
    setup_cfg: str
    train: str
    benchmark: str
    benchmark_op: str
    make_demo_data: str
    lma_config: str
    erfnet_config: str
    tests: str
    cuda_tests: str
    whl_dir: str

    def abs(self, path: str) -> str:
        """``path`` under :attr:`root` (unchanged when absolute)."""
        return osp.join(self.root, path)


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """One run of the GPU check.

    Args:
        paths (CheckPaths): What it runs.
        out_dir (str): Where the log, the summary and the benchmark results
            go (created).
        mode (str): ``'gpu'`` or ``'dry-run'``.
        python (str): The interpreter of every step.
        budget_s (int): Seconds for the whole run.
        only (str, optional): A regular expression: only the steps whose name
            it matches (``re.search``) run, the others are recorded as not
            selected.
        site (str): Where the GPU machine's run installs the wheels and
            mmcv (put on ``PYTHONPATH`` of every step).
        versions (Versions): The OpenMMLab versions carried and built.
        jobs (int): CPU cores of the builds (the GPU machine's mmcv and
            extension builds share them); the dry run's compile uses two.
        keep_work (bool): Keep the work folder (step logs, raw results).
        environ (dict, optional): The environment the steps start from
            (default: this process's).
    """
    paths: CheckPaths
    out_dir: str
    mode: str = 'gpu'
    python: str = sys.executable
    budget_s: int = 540
    only: Optional[str] = None
    site: str = '/tmp/gpu_check_site'
    versions: Versions = Versions()
    jobs: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    keep_work: bool = False
    environ: Optional[Mapping[str, str]] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(
                f'CheckSettings.mode: {self.mode!r} is not one '
                f'of {MODES}')
        if isinstance(self.budget_s, bool) or not isinstance(
                self.budget_s, int) or self.budget_s < 1:
            raise ValueError(
                'CheckSettings.budget_s: a positive number of '
                f'seconds, got {self.budget_s!r}')
        if self.only is not None:
            try:
                re.compile(self.only)
            except re.error as e:
                raise ValueError(
                    'CheckSettings.only: not a regular '
                    f'expression: {self.only!r} ({e})') from None
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(
                f'CheckSettings.jobs: a positive int, got {self.jobs!r}')

    @property
    def gpu(self) -> bool:
        """Whether this is the GPU machine's run."""
        return self.mode == 'gpu'

    def selected(self, name: str) -> bool:
        """Whether the step ``name`` is selected by :attr:`only`."""
        return not self.only or re.search(self.only, name) is not None


# ---------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------
class StepFailed(Exception):
    """A step's action failed; the message is the last line of its log."""


class StepSkipped(Exception):
    """A step cannot run here; the message is the reason, recorded as its
    note."""


class StepTimeout(Exception):
    """A step ran past its time limit."""


@dataclasses.dataclass
class Step:
    """One row of the check's table.

    Args:
        name (str): Its name in the summary (``GPU_CHECK_ONLY`` matches it).
        checks (str): What it checks (one line, listed by ``--help``).
        limit_s (int): Its time limit in seconds (less when the budget has
            less left).
        command (list[str]): What it runs, in the repository root.
        resolve (callable, optional): Called when the step starts; returns
            the command to run instead (e.g. with the options the tool
            turns out to have) or raises :class:`StepSkipped`.
        action (callable, optional): ``action(run, command)`` runs the step
            in the runner (e.g. runs several commands and reads their
            output) instead of running ``command``; returns an exit status
            (0: passed) or raises :class:`StepFailed`. It runs the commands
            through ``run`` (a :class:`StepRun`), which keeps the time limit.
        env (dict): Extra environment variables of its commands.
        note_re (str): The summary's note is the last line of its output
            that this matches (``note: `` removed).
        skip (str, optional): Recorded as skipped for this reason, without
            running.
    """
    name: str
    checks: str
    limit_s: int
    command: List[str]
    resolve: Optional[Callable[[], List[str]]] = None
    action: Optional[Callable[['StepRun', List[str]], int]] = None
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    note_re: str = r'^note: '
    skip: Optional[str] = None


def _kill_group(proc: subprocess.Popen) -> None:
    """End a step's process group: SIGTERM, SIGKILL 10 s later."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class StepRun:
    """A running step: its log and what is left of its time limit.

    Args:
        log_path (str): The step's log (appended to).
        limit_s (float): Its time limit from now.
        cwd (str): The working folder of its commands.
        env (dict): The environment of its commands.
        work (str): The run's work folder (scratch files).
    """

    def __init__(
            self, log_path: str, limit_s: float, cwd: str,
            env: Mapping[str, str], work: str):
        self.log_path = log_path
        self.deadline = time.monotonic() + limit_s
        self.cwd = cwd
        self.env = dict(env)
        self.work = work
        self._lock = threading.Lock()

    def print(self, *parts) -> None:
        """Append a line to the log."""
        with self._lock, open(self.log_path, 'a') as f:
            f.write(' '.join(str(p) for p in parts) + '\n')

    def run(
            self,
            command: Sequence[str],
            env: Optional[Mapping[str, str]] = None,
            quiet: bool = False) -> Tuple[int, str]:
        """Run a command within the step's time limit; its command line
        (``$ ...``) and output (stdout and stderr) are appended to the log.

        Args:
            command (list[str]): The command.
            env (dict, optional): Extra environment variables.
            quiet (bool): Log neither the command nor its output.

        Returns:
            tuple[int, str]: Its exit status and its output.

        Raises:
            StepTimeout: It was stopped at the end of the limit.
        """
        return self.run_all([command], env=env, jobs=1, quiet=quiet)[0]

    def run_all(
            self,
            commands: Sequence[Sequence[str]],
            env: Optional[Mapping[str, str]] = None,
            jobs: int = 1,
            quiet: bool = False) -> List[Tuple[int, str]]:
        """Run commands, ``jobs`` at a time, within the step's time limit;
        the output of each is appended to the log (after its ``$ ...``
        line) when it ends, in the order given (nothing with ``quiet``).

        Returns:
            list[tuple[int, str]]: Exit status and output of each command.

        Raises:
            StepTimeout: The limit ended first (every command still running
            is stopped).
        """
        full_env = dict(self.env, **(env or {}))
        results: List[Optional[Tuple[int, str]]] = [None] * len(commands)
        running: List[Tuple[int, subprocess.Popen, object]] = []
        pending = list(enumerate(commands))
        try:
            while pending or running:
                while pending and len(running) < max(1, jobs):
                    i, cmd = pending.pop(0)
                    out = tempfile.TemporaryFile(
                        'w+', dir=self.work, errors='replace')
                    proc = subprocess.Popen(
                        [str(c) for c in cmd],
                        cwd=self.cwd,
                        env=full_env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True)
                    running.append((i, proc, out))
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise StepTimeout()
                for entry in list(running):
                    i, proc, out = entry
                    if proc.poll() is None:
                        continue
                    out.seek(0)
                    results[i] = (proc.returncode, out.read())
                    out.close()
                    running.remove(entry)
                if running:
                    time.sleep(min(0.05, left))
        except BaseException:
            for i, proc, out in running:
                _kill_group(proc)
                out.seek(0)
                results[i] = (None, out.read())
                out.close()
            raise
        finally:
            if not quiet:
                self._log_results(commands, results)
        return results

    def _log_results(self, commands, results) -> None:
        with self._lock, open(self.log_path, 'a') as f:
            for cmd, res in zip(commands, results):
                if res is None:
                    continue
                f.write(f'$ {shlex.join(str(c) for c in cmd)}\n')
                f.write(res[1])
                if res[1] and not res[1].endswith('\n'):
                    f.write('\n')


# The --help of each tool given, as JSON, from one interpreter (the tools
# share their imports): each runs as ``python TOOL --help`` would.
_HELP_TEXTS = '''
import contextlib, io, json, runpy, sys
texts, tools = {}, sys.argv[1:]
for tool in tools:
    out, sys.argv = io.StringIO(), [tool, '--help']
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(tool, run_name='__main__')
        texts[tool] = out.getvalue()
    except SystemExit as e:
        texts[tool] = '' if e.code else out.getvalue()
    except Exception:
        texts[tool] = ''
print(json.dumps(texts))
'''


class _ToolHelps:
    """The ``--help`` of the tools whose options the check adapts to, read
    once when first needed, in one process (empty when a tool cannot even
    print that, so that its steps run and show why)."""

    def __init__(
            self, tools: Sequence[str], python: str, cwd: str,
            env: Mapping[str, str]):
        self._command = [python, '-c', _HELP_TEXTS, *tools]
        self._cwd = cwd
        self._env = env
        self._texts: Optional[Dict[str, str]] = None
        self._lock = threading.Lock()

    def __getitem__(self, tool: str) -> '_ToolHelp':
        return _ToolHelp(tool, self)

    def text(self, tool: str) -> str:
        with self._lock:
            if self._texts is None:
                try:
                    res = subprocess.run(
                        self._command,
                        cwd=self._cwd,
                        env=dict(self._env),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                        timeout=120)
                    self._texts = json.loads(res.stdout.splitlines()[-1])
                except (OSError, subprocess.TimeoutExpired, ValueError,
                        IndexError):
                    self._texts = {}
            return self._texts.get(tool, '')


class _ToolHelp:
    """What the ``--help`` of one tool says."""

    def __init__(self, tool: str, helps: _ToolHelps):
        self.tool = tool
        self._helps = helps

    def text(self) -> str:
        return self._helps.text(self.tool)

    def has_option(self, option: str) -> bool:
        text = self.text()
        return not text or re.search(
            re.escape(option) + r'([^-a-z_]|$)', text) is not None

    def choices(self, option: str) -> Optional[List[str]]:
        """The choices the help lists for ``option`` (None: no list)."""
        m = re.search(re.escape(option) + r' \{([^}]*)\}', self.text())
        return m.group(1).split(',') if m else None

    def dtype_args(self, want: str) -> List[str]:
        """The options that select ``want`` (``'fp16'`` or ``'bf16'``):
        ``--dtype`` with one of its choices, else (fp16) ``--amp`` or
        ``--fp16``.

        Raises:
            StepSkipped: The tool has no such option.
        """
        names = dict(
            fp16=('float16', 'fp16', 'half'), bf16=('bfloat16', 'bf16'))[want]
        if self.has_option('--dtype'):
            choices = self.choices('--dtype')
            if choices is None:
                return ['--dtype', names[0]]
            for name in names:
                if name in choices:
                    return ['--dtype', name]
            raise StepSkipped(f'{self.tool} has no --dtype option for {want}')
        if want == 'fp16':
            for option in ('--amp', '--fp16'):
                if self.has_option(option):
                    return [option]
            raise StepSkipped(
                f'{self.tool} has no option for fp16 (--dtype, --amp)')
        raise StepSkipped(f'{self.tool} has no --dtype option for {want}')


def check_arguments(args: Sequence[str], help_text: str) -> List[str]:
    """Check an argument list against a tool's ``--help``: every option is
    listed there, and the values of an option with a ``{a,b}`` list of
    choices are among them.

    Args:
        args (list[str]): The arguments (after the tool's path).
        help_text (str): The tool's ``--help`` output.

    Returns:
        list[str]: The problems (empty: accepted).
    """
    listed = set(re.findall(r'(?<![\w-])(--[A-Za-z0-9][\w-]*)', help_text))
    choices = {
        opt: values.split(',')
        for opt, values in re.findall(r'(--[\w-]+) \{([^}]*)\}', help_text)
    }
    problems, option = [], None
    for arg in args:
        if arg.startswith('--'):
            option = arg.split('=', 1)[0]
            if option not in listed:
                problems.append(f'{option} is not an option of the tool')
        elif option in choices and arg not in choices[option]:
            problems.append(
                f'{option} {arg}: not one of its choices '
                f'{{{",".join(choices[option])}}}')
    return problems


def ptxas_summary(report: str) -> str:
    """Registers, spills and stack of every sm_90 kernel, from the output of
    ``nvcc -Xptxas=-v``, as one line.

    Raises:
        StepFailed: The output has no sm_90 kernel.
    """
    kernels = len(
        re.findall(r"Compiling entry function '([^']+)' for 'sm_90'", report))
    regs = [int(x) for x in re.findall(r'Used (\d+) registers', report)]
    spills = sum(
        int(x) for x in re.findall(r'(\d+) bytes spill stores', report))
    stack = [int(x) for x in re.findall(r'(\d+) bytes stack frame', report)]
    if not kernels:
        raise StepFailed('no sm_90 kernel in the compiler report')
    return (
        f'{kernels} sm_90 kernels, at most {max(regs, default=0)} '
        f'registers, {max(stack, default=0)} bytes stack, {spills} '
        'bytes spilled')


def report_imports(gpu: bool) -> None:
    """Print the versions of the stack, the GPU and whether the extension
    has its CUDA kernels, and a ``note: ...`` line (the ``import_check``
    step runs this in a child process, with the stack the check installed).

    Args:
        gpu (bool): Fail (AssertionError) unless torch sees a CUDA device and
            the extension has its CUDA kernels.
    """
    import platform

    import mmcv
    import mmcv.ops  # noqa: F401
    import mmengine
    import mmseg
    import torch

    import lma_mmseg
    from lma_mmseg import _ext
    print('python', platform.python_version(), sys.executable)
    print(
        'torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
        torch.cuda.is_available())
    print(
        'mmcv', mmcv.__version__, 'mmengine', mmengine.__version__, 'mmseg',
        mmseg.__version__, 'lma_mmseg', lma_mmseg.__version__)
    print(
        'lma_mmseg._ext', _ext.__file__, 'with CUDA kernels:',
        _ext.with_cuda())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(
            f'GPU {p.name}: compute capability {p.major}.{p.minor}, '
            f'{p.multi_processor_count} SMs, '
            f'{p.total_memory / 2**30:.0f} GiB')
    if gpu:
        assert torch.cuda.is_available(), 'torch sees no CUDA device'
        assert _ext.with_cuda(), 'lma_mmseg._ext has no CUDA kernels'
        print(
            f'note: {torch.cuda.get_device_name(0)}, torch '
            f'{torch.__version__}, mmcv {mmcv.__version__}, mmseg '
            f'{mmseg.__version__}')
    else:
        print(
            f'note: torch {torch.__version__}, mmcv {mmcv.__version__}, '
            f'mmseg {mmseg.__version__}; lma_mmseg._ext with CUDA: '
            f'{_ext.with_cuda()}')


# What the build script asks for, as JSON: with a CPU build of torch (no
# CUDA_HOME) no CUDAExtension can be made, so its arguments are recorded.
_DESCRIBE_EXTENSION = '''
import json, runpy, sys, sysconfig
import torch.utils.cpp_extension as cpp_extension
cpp_extension.CUDAExtension = lambda name, sources, **kw: dict(
    name=name, sources=sources, **kw)
ext = runpy.run_path(sys.argv[1])['make_extension']()
if not isinstance(ext, dict):
    sys.exit(sys.argv[1] + ': make_extension() made no CUDAExtension with '
             'FORCE_CUDA=1')
ext.update(torch_include=cpp_extension.include_paths(),
           python_include=sysconfig.get_paths()['include'],
           nvcc_flags=cpp_extension.COMMON_NVCC_FLAGS)
print(json.dumps(ext))
'''
# The built module alone, with its CUDA kernels (the package's import needs
# mmseg, built beside it).
_CHECK_BUILT_EXTENSION = '''
import glob, importlib.util
path, = glob.glob('lma_mmseg/_ext*.so')
spec = importlib.util.spec_from_file_location('lma_mmseg._ext', path)
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
assert ext.with_cuda(), f'{path} was built without the CUDA kernels'
print(path, 'has the CUDA kernels')
'''


def _sanitizer_binary() -> Optional[str]:
    for path in (shutil.which('compute-sanitizer'),
                 '/usr/local/cuda/bin/compute-sanitizer',
                 '/usr/local/cuda/compute-sanitizer/compute-sanitizer'):
        if path and os.access(path, os.X_OK):
            return path
    return None


class _Table:
    """Builds the steps of one run (see :func:`build_steps`)."""

    def __init__(
            self, settings: CheckSettings, work: str, env: Mapping[str, str]):
        self.s = settings
        self.p = settings.paths
        self.py = settings.python
        self.work = work
        self.data = osp.join(work, 'data')
        self.json = osp.join(work, 'json')
        self.helps = _ToolHelps(
            (self.p.benchmark, self.p.benchmark_op), self.py, self.p.root, env)

    # -- set-up ------------------------------------------------------------
    def wheels(self) -> Step:
        whl = self.p.whl_dir

        def resolve() -> List[str]:
            return base + [
                osp.join(whl, f) for f in sorted(os.listdir(self.p.abs(whl)))
                if f.endswith('.whl')
            ]

        def action(run: StepRun, command: List[str]) -> int:
            if check_wheels(self.p.abs(whl), self.p.abs(self.p.setup_cfg),
                            self.s.versions, run.print):
                return 1
            rc, _ = run.run(command)
            if rc == 0 and self.s.gpu:
                run.print(
                    f'note: {len(command) - len(base)} wheels '
                    f'installed into {self.s.site}')
            elif rc == 0:
                run.print(
                    'note: consistent; pip would install every wheel '
                    'for CPython 3.12')
            return rc

        if self.s.gpu:
            base = [
                self.py, '-m', 'pip', 'install', '-q', '--no-index',
                '--no-deps', '--no-compile', '--no-cache-dir', '--upgrade',
                '--target', self.s.site
            ]
            checks = (
                'the carried wheels are consistent; installs them '
                f'into {self.s.site}')
        else:
            base = [
                self.py, '-m', 'pip', 'install', '--dry-run', '--no-index',
                '--no-deps', '--only-binary=:all:', *PIP_TARGET_ARGS,
                '--target',
                osp.join(self.work, 'pip-dry-run')
            ]
            checks = (
                'the carried wheels are consistent and pip would '
                'install them for CPython 3.12 (nothing installed)')
        command = base + [osp.join(whl, '*.whl')]
        return Step(
            'wheels', checks, 120, command, resolve=resolve, action=action)

    def build_mmcv(self) -> Step:
        version = self.s.versions.mmcv
        sdist = osp.join(self.p.whl_dir, f'mmcv-{version}.tar.gz')
        # CPU ops only: with CUDA hidden mmcv's setup.py builds no CUDA
        # kernels (this package's models need none of mmcv's; mmseg needs
        # mmcv.ops). -g0: no debug information, a third less compile time.
        mmcv_jobs = max(1, self.s.jobs * 3 // 4)
        env = dict(
            CUDA_VISIBLE_DEVICES='',
            MMCV_WITH_OPS='1',
            FORCE_CUDA='0',
            MAX_JOBS=str(mmcv_jobs),
            CFLAGS=(os.environ.get('CFLAGS', '') + ' -g0').strip())
        command = [
            self.py, '-m', 'pip', 'install', '--no-index', '--no-deps',
            '--no-build-isolation', '--no-cache-dir', '--upgrade', '--target',
            self.s.site, sdist
        ]

        def action(run: StepRun, command: List[str]) -> int:
            path = self.p.abs(sdist)
            if not osp.isfile(path):
                raise StepFailed(f'no {sdist} (run make gpu-wheels)')
            with tarfile.open(path) as t:
                if f'mmcv-{version}/setup.py' not in t.getnames():
                    raise StepFailed(f'{sdist} has no mmcv-{version}/setup.py')
            if not self.s.gpu:
                run.print(
                    f'note: {sdist} present; its ops are built on the '
                    'GPU machine')
                return 0
            rc, _ = run.run(command)
            if rc:
                return rc
            rc, _ = run.run(
                [
                    self.py, '-c', 'import mmcv, mmcv.ops\n'
                    "print('note: mmcv', mmcv.__version__, 'with ops, CPU "
                    "build')"
                ])
            return rc

        return Step(
            'build_mmcv',
            'the mmcv sdist builds its CPU ops against this torch '
            '(dry run: the sdist is there and has a setup.py)',
            360 if self.s.gpu else 60,
            command,
            action=action,
            env=env if self.s.gpu else {})

    def build_ext(self) -> Step:
        if self.s.gpu:
            return self._build_ext_gpu()
        return self._compile_check()

    def _build_ext_gpu(self) -> Step:
        ext_jobs = max(1, self.s.jobs - max(1, self.s.jobs * 3 // 4))
        # NVCC_APPEND_FLAGS: nvcc's own variable; the resource report of
        # every kernel lands in the build log.
        env = dict(
            FORCE_CUDA='1',
            TORCH_CUDA_ARCH_LIST='9.0',
            MAX_JOBS=str(ext_jobs),
            NVCC_APPEND_FLAGS='-Xptxas=-v')
        command = [self.py, self.p.setup_py, 'build_ext', '--inplace']

        def action(run: StepRun, command: List[str]) -> int:
            rc, out = run.run(command)
            if rc:
                return rc
            rc, _ = run.run([self.py, '-c', _CHECK_BUILT_EXTENSION])
            if rc:
                return rc
            try:
                run.print('note:', ptxas_summary(out))
            except StepFailed:
                run.print('note: built; no resource report in the log')
            return 0

        return Step(
            'build_ext',
            'lma_mmseg._ext builds in place with its CUDA kernels '
            'for sm_90 (registers and spills in the note)',
            300,
            command,
            action=action,
            env=env)

    def _compile_check(self) -> Step:
        """Compile-only check of the CUDA build on a machine without a GPU:
        every .cu source of the build script's extension with nvcc for sm_90
        and its flags (device code, ``-cubin``: the front end checks the host
        code too), and the C++ sources that call the CUDA entry points in a
        CUDA build (under ``#ifdef WITH_CUDA``), syntax only; two at a
        time."""
        command = [
            'nvcc', '-cubin', '-gencode=arch=compute_90,code=sm_90',
            '-Xptxas=-v', '<the .cu sources of make_extension()>'
        ]

        def action(run: StepRun, command: List[str]) -> int:
            rc, out = run.run(
                [self.py, '-c', _DESCRIBE_EXTENSION, self.p.setup_py],
                env=dict(FORCE_CUDA='1'),
                quiet=True)
            if rc:
                run.print(out)
                raise StepFailed(
                    f'{self.p.setup_py}: make_extension() '
                    f'failed (exit {rc})')
            ext = json.loads(out.strip().splitlines()[-1])
            includes = [f'-I{d}' for d in ext['include_dirs']]
            for d in ext['torch_include'] + [ext['python_include']]:
                includes += ['-isystem', d]
            defines = [
                f'-D{k}' if v is None else f'-D{k}={v}'
                for k, v in ext['define_macros']
            ] + [
                '-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE',
                '-DTORCH_API_INCLUDE_EXTENSION_H',
                '-DTORCH_EXTENSION_NAME=_ext'
            ]
            flags = ext['extra_compile_args']
            commands = []
            for src in ext['sources']:
                if src.endswith('.cu'):
                    cubin = osp.join(run.work, osp.basename(src) + '.cubin')
                    commands.append(
                        [
                            'nvcc', '-cubin', src, '-o', cubin,
                            '-gencode=arch=compute_90,code=sm_90', '-Xptxas=-v'
                        ] + ext['nvcc_flags'] + flags['nvcc'] + includes +
                        defines)
                else:
                    with open(self.p.abs(src)) as f:
                        calls_cuda = re.search(
                            r'#ifdef WITH_CUDA\b[^#]*\w+_cuda\(', f.read())
                    if calls_cuda:
                        commands.append(
                            ['c++', '-fsyntax-only', src] + flags['cxx'] +
                            includes + defines)
            if not any(c[0] == 'nvcc' for c in commands):
                raise StepFailed(
                    f'{self.p.setup_py}: the CUDA extension has '
                    'no .cu source')
            results = run.run_all(commands, jobs=2)
            report = ''.join(out for _, out in results)
            # the source is the third word of both command lines
            failed = [c[2] for c, (rc, _) in zip(commands, results) if rc]
            run.print(
                '\n'.join(
                    re.sub(r'^ptxas info *: ', '', line)
                    for line in report.splitlines() if re.search(
                        r'Compiling entry|Used \d+ registers|'
                        r'spill stores', line)))
            if failed:
                raise StepFailed(f'does not compile: {" ".join(failed)}')
            run.print('note:', ptxas_summary(report))
            return 0

        return Step(
            'build_ext', 'the CUDA sources compile for sm_90 (nvcc -cubin, no '
            'host object) and the C++ sources that call them '
            '(syntax only); registers and spills in the note',
            300,
            command,
            action=action)

    # -- data and imports ---------------------------------------------------
    def make_data(self) -> Step:
        if self.s.gpu:
            size, train = ['512', '1024'], '8'
        else:
            size, train = ['64', '128'], '1'
        return Step(
            'make_data',
            f'synthetic Cityscapes-layout video at {"x".join(size)} '
            'for the training step',
            120, [
                self.py, self.p.make_demo_data, '--out', self.data, '--size',
                *size, '--num-train', train, '--num-val', '1', '--num-test',
                '0', '--frames', 'memory'
            ],
            note_re='key-frame pixels')

    def import_check(self) -> Step:
        command = [
            self.py, '-c', 'from lma_mmseg.benchmarks.gpu_check import '
            f'report_imports; report_imports(gpu={self.s.gpu})'
        ]

        def action(run: StepRun, command: List[str]) -> int:
            if self.s.gpu:
                # the machine first; the imports last, so that their error
                # is the note of a failure
                if shutil.which('nvidia-smi'):
                    run.run(['nvidia-smi'])
                for tool, lines in ((shutil.which('nvcc'), slice(-2, None)),
                                    (_sanitizer_binary(), slice(0, 2))):
                    if tool:
                        _, out = run.run([tool, '--version'], quiet=True)
                        run.print('\n'.join(out.splitlines()[lines]))
            return run.run(command)[0]

        return Step(
            'import_check',
            'versions of the stack, the GPU, the extension with its '
            'CUDA kernels',
            120,
            command,
            action=action)

    # -- correctness ---------------------------------------------------------
    def pytest_cuda(self) -> Step:
        if self.s.gpu:
            return Step(
                'pytest_cuda',
                'the CUDA tests pass',
                240, [
                    self.py, '-m', 'pytest', '-m', 'cuda', '-q', '-p',
                    'no:cacheprovider', self.p.tests
                ],
                note_re=' (passed|failed|error)')
        # collection only: no assertion to rewrite (a third less time)
        return Step(
            'pytest_cuda',
            'the CUDA tests are collected',
            120, [
                self.py, '-m', 'pytest', '-m', 'cuda', '--collect-only', '-q',
                '--assert=plain', '-p', 'no:cacheprovider', self.p.tests
            ],
            note_re='tests? collected')

    def sanitizers(self) -> List[Step]:
        pytest = [
            self.py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-m',
            'cuda', self.p.cuda_tests, '-k', SANITIZER_SELECTION
        ]
        if not self.s.gpu:

            def collect(run: StepRun, command: List[str]) -> int:
                rc, out = run.run(command)
                m = re.search(r'(\d+)(/\d+)? tests? collected', out)
                if rc == 0 and m:
                    run.print(
                        f'note: the selection collects {m.group(1)} '
                        'tests for memcheck, racecheck and synccheck')
                return rc

            return [
                Step(
                    'sanitizer',
                    "compute-sanitizer's selection of the CUDA op tests is "
                    'collected',
                    120,
                    pytest[:3] + ['--collect-only', '--assert=plain'] +
                    pytest[3:],
                    action=collect)
            ]
        binary = _sanitizer_binary()
        steps = []
        for tool in SANITIZER_TOOLS:

            def action(run: StepRun, command: List[str], tool=tool) -> int:
                if binary is None:
                    raise StepFailed('compute-sanitizer not found')
                rc, out = run.run(command)
                summary = [
                    line for line in out.splitlines()
                    if re.search('ERROR SUMMARY|RACECHECK SUMMARY', line)
                ]
                last = re.sub(r'^=* *', '', summary[-1]) if summary else ''
                run.print(f'note: {tool}: {last}')
                return rc

            # without the caching allocator every tensor is its own
            # allocation, so memcheck sees accesses past its end
            env = dict(PYTORCH_NO_CUDA_MEMORY_CACHING='1'
                       ) if tool == 'memcheck' else {}
            steps.append(
                Step(
                    f'sanitizer_{tool}',
                    f'compute-sanitizer {tool} finds nothing in small cases '
                    'of the CUDA op tests',
                    180,
                    [
                        binary or 'compute-sanitizer', '--tool', tool,
                        '--error-exitcode', '1'
                    ] + pytest[:-2] + ['-x'] + pytest[-2:],
                    action=action,
                    env=env))
        return steps

    def train_amp(self) -> Step:
        opts = [
            'model.decode_head.norm_cfg.type=BN',
            'model.neck.fusion.norm_cfg.type=BN', 'load_from=None',
            f'train_dataloader.dataset.data_root={self.data}',
            f'val_dataloader.dataset.data_root={self.data}',
            f'test_dataloader.dataset.data_root={self.data}',
            'train_cfg.val_begin=1000000',
            'default_hooks.checkpoint.interval=1000000',
            'default_hooks.checkpoint.save_last=False'
        ]
        if self.s.gpu:
            iters, extra = 20, ['--amp']
            opts += [
                'train_dataloader.batch_size=4',
                'train_dataloader.num_workers=8', 'train_cfg.max_iters=20',
                'default_hooks.logger.interval=5'
            ]
            checks = '20 iterations of AMP training of LMA-ERFNet at 512x1024'
        else:
            # AmpOptimWrapper needs a GPU: the dry run trains in float32, one
            # iteration on 64x128 crops.
            iters, extra = 1, []
            opts += [
                'train_dataloader.batch_size=1',
                'train_dataloader.num_workers=1', 'train_cfg.max_iters=1',
                'default_hooks.logger.interval=1',
                'model.data_preprocessor.size=(64,128)',
                'train_dataloader.dataset.pipeline.1.transforms.0.scale='
                '(256,128)',
                'train_dataloader.dataset.pipeline.1.transforms.1.crop_size='
                '(64,128)'
            ]
            checks = 'one float32 iteration of the training command'
        command = [
            self.py, self.p.train, self.p.lma_config, *extra, '--work-dir',
            osp.join(self.work, 'train'), '--cfg-options', *opts
        ]

        def action(run: StepRun, command: List[str]) -> int:
            rc, out = run.run(command)
            if rc:
                return rc
            done = f'Iter(train) [{iters}/{iters}]'
            if done not in out:
                raise StepFailed(f'the log has no {done} line')
            if re.search(r'Iter\(train\).* loss: (nan|inf)', out):
                raise StepFailed('the loss is not finite')
            line = out[out.index(done):].splitlines()[0]
            run.print('note:', re.sub(' +', ' ', line)[:160])
            return 0

        return Step(
            'train_amp',
            checks,
            240 if self.s.gpu else 300,
            command,
            action=action)

    # -- timings -------------------------------------------------------------
    def _args_only(
        self,
        tool: str,
        why: str = 'the CPU runs float32 only'
    ) -> Callable[[StepRun, List[str]], int]:
        """The dry run's check of a command line that cannot run on the CPU
        (half precision: the CPU kernels are float32; compiled: minutes of
        compiling): its arguments against the tool's ``--help``."""

        def action(run: StepRun, command: List[str]) -> int:
            text = self.helps[tool].text()
            if not text:
                raise StepFailed(f'{tool} --help printed nothing')
            problems = check_arguments(command[command.index(tool) + 1:], text)
            for problem in problems:
                run.print(f'error: {problem}')
            if problems:
                raise StepFailed(
                    f'{len(problems)} arguments not accepted by '
                    f'{tool}')
            run.print(f'note: arguments accepted by {tool} --help ({why})')
            return 0

        return action

    def benchmark_op(self) -> List[Step]:
        tool = self.p.benchmark_op
        if self.s.gpu:
            args = [
                '--device', 'cuda', '--shapes', 'erfnet', 'pspnet',
                '--repeats', '50', '--warmup', '5'
            ]
        else:
            args = [
                '--device', 'cpu', '--quick', '--shapes', 'erfnet',
                '--threads', '1', '--repeats', '1', '--ref-repeats', '1',
                '--warmup', '0'
            ]
        base = [self.py, tool] + args
        steps, steps_half = [], []
        for dtype in ('fp32', 'fp16', 'bf16'):
            out = ['--out', osp.join(self.json, f'benchmark_op_{dtype}.json')]

            def resolve(dtype=dtype, out=out) -> List[str]:
                if dtype == 'fp32':
                    return base + out
                return base + self.helps[tool].dtype_args(dtype) + out

            half = dtype != 'fp32' and not self.s.gpu
            (steps if dtype == 'fp32' else steps_half).append(
                Step(
                    f'benchmark_op_{dtype}',
                    f'the op and its default peers timed in {dtype}' +
                    (' (dry run: the arguments)' if half else ''),
                    150,
                    base + out,
                    resolve=resolve,
                    action=self._args_only(tool) if half else None,
                    note_re='fused forward =|^note: '))
        steps += [self._peers(tool, base)] + steps_half
        return steps

    def _peers(self, tool: str, base: List[str]) -> Step:

        def resolve_peers() -> List[str]:
            choices = self.helps[tool].choices('--methods') or []
            peers = [m for m in PEER_METHODS if m in choices]
            methods = (
                ['--methods', 'fused', 'unfused', *peers] if set(peers) -
                {'reference'} else [])
            return base + methods + [
                '--out',
                osp.join(self.json, 'benchmark_op_peers.json')
            ]

        return Step(
            'benchmark_op_peers',
            'the op against its peers (unfold reference, sdpa with a '
            'dense neighbourhood mask, FlexAttention), each checked '
            'against the op first, float32; the default methods where '
            'the tool lists none of these' + (
                '' if self.s.gpu else ' (dry run: the arguments; '
                'FlexAttention compiles for tens of seconds on a CPU)'),
            180,
            base + ['--methods', 'fused', 'unfused', *PEER_METHODS],
            resolve=resolve_peers,
            action=None if self.s.gpu else self._args_only(
                tool, 'FlexAttention compiles: GPU only'),
            note_re='fused forward =|^note: ')

    def benchmark(self) -> List[Step]:
        tool = self.p.benchmark
        help_ = self.helps[tool]
        if self.s.gpu:
            shapes = [('512', '1024'), ('1024', '2048')]
            args = ['--device', 'cuda', '--frames', '200', '--warmup', '20']
        else:
            shapes = [('512', '1024')]
            args = [
                '--device', 'cpu', '--frames', '2', '--warmup', '1',
                '--threads', '1'
            ]
        steps = []
        for mode in ('eager', 'compile'):
            for shape in shapes:
                for dtype in ('fp32', 'fp16'):
                    key = f'{"x".join(shape)}_{dtype}_{mode}'
                    size = list(shape) if self.s.gpu else ['64', '128']
                    command = [
                        self.py, tool, self.p.lma_config, '--baseline',
                        self.p.erfnet_config, '--modes', 'streaming',
                        '--shape', *size, *args, '--no-flops', '--no-progress'
                    ]
                    out = ['--out', osp.join(self.json, f'bench_{key}.json')]

                    def resolve(
                            command=command,
                            dtype=dtype,
                            mode=mode,
                            out=out) -> List[str]:
                        extra = [] if dtype == 'fp32' else help_.dtype_args(
                            dtype)
                        if mode == 'compile':
                            if not help_.has_option('--compile'):
                                raise StepSkipped(
                                    f'{tool} has no --compile option')
                            extra.append('--compile')
                        return command + extra + out

                    what = (
                        f'LMA-ERFNet streaming against ERFNet, '
                        f'interleaved, at {"x".join(shape)}, {dtype}, '
                        f'{mode}')
                    action = None
                    if not self.s.gpu and mode == 'compile':
                        # compiling the models takes minutes on a CPU
                        action = self._args_only(tool, 'compiled: GPU only')
                        what += ' (dry run: the arguments)'
                    elif not self.s.gpu and dtype != 'fp32':
                        action = self._args_only(tool)
                        what += ' (dry run: the arguments)'
                    elif not self.s.gpu:
                        what += ' (dry run: 2 frames at 64x128)'
                    steps.append(
                        Step(
                            f'bench_{key}',
                            what,
                            240 if mode == 'compile' else 120,
                            command + out,
                            resolve=resolve,
                            action=action,
                            note_re='overhead of|^note: '))
        return steps


def build_steps(settings: CheckSettings, work: str,
                env: Mapping[str, str]) -> List[List[List[Step]]]:
    """The check's table, in stages.

    Args:
        settings (CheckSettings): The run.
        work (str): Its work folder (data, raw results, scratch).
        env (dict): The environment of its commands.

    Returns:
        list[list[list[Step]]]: Stages in order; a stage is a list of lanes
        that run side by side, a lane a list of steps run one after the
        other.
    """
    t = _Table(settings, work, env)
    gpu = settings.gpu
    whl = settings.paths.abs(settings.paths.whl_dir)
    setup = [t.wheels(), t.build_mmcv()]
    if not gpu and not (osp.isdir(whl) and any(f.endswith('.whl')
                                               for f in os.listdir(whl))):
        for step in setup:
            step.skip = (
                f'no {settings.paths.whl_dir}/ (make gpu-wheels '
                'downloads it)')
    build_ext = t.build_ext()
    if not gpu and shutil.which('nvcc') is None:
        build_ext.skip = 'nvcc not found: no compile check of the CUDA code'
    prepare = [t.make_data(), t.import_check()]
    correctness = [t.pytest_cuda(), *t.sanitizers(), t.train_amp()]
    timings = t.benchmark_op() + t.benchmark()
    if gpu:
        # the builds side by side, the correctness steps side by side, the
        # timings alone and last
        return [
            [[setup[0]]], [[setup[1]], [build_ext]], [prepare],
            [[s] for s in correctness]
        ] + [[[s]] for s in timings]
    # two lanes of about the same length: the compile and the test
    # collections beside the rest
    return [
        [
            [build_ext] + correctness[:-1],
            setup + prepare + correctness[-1:] + timings
        ]
    ]


def describe_steps(paths: CheckPaths) -> str:
    """The steps of both modes, one line each (name: what it checks), for
    ``--help``."""
    lines = []
    for mode in MODES:
        settings = CheckSettings(paths, out_dir='.', mode=mode)
        lines.append(
            'on the GPU machine:' if mode ==
            'gpu' else 'with --dry-run (on a CPU machine):')
        for stage in build_steps(settings, '<work>', {}):
            for lane in stage:
                for step in lane:
                    lines.append(f'  {step.name:28s} {step.checks}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------
def _figures(bench: dict, ops: dict) -> dict:
    """The summary's figures, read off the benchmarks' JSON."""
    figures = {}
    for key, res in bench.items():
        try:
            med = {
                (r['role'], r['mode']): r['median_ms']
                for r in res['results']
            }
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
    for key, res in ops.items():
        try:
            for r in res.get('results', []):
                entry = {}
                for part in ('forward', 'forward_backward'):
                    if isinstance(
                            r.get(part),
                            dict) and r[part].get('median_s') is not None:
                        entry[f'{part}_ms'] = round(
                            1e3 * r[part]['median_s'], 4)
                if entry:
                    figures[f'benchmark_op/{key}/{r.get("device")}/'
                            f'{r.get("shape")}/{r.get("method")}'] = entry
            if 'ratios' in res:
                figures[f'benchmark_op/{key}/ratios'] = res['ratios']
        except (AttributeError, TypeError) as e:
            figures[f'benchmark_op/{key}'] = dict(
                error=f'unexpected JSON: {e}')
    return figures


class _Runner:
    """Runs the stages, keeps the records, writes the outputs."""

    def __init__(
            self, settings: CheckSettings, work: str, env: Mapping[str, str],
            log: Callable[[str], None]):
        self.s = settings
        self.work = work
        self.env = env
        self.out_log = osp.join(settings.out_dir, 'gpu_check.log')
        self.echo = log
        self.t0 = time.time()
        self.deadline = self.t0 + settings.budget_s - BUDGET_MARGIN_S
        self.records: List[dict] = []
        self.collected = set()
        self.lock = threading.RLock()

    # -- one step ------------------------------------------------------------
    def _record(
            self, step: Step, status: str, start: float, note: str,
            command: Sequence[str]) -> None:
        secs = round(time.time() - start, 1) if status != 'skipped' else 0.0
        note = re.sub(r'\s+', ' ', note).strip()
        with self.lock:
            self.records.append(
                dict(
                    name=step.name,
                    status=status,
                    seconds=secs,
                    start=start,
                    note=note,
                    command=shlex.join(str(c) for c in command)))
            self.echo(
                f'[gpu_check] {step.name:30s} {status:8s} {secs:7.1f} '
                f's  {note[:110]}')

    def _skip(
            self,
            step: Step,
            reason: str,
            command: Sequence[str],
            log_line: Optional[str] = None) -> None:
        with open(self._log_path(step), 'w') as f:
            f.write(f'skipped: {log_line or reason}\n')
        self._record(step, 'skipped', time.time(), reason, command)

    def _log_path(self, step: Step) -> str:
        return osp.join(self.work, 'logs', f'{step.name}.log')

    def run_step(self, step: Step) -> None:
        start = time.time()
        if not self.s.selected(step.name):
            self._skip(
                step, f'not selected (GPU_CHECK_ONLY={self.s.only})',
                step.command)
            return
        if step.skip:
            self._skip(step, step.skip, step.command)
            return
        left = int(self.deadline - start)
        if left < MIN_STEP_S:
            self._skip(
                step, f'no time left in the {self.s.budget_s} s budget',
                step.command,
                f'{left} s left of the {self.s.budget_s} s budget')
            return
        limit = min(step.limit_s, left)
        command = step.command
        log_path = self._log_path(step)
        with open(log_path, 'w') as f:
            f.write(f'(time limit {limit} s)\n')
        run = StepRun(
            log_path, limit, self.s.paths.root, dict(self.env, **step.env),
            self.work)
        try:
            if step.resolve is not None:
                command = step.resolve()
            if step.action is not None:
                rc = step.action(run, list(command))
            else:
                rc = run.run(command)[0]
            status = 'ok' if rc == 0 else 'failed'
        except StepSkipped as e:
            self._skip(step, str(e), command)
            return
        except StepTimeout:
            rc, status = None, 'timeout'
        except StepFailed as e:
            run.print(str(e))
            rc, status = 1, 'failed'
        except Exception as e:  # noqa: BLE001  (recorded, the next step runs)
            run.print(traceback.format_exc().rstrip())
            run.print(f'{type(e).__name__}: {e}')
            rc, status = 1, 'failed'
        with open(log_path) as f:
            lines = f.read().splitlines()
        notes = [line for line in lines if re.search(step.note_re, line)]
        note = re.sub(r'^note: ', '', notes[-1]) if notes else ''
        if status == 'timeout':
            note = f'stopped after its limit of {limit} s' + (
                f'; last: {note}' if note else '')
        elif status == 'failed':
            last = [line for line in lines if line.strip()]
            note = f'exit {rc}: ' + (last[-1][:200] if last else '')
        self._record(step, status, start, note, command)

    # -- stages ---------------------------------------------------------------
    def run_lane(self, lane: List[Step]) -> None:
        for step in lane:
            self.run_step(step)
            self.collect()

    def run_stage(self, stage: List[List[Step]]) -> None:
        if len(stage) == 1:
            self.run_lane(stage[0])
            return
        errors: List[BaseException] = []

        def lane_thread(lane: List[Step]) -> None:
            try:
                self.run_lane(lane)
            except BaseException as e:  # noqa: BLE001  (raised below)
                errors.append(e)

        threads = [
            threading.Thread(target=lane_thread, args=(lane, ))
            for lane in stage
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    # -- outputs --------------------------------------------------------------
    def collect(self, final: bool = False) -> dict:
        """Append the logs of the finished steps to the run's log (in the
        order the steps started), show the end of the failed ones, rewrite
        the summary and the merged benchmark results."""
        with self.lock:
            for rec in sorted(self.records, key=lambda r: r['start']):
                if rec['name'] in self.collected:
                    continue
                self.collected.add(rec['name'])
                with open(osp.join(self.work, 'logs',
                                   f'{rec["name"]}.log')) as f:
                    text = f.read()
                with open(self.out_log, 'a') as f:
                    f.write(
                        f'\n===== {rec["name"]}: {rec["status"]} '
                        f'{rec["seconds"]}s =====\n{text}')
                if rec['status'] in ('failed', 'timeout'):
                    tail = '\n'.join(text.splitlines()[-25:])
                    self.echo(
                        f'----- end of the {rec["name"]} log -----\n'
                        f'{tail}\n-----')
            return self.write_summary(final)

    def _load_runs(self, prefix: str) -> dict:
        runs = {}
        folder = osp.join(self.work, 'json')
        for fname in sorted(os.listdir(folder)):
            if not (fname.startswith(prefix) and fname.endswith('.json')):
                continue
            key = fname[len(prefix):-len('.json')]
            try:
                with open(osp.join(folder, fname)) as f:
                    runs[key] = json.load(f)
            except (OSError, ValueError) as e:
                runs[key] = dict(error=f'unreadable: {e}')
        return runs

    def write_summary(self, final: bool) -> dict:
        out_dir = self.s.out_dir
        bench = self._load_runs('bench_')
        ops = self._load_runs('benchmark_op_')
        if bench:
            atomic_write_json(
                osp.join(out_dir, 'benchmark.json'),
                dict(kind=f'{KIND}.benchmark', runs=bench),
                indent=1)
        if ops:
            atomic_write_json(
                osp.join(out_dir, 'benchmark_op.json'),
                dict(kind=f'{KIND}.benchmark_op', runs=ops),
                indent=1)
        steps = [
            dict(r, start=round(r['start'] - self.t0, 1))
            for r in sorted(self.records, key=lambda r: r['start'])
        ]
        bad = [
            s['name'] for s in steps if s['status'] in ('failed', 'timeout')
        ]
        summary = dict(
            kind=KIND,
            mode=self.s.mode,
            started=datetime.datetime.fromtimestamp(
                self.t0, datetime.timezone.utc).isoformat(timespec='seconds'),
            finished=final,
            total_s=round(time.time() - self.t0, 1),
            budget_s=self.s.budget_s,
            ok=not bad,
            failed=bad,
            skipped=[s['name'] for s in steps if s['status'] == 'skipped'],
            steps=steps,
            figures=_figures(bench, ops))
        atomic_write_json(osp.join(out_dir, 'summary.json'), summary, indent=1)
        return summary

    def final_table(self, summary: dict) -> str:
        lines = [f'\n{"step":30s} {"status":8s} {"s":>7s}  note']
        for s in summary['steps']:
            lines.append(
                f'{s["name"]:30s} {s["status"]:8s} '
                f'{s["seconds"]:7.1f}  {s["note"][:100]}')
        for key, fig in summary['figures'].items():
            if key.startswith('benchmark/') and 'error' not in fig:
                over = fig['overhead_ms']
                lines.append(
                    f'{key}: LMA-ERFNet {fig["lma_streaming_median_ms"]} ms, '
                    f'ERFNet {fig["erfnet_median_ms"]} ms, '
                    f'x{fig["overhead_ratio"]}, ' + (
                        f'{over:+} ms' if isinstance(over, (
                            int, float)) else f'{over} ms'))
        lines.append(
            f'\n{len(summary["steps"])} steps, '
            f'{len(summary["failed"])} failed or timed out, '
            f'{len(summary["skipped"])} skipped, '
            f'{summary["total_s"]} s; '
            f'{osp.join(self.s.out_dir, "summary.json")}')
        return '\n'.join(lines)


def _step_env(settings: CheckSettings) -> Dict[str, str]:
    """The environment of every step: the checkout first on PYTHONPATH (on
    the GPU machine also the folder the wheels go to), unbuffered Python
    output, and one OpenMP thread per process on a CPU machine (unless
    set)."""
    env = dict(os.environ if settings.environ is None else settings.environ)
    path = [settings.paths.root] + ([settings.site] if settings.gpu else [])
    if env.get('PYTHONPATH'):
        path.append(env['PYTHONPATH'])
    env['PYTHONPATH'] = os.pathsep.join(path)
    env['PYTHONUNBUFFERED'] = '1'
    if not settings.gpu:
        env.setdefault('OMP_NUM_THREADS', '1')
    return env


def run_check(
        settings: CheckSettings, log: Callable[[str], None] = print) -> dict:
    """Run the GPU check (or its dry run).

    Args:
        settings (CheckSettings): The run.
        log (callable): Receives the progress lines (one per step, the end of
            the log of a failed step, the final table).

    Returns:
        dict: The summary (as written to ``summary.json``); ``ok`` is false
        when a step failed or timed out.
    """
    out_dir = settings.out_dir
    os.makedirs(out_dir, exist_ok=True)
    for name in ('gpu_check.log', 'summary.json', 'benchmark.json',
                 'benchmark_op.json'):
        if osp.exists(osp.join(out_dir, name)):
            os.remove(osp.join(out_dir, name))
    work = tempfile.mkdtemp(prefix='gpu_check.')
    for sub in ('logs', 'json'):
        os.makedirs(osp.join(work, sub))
    env = _step_env(settings)
    runner = _Runner(settings, work, env, log)
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        head = [
            f'gpu_check ({settings.mode}) in {settings.paths.root}, '
            f'{now:%Y-%m-%dT%H:%M:%SZ}',
            f'python: {settings.python}; output: {out_dir}; budget '
            f'{settings.budget_s} s'
        ]
        try:
            commit = subprocess.run(
                [
                    'git', '-C', settings.paths.root, 'log', '-1',
                    '--format=commit %h %s'
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            commit = ''
        head += [commit] if commit else []
        with open(runner.out_log, 'w') as f:
            f.write('\n'.join(head) + '\n')
        for line in head:
            log(line)
        for stage in build_steps(settings, work, env):
            runner.run_stage(stage)
        summary = runner.collect(final=True)
        table = runner.final_table(summary)
        with open(runner.out_log, 'a') as f:
            f.write(table + '\n')
        log(table)
        return summary
    finally:
        if settings.keep_work:
            log(f'work folder kept: {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)
