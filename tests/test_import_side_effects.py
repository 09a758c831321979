"""Nothing happens at import: `import atrous`, and importing every module of the package,
leaves the environment variables and torch's global settings as they were.

The runtime policy (OpenMP waiting, malloc) is applied only by ``atrous.configure_runtime``,
which the ``atrous`` command calls at start; that is checked here too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, logging, os, signal, sys, warnings
sys.path.insert(0, sys.argv[1])
before_atrous = dict(os.environ)
import atrous
report = {"environ_after_import_atrous": sorted(set(os.environ.items()) ^ set(before_atrous.items())),
          "torch_loaded_by_import_atrous": "torch" in sys.modules}

import numpy as np
import PIL.Image
import torch
import torch.multiprocessing


def state():
    cudnn, mkldnn, matmul = torch.backends.cudnn, torch.backends.mkldnn, torch.backends.cuda.matmul
    return {
        "environ": dict(os.environ),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "default_dtype": str(torch.get_default_dtype()),
        "default_device": str(torch.get_default_device()),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn": [cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32],
        "mkldnn": torch.backends.mkldnn.enabled,
        "matmul": [matmul.allow_tf32, matmul.allow_fp16_reduced_precision_reduction,
                   matmul.allow_bf16_reduced_precision_reduction],
        "rng": torch.get_rng_state().tolist()[:64] + [torch.initial_seed() % 2**31],
        "print_options": repr(vars(torch._tensor_str.PRINT_OPTS)),
        "sharing_strategy": torch.multiprocessing.get_sharing_strategy(),
        "numpy_errors": np.geterr(),
        "numpy_rng": np.random.get_state()[1][:8].tolist(),
        "pil_max_pixels": PIL.Image.MAX_IMAGE_PIXELS,
        "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "root_logger": [logging.getLogger().level, len(logging.getLogger().handlers)],
        "recursion_limit": sys.getrecursionlimit(),
        "warning_filters": [repr(f) for f in warnings.filters],
    }


from _walk import import_every_module

# The optional dependencies load before the baseline, so that only atrous's own effects show.
for extra in ("onnx", "onnxruntime", "onnxscript", "litert_torch", "ai_edge_litert", "ai_edge_quantizer",
              "torchvision", "yaml", "tqdm", "scipy"):
    try:
        __import__(extra)
    except ImportError:
        pass
baseline = state()
modules, skipped = import_every_module()
after = state()
report["changed"] = {key: [baseline[key], after[key]] for key in baseline if baseline[key] != after[key]}
if "environ" in report["changed"]:
    old, new = report["changed"]["environ"]
    report["changed"]["environ"] = sorted(set(old.items()) ^ set(new.items()))
report["modules"], report["skipped"] = len(modules), skipped
print(json.dumps(report))
"""


def _environment() -> dict[str, str]:
    chosen = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    return {key: value for key, value in os.environ.items() if key not in chosen} | {"OMP_NUM_THREADS": "1"}


def test_importing_atrous_and_every_module_changes_no_global_setting() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_environment(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["environ_after_import_atrous"] == []
    assert not report["torch_loaded_by_import_atrous"]
    assert report["changed"] == {}
    assert report["modules"] > 50, report  # the walk reached the whole package
    assert set(report["skipped"].values()) <= {
        "onnx",
        "onnxruntime",
        "onnxscript",
        "litert_torch",
        "ai_edge_litert",
        "ai_edge_quantizer",
        "tensorboard",
        "scipy",
    }, report["skipped"]


COMMAND = r"""
import contextlib, io, json, os, sys
from atrous.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(sys.argv[1:])
print(json.dumps({key: os.environ.get(key) for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}))
"""


def _policy_after(*argv: str, **environ: str) -> dict[str, str | None]:
    run = subprocess.run(
        [sys.executable, "-c", COMMAND, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**_environment(), **environ},
        timeout=300,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_command_chooses_openmp_waiting_per_command_unless_the_user_chose() -> None:
    """Before torch loads: training commands sleep at once (PASSIVE), the others spin
    10 000 times (unbounded spinning slows a busy machine ~10×)."""
    from atrous._openmp import INFERENCE_SPINS

    assert _policy_after("train", "--help") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
    assert _policy_after("-v", "demo", "--help") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
    assert _policy_after("bench", "--help") == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(INFERENCE_SPINS)}
    assert _policy_after("train", "--help", GOMP_SPINCOUNT="0") == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "0"}


def test_configure_runtime_says_what_it_changed() -> None:
    """torch is loaded here: too late for OpenMP, which says so; malloc and threads apply."""
    import torch

    import atrous

    threads = torch.get_num_threads()
    environ = dict(os.environ)
    try:
        settings = atrous.configure_runtime(threads=1, keep_freed_memory=False)
        assert (settings.openmp, settings.threads, settings.freed_memory_kept) == (None, 1, False)
        assert torch.get_num_threads() == 1 and dict(os.environ) == environ
    finally:
        torch.set_num_threads(threads)
    for bad, expected in (
        ({"threads": 0}, "threads must be a whole number from 1 to"),
        ({"threads": 10**6}, "got 1000000"),  # libgomp ran out of memory on the next forward
        ({"threads": "2"}, "got '2'"),
        ({"training": "no"}, "training must be True or False; got 'no'"),
    ):
        try:
            atrous.configure_runtime(**bad)
        except atrous.AtrousError as error:
            assert expected in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
    assert torch.get_num_threads() == threads


def test_the_wait_policy_is_set_only_before_torch_loads_and_only_if_the_user_did_not_choose() -> None:
    import torch  # noqa: F401  (loaded, as in any program that already uses torch)

    from atrous._openmp import INFERENCE_SPINS, set_wait_policy

    assert set_wait_policy(training=True, environ={}) is None  # torch is loaded here: too late
    environ: dict[str, str] = {}
    torch_module = sys.modules.pop("torch")  # as if torch were not loaded yet
    try:
        assert set_wait_policy(training=True, environ=environ) == ("OMP_WAIT_POLICY", "PASSIVE")
        assert set_wait_policy(training=False, environ={}) == ("GOMP_SPINCOUNT", str(INFERENCE_SPINS))
        assert set_wait_policy(training=True, environ={"GOMP_SPINCOUNT": "0"}) is None
    finally:
        sys.modules["torch"] = torch_module
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
