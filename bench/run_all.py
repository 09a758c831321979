"""Run every benchmark script in bench/ in turn (``make bench``), each in its own process.

    python bench/run_all.py [--only inference,crf] [--list]

Scripts: every ``bench/*.py`` except this one and helpers starting with ``_`` or named
``readme_tables.py``; they print their own tables (and write bench/results/). The exit
status is non-zero if any script failed; the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run_all.py", "readme_tables.py"}


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated script names without .py (default: all)")
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = parser.parse_args(argv)
    chosen = scripts()
    if args.list:
        print("\n".join(p.stem for p in chosen))
        return 0
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {p.stem for p in chosen}
        if unknown:
            parser.error(
                f"unknown benchmark(s) {', '.join(sorted(unknown))}; available: {', '.join(p.stem for p in chosen)}"
            )
        chosen = [p for p in chosen if p.stem in wanted]
    failed = []
    for script in chosen:
        print(f"== {script.name} ==", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {script.name}: exit {code}, {time.perf_counter() - start:.0f} s ==\n", flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
