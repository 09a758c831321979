"""Regenerate the README's model table from `atrous info` (never typed by hand).

Computes what `atrous info NAME --size 512 --json --no-receptive-field` prints (the same
function, in one process) for every registered model and replaces the block between the README's `<!-- models:begin -->` and
`<!-- models:end -->` markers. Usage: `make readme-tables`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- models:begin -->", "<!-- models:end -->"


def model_rows() -> list[str]:
    import torch

    from atrous import list_models
    from atrous.cli.info import describe

    torch.set_grad_enabled(False)
    rows = [
        "| model | output stride | params | MAdds at 512×512 (21 classes) |",
        "|---|---:|---:|---:|",
    ]
    for name in list_models():
        info = describe(name, size=(512, 512), num_classes=21, with_receptive_field=False)
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
