"""Regenerate the generated tables of the README and the docs pages (never typed by hand).

- ``weights``: the shipped models (``atrous.shipped.weights_table_markdown``, the records
  ``atrous list --weights`` prints), in the README.
- ``models``: what `atrous info NAME --size 512 --json --no-receptive-field` prints (the
  same function, in one process) for every registered model and, below each, the
  papers' variants that are options of it (`atrous list --variants`); then MobileNet
  v1's ImageNet classifier for every width and resolution of its paper's Tables 6–7.
- ``inference``, ``train``, ``train_bf16``, ``crf``, ``camvid``, ``tflite``, ``tflite_sweep``,
  ``bf16``, ``busy``, ``threads``, ``cityscapes``: the latest ``bench/results/<name>.md``
  written by ``bench/inference.py``, ``bench/train.py`` (``--only-bf16``), ``bench/crf.py``,
  ``experiments/camvid_results.py``, ``bench/tflite.py``, ``bench/tflite_sweep.py``,
  ``bench/inference.py --only-bf16``, ``bench/busy.py``, ``bench/threads.py`` and
  ``experiments/cityscapes_results.py``, copied verbatim.

Each replaces the block between the ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
markers of the one page that has them (``PAGES``: the README links each docs page with a
one-line summary). Usage: ``make readme-tables`` or
``python bench/readme_tables.py [--only inference,crf]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RESULT_BLOCKS = (
    "inference",
    "train",
    "train_bf16",
    "crf",
    "camvid",
    "tflite",
    "tflite_sweep",
    "bf16",
    "busy",
    "threads",
    "cityscapes",
)
GENERATED_BLOCKS = ("weights", "models")
# The page that holds each block's markers.
PAGES = {
    "weights": "README.md",
    "models": "docs/models.md",
    "camvid": "docs/results.md",
    "cityscapes": "docs/results.md",
    "tflite": "docs/deploy.md",
    "tflite_sweep": "docs/deploy.md",
    "inference": "docs/benchmarks.md",
    "bf16": "docs/benchmarks.md",
    "train": "docs/benchmarks.md",
    "train_bf16": "docs/benchmarks.md",
    "crf": "docs/benchmarks.md",
    "busy": "docs/benchmarks.md",
    "threads": "docs/benchmarks.md",
}


def weights_rows() -> list[str]:
    from atrous.shipped import weights_table_markdown

    return weights_table_markdown().splitlines()


def model_rows() -> list[str]:
    import torch

    from atrous import list_models
    from atrous.complexity import model_facts
    from atrous.models import PAPER_VARIANTS, format_options

    torch.set_grad_enabled(False)
    rows = [
        "| model | options | output stride | params | MAdds at 512×512 (21 classes) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in list_models():
        for options in [{}] + [options for variant, options in PAPER_VARIANTS if variant == name]:
            info = model_facts(name, size=(512, 512), num_classes=21, options=options, with_receptive_field=False)
            rows.append(
                f"| `{name}` | {format_options(options) or ''} | {info['output_stride']} | "
                f"{info['params'] / 1e6:.2f} M | {info['madds'] / 1e9:.2f} G |"
            )
            print(rows[-1], file=sys.stderr)
    return rows + ["", *mobilenet_v1_rows()]


def mobilenet_v1_rows() -> list[str]:
    """MobileNet v1's ImageNet classifier (1000 classes) at every α and resolution, beside the paper."""
    from atrous.backbones.mobilenet_v1 import PAPER_MADDS_BY_RESOLUTION, PAPER_TABLE_BY_WIDTH, paper_counts
    from atrous.complexity import model_facts

    rows = [
        "MobileNet v1 ImageNet classifier (`atrous info mobilenet_v1 --num-classes 1000 --option width_mult=α --size R`):",
        "",
        "| α | resolution | params | paper | MAdds | paper |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for width in PAPER_TABLE_BY_WIDTH:
        for resolution in PAPER_MADDS_BY_RESOLUTION:
            info = model_facts(
                "mobilenet_v1",
                size=(resolution, resolution),
                num_classes=1000,
                options={"width_mult": width},
                with_receptive_field=False,
            )
            params, madds, source = paper_counts(width, resolution)
            rows.append(
                f"| {width:g} | {resolution} | {info['params'] / 1e6:.2f} M | {params / 1e6:.1f} M | "
                f"{info['madds'] / 1e6:.0f} M | {madds / 1e6:.0f} M ({source}) |"
            )
            print(rows[-1], file=sys.stderr)
    return rows


def result_rows(name: str) -> list[str] | None:
    """The lines of bench/results/<name>.md without its top heading, or None if missing."""
    path = RESULTS / f"{name}.md"
    if not path.is_file():
        return None
    lines = path.read_text().strip().splitlines()
    return lines[1:] if lines and lines[0].startswith("# ") else lines


def splice(text: str, name: str, rows: list[str]) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise KeyError(f"{PAGES[name]} lacks the {begin} … {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = "\n".join(rows).strip("\n")
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    every = [*GENERATED_BLOCKS, *RESULT_BLOCKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated blocks (default: {','.join(every)})")
    args = parser.parse_args(argv)
    blocks = args.only.split(",") if args.only else every
    unknown = set(blocks) - set(every)
    if unknown:
        parser.error(f"unknown block(s) {', '.join(sorted(unknown))}")
    texts: dict[str, str] = {}
    try:
        for name in blocks:
            rows = {"weights": weights_rows, "models": model_rows}.get(name, lambda name=name: result_rows(name))()
            if rows is None:
                print(f"bench/results/{name}.md does not exist yet; its block is left as it is", file=sys.stderr)
                continue
            page = PAGES[name]
            if page.startswith("docs/"):  # links written relative to the repository root
                rows = [row.replace("](docs/", "](") for row in rows]
            texts[page] = splice(texts.get(page) or (ROOT / page).read_text(), name, rows)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return 1
    for page, text in texts.items():
        (ROOT / page).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
