"""Regenerate the generated tables of the README and the docs pages (never typed by hand).

- ``weights``: the shipped models (``atrous.shipped.weights_table_markdown``, the records
  ``atrous list --weights`` prints), in the README.
- ``models``: what `atrous info NAME --size 512 --json --no-receptive-field` prints (the
  same function, in one process) for every registered model and, below each, the
  papers' variants that are options of it (`atrous list --variants`); then MobileNet
  v1's ImageNet classifier for every width and resolution of its paper's Tables 6–7.
- ``camvid``, ``cityscapes``, ``camvid_video`` (accuracy, the same on every CPU):
  ``bench/results/<name>.md`` written by ``experiments/camvid_results.py``,
  ``experiments/cityscapes_results.py`` and ``experiments/camvid_video_temporal.py``, copied
  verbatim.
- the speed blocks (``FAMILY_BLOCKS``: the bench that writes each): every CPU family's
  ``bench/results/<family>/<name>.md`` (``bench/_family.py``), each under a heading that
  names the family, families in ``FAMILIES`` order, then a line naming the families not
  measured yet.

Each replaces the block between the ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
markers of the one page that has them (``PAGES``: the README links each docs page with a
one-line summary). Usage: ``make readme-tables`` or
``python bench/readme_tables.py [--only inference,crf]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _family import FAMILIES, family_label, family_order

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ACCURACY_BLOCKS = ("camvid", "cityscapes", "camvid_video")
# Speed blocks, one table per CPU family: the command that writes each.
FAMILY_BLOCKS = {
    "inference": "python bench/inference.py",
    "bf16": "python bench/inference.py --only-bf16",
    "mobilenet": "python bench/mobilenet.py",
    "train": "python bench/train.py",
    "train_bf16": "python bench/train.py --only-bf16",
    "crf": "python bench/crf.py",
    "busy": "python bench/busy.py",
    "threads": "python bench/threads.py",
    "tflite": "python bench/tflite.py",
    "tflite_sweep": "python bench/tflite_sweep.py",
    "video": "python bench/video.py",
}
RESULT_BLOCKS = (*ACCURACY_BLOCKS, *FAMILY_BLOCKS)
GENERATED_BLOCKS = ("weights", "models")
# The page that holds each block's markers.
PAGES = {
    "weights": "README.md",
    "models": "docs/models.md",
    "camvid": "docs/results.md",
    "cityscapes": "docs/results.md",
    "camvid_video": "docs/video.md",
    "tflite": "docs/deploy.md",
    "tflite_sweep": "docs/deploy.md",
    "inference": "docs/benchmarks.md",
    "mobilenet": "docs/benchmarks.md",
    "bf16": "docs/benchmarks.md",
    "train": "docs/benchmarks.md",
    "train_bf16": "docs/benchmarks.md",
    "crf": "docs/benchmarks.md",
    "busy": "docs/benchmarks.md",
    "threads": "docs/benchmarks.md",
    "video": "docs/benchmarks.md",
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


def result_rows(path: Path) -> list[str] | None:
    """The lines of a results file without its top heading, or None if it is missing."""
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if text.startswith("# "):
        text = text.partition("\n")[2].strip()
    return text.splitlines()


def measured_families(name: str) -> list[str]:
    """The family slugs that have ``bench/results/<family>/<name>.md``, in display order."""
    return family_order([d.name for d in RESULTS.iterdir() if d.is_dir() and (d / f"{name}.md").is_file()])


def family_rows(name: str) -> list[str]:
    """Every family's table of the speed block ``name``, each under its label, then the families missing."""
    if (RESULTS / f"{name}.md").is_file():
        raise KeyError(
            f"bench/results/{name}.md has no CPU family: move it to bench/results/<family>/{name}.md "
            "(bench/_family.py names the families)"
        )
    rows: list[str] = []
    measured = measured_families(name)
    for slug in measured:
        rows += [f"#### {family_label(slug)}", "", *(result_rows(RESULTS / slug / f"{name}.md") or []), ""]
    missing = [family_label(slug) for slug in FAMILIES if slug not in measured]
    if missing:
        rows.append(
            f"Not measured yet on: {'; '.join(missing)} (`{FAMILY_BLOCKS[name]}` on such a machine adds its table here)."
        )
    return rows


def block_rows(name: str) -> list[str] | None:
    """The generated lines of block ``name`` as its page shows them (None: an accuracy result not written yet)."""
    if name == "weights":
        rows = weights_rows()
    elif name == "models":
        rows = model_rows()
    elif name in FAMILY_BLOCKS:
        rows = family_rows(name)
    else:
        rows = result_rows(RESULTS / f"{name}.md")
    if rows is not None and PAGES[name].startswith("docs/"):  # links written relative to the repository root
        rows = [row.replace("](docs/", "](") for row in rows]
    return rows


def block_text(text: str, name: str) -> str:
    """What a page shows between block ``name``'s markers."""
    return text.split(f"<!-- {name}:begin -->\n", 1)[1].split(f"\n<!-- {name}:end -->", 1)[0]


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
        generated = {name: block_rows(name) for name in blocks}  # the slow part, before any page is read
        for name, rows in generated.items():
            if rows is None:
                print(f"bench/results/{name}.md does not exist yet; its block is left as it is", file=sys.stderr)
                continue
            page = PAGES[name]
            texts[page] = splice(texts.get(page) or (ROOT / page).read_text(), name, rows)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return 1
    for page, text in texts.items():
        (ROOT / page).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
