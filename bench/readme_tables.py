"""Regenerate the README's model table from `atrous info` (never typed by hand).

Runs `atrous info NAME --size 512 --json --no-receptive-field` for every registered model
and replaces the block between the README's `<!-- models:begin -->` and
`<!-- models:end -->` markers. Usage: `make readme-tables`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- models:begin -->", "<!-- models:end -->"


def model_rows() -> list[str]:
    names = subprocess.run([sys.executable, "-m", "atrous", "list"], check=True, capture_output=True, text=True).stdout.split()
    rows = [
        "| model | output stride | params | MAdds at 512×512 (21 classes) |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        out = subprocess.run(
            [sys.executable, "-m", "atrous", "info", name, "--size", "512", "--json", "--no-receptive-field"],
            check=True, capture_output=True, text=True,
        ).stdout
        info = json.loads(out)
        rows.append(f"| `{name}` | {info['output_stride']} | {info['params'] / 1e6:.2f} M | {info['madds'] / 1e9:.2f} G |")
        print(rows[-1], file=sys.stderr)
    return rows


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md lacks the {BEGIN} … {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = "\n".join(model_rows())
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
