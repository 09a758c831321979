"""OpenMP wait policy per workload: idle and beside a CPU hog, in fresh processes.

libgomp (PyTorch's OpenMP on Linux) lets a thread that finished its share of a parallel
region spin before it sleeps: ``OMP_WAIT_POLICY=ACTIVE`` spins for ever, ``PASSIVE``
sleeps at once, unset spins 300 000 times (throttled to 1 000 when the team outnumbers
the CPUs), and ``GOMP_SPINCOUNT=N`` spins N times. Spinning makes back-to-back small
ops quick on an idle machine (no futex wake-up per op); beside another busy process a
spinning thread holds a core that the thread it waits for needs.

Each workload runs in a new Python process per setting (the policy is read once, when
the OpenMP runtime starts), ``--rounds`` times, the settings interleaved, first on the
idle machine and then beside a hog that keeps ``--hog-threads`` threads busy with
PyTorch matrix products (default policy, as another user's training would). Medians of
the per-process times; the spread (min–max) beside them.

Workloads (2 torch threads, what the `atrous` command uses on this machine):
- ``train``: 6 SGD steps of DeepLab v3+ MobileNet v2, batch 4 at 256², after 2 warm-up steps;
- ``predict``: Predictor on DeepLab v3 ResNet-50 at 512², 4 images after 1 warm-up;
- ``crf``: DenseCRF (5 iterations) on a 360×480 image with 11 classes, 5 calls after 2.

    python bench/threads.py [--rounds 3] [--hog-threads 2]

Writes ``bench/results/<cpu family>/threads.md`` (``bench/_family.py``: another family's table is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _family import cpu_line  # noqa: E402
from busy import clean_environment, cpu_hog, write_result  # noqa: E402

SETTINGS: dict[str, dict[str, str]] = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "unset (libgomp default)": {},
    "GOMP_SPINCOUNT=2000": {"GOMP_SPINCOUNT": "2000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
}

# Each snippet runs under the OpenMP setting its process was started with (importing atrous sets none).
WORKLOADS: dict[str, str] = {
    "train": """
import torch
from atrous import create_model
model = create_model("deeplabv3plus_mobilenet_v2", num_classes=11).train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(4, 3, 256, 256), torch.randint(0, 11, (4, 256, 256))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(2): step()
start = time.perf_counter()
for _ in range(6): step()
""",
    "predict": """
import torch
from atrous import Predictor, create_model
predictor = Predictor(create_model("deeplabv3_resnet50", num_classes=21).eval())
image = torch.randint(0, 256, (3, 512, 512), dtype=torch.uint8)
predictor.predict(image)
start = time.perf_counter()
for _ in range(4): predictor.predict(image)
""",
    "crf": """
import torch
from atrous.crf import DenseCRF
g = torch.Generator().manual_seed(0)
image = torch.randint(0, 256, (3, 360, 480), dtype=torch.uint8, generator=g)
image = torch.nn.functional.avg_pool2d(image[None].float(), 9, 1, 4)[0].to(torch.uint8)
probs = torch.softmax(torch.randn(11, 360, 480, generator=g) * 3, 0)
crf = DenseCRF(iterations=5)
with torch.no_grad():
    for _ in range(2): crf(image, probs)
    start = time.perf_counter()
    for _ in range(5): crf(image, probs)
""",
}


def run_workload(name: str, setting: dict[str, str]) -> float:
    """Seconds the workload's timed part took in a fresh process with ``setting``."""
    env = {**clean_environment(), **setting, "OMP_NUM_THREADS": "2"}
    code = "import json, time\n" + WORKLOADS[name] + "\nprint(json.dumps(time.perf_counter() - start))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


def measure(rounds: int, label: str) -> dict[tuple[str, str], list[float]]:
    times: dict[tuple[str, str], list[float]] = {}
    for round_index in range(rounds):
        for workload in WORKLOADS:
            for setting_name, setting in SETTINGS.items():
                seconds = run_workload(workload, setting)
                times.setdefault((workload, setting_name), []).append(seconds)
                print(f"{label} round {round_index + 1}: {workload:8s} {setting_name:24s} {seconds:7.2f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hog-threads", type=int, default=2)
    args = parser.parse_args()
    idle = measure(args.rounds, "idle")
    with cpu_hog(args.hog_threads):
        busy = measure(args.rounds, "busy")

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"

    lines = [
        f"OpenMP wait policy per workload, 2 torch threads, {os.cpu_count()} cores ({cpu_line()}), median of "
        f"{args.rounds} fresh processes per cell, settings interleaved; busy = beside a {args.hog_threads}-thread "
        "PyTorch hog (`python bench/threads.py`):",
        "",
        "| workload | setting | idle | busy | busy / idle | idle vs PASSIVE |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for workload in WORKLOADS:
        passive_idle = statistics.median(idle[(workload, "PASSIVE")])
        for setting_name in SETTINGS:
            i, b = idle[(workload, setting_name)], busy[(workload, setting_name)]
            lines.append(
                f"| {workload} | {setting_name} | {cell(i)} | {cell(b)} | "
                f"{statistics.median(b) / statistics.median(i):.2f}× | {passive_idle / statistics.median(i):.2f}× |"
            )
    write_result("threads", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
