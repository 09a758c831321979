"""``atrous crf-tune``: DeepLab's cross-validation of the dense CRF on part of a validation set.

The model's probabilities are computed once per image; then every candidate setting of
the bilateral (appearance) kernel — weight w1 (``bilateral_compat``), σα
(``bilateral_sxy``) and σβ (``bilateral_srgb``) — refines them, and its mIoU is printed.
The best setting is written as JSON (``--out``), which ``atrous eval --crf-params`` and
``atrous predict --crf-params`` read; written beside the model as ``<model stem>.crf.json``
(``model.pt`` → ``model.crf.json``), ``--crf`` alone and ``atrous.open`` use it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atrous.cli._inference import add_dataset_options, add_model_options
from atrous.cli._options import non_negative_int, output_path, positive_int
from atrous.errors import ConfigError

DEFAULT_SAMPLES = 24


def _write_json_atomic(path: Path, payload: dict) -> None:
    from atrous.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(payload, indent=2))


def run(args: argparse.Namespace) -> int:
    from atrous.cli._inference import check_dataset_option, dataset_for_model
    from atrous.crf import tune
    from atrous.devices import resolve_device
    from atrous.files import check_output_file
    from atrous.inference.predictor import check_refinable
    from atrous.opening import open

    check_dataset_option(args)
    if args.search == "grid":
        given = [flag for flag, value in (("--samples", args.samples), ("--seed", args.seed)) if value is not None]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} choose{'s' if len(given) == 1 else ''} the random search's settings; "
                f"--search grid tries every point of DeepLab's 128-point grid: drop {' and '.join(given)}"
            )
    if args.out:
        check_output_file(args.out, "--out", force=args.force, inputs=[args.checkpoint], create_parent=True)
    source = open(args.checkpoint, device=args.device, output_stride=args.output_stride)
    check_refinable(source.model)  # a labels-only model: refused before any image is read
    dataset = dataset_for_model(args, source)
    if args.start >= len(dataset):
        raise ConfigError(f"--start {args.start} is past the end of the {args.split} split ({len(dataset)} images)")
    predictor = source.predictor()  # a TFLite graph: images resized to its size and back
    device = resolve_device(args.device)  # the CRF search may run on a GPU beside an exported model
    images, probs, labels = [], [], []
    for index in range(args.start, min(args.start + args.images, len(dataset))):
        image, label = dataset[index]
        images.append(image)
        probs.append(predictor.predict_proba(image))
        labels.append(label)
    if args.search == "grid":
        candidates = tune.grid()
    else:
        candidates = tune.random_samples(
            args.samples or DEFAULT_SAMPLES, seed=args.seed if args.seed is not None else 0
        )
    fixed = {**tune.DEEPLAB_FIXED, "iterations": args.iterations}
    print(
        f"tuning the CRF on {len(images)} {args.split} images, {len(candidates)} settings, {args.iterations} iterations"
    )
    results = tune.search(
        images,
        probs,
        labels,
        candidates,
        num_classes=dataset.num_classes,
        ignore_index=dataset.ignore_index,
        fixed=fixed,
        device=device,
    )
    unary = results[0][1]
    print(f"{'w1':>6} {'σα':>6} {'σβ':>6}  mIoU")
    print(f"{'(no CRF)':>20}  {100 * unary:.2f}")
    for params, miou in results[1:]:
        print(
            f"{params['bilateral_compat']:6.2f} {params['bilateral_sxy']:6.1f} {params['bilateral_srgb']:6.2f}  {100 * miou:.2f}"
        )
    params, miou = tune.best(results[1:])
    print(
        f"best: w1 {params['bilateral_compat']:.2f}, σα {params['bilateral_sxy']:.1f}, σβ {params['bilateral_srgb']:.2f}: "
        f"mIoU {100 * miou:.2f} (unary {100 * unary:.2f}, {100 * (miou - unary):+.2f})"
    )
    if not miou > unary:
        written = f"nothing written to {args.out}; " if args.out else ""
        print(
            f"atrous crf-tune: no CRF setting beat the model alone on these {len(images)} images "
            f"(best {100 * miou:.2f} vs {100 * unary:.2f} mIoU); {written}"
            "tune on more images (--images), or use the model without --crf",
            file=sys.stderr,
        )
        return 1
    if args.out:
        _write_json_atomic(
            Path(args.out),
            {
                "params": params,
                "miou": miou,
                "unary_miou": unary,
                "images": len(images),
                "split": args.split,
                "checkpoint": args.checkpoint,
            },
        )
        print(f"wrote {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crf-tune",
        help="cross-validate the dense CRF's appearance kernel on val images",
        description=__doc__.split("\n\n", 1)[1].strip(),
    )
    add_model_options(parser)
    add_dataset_options(parser, what="tune on")
    parser.add_argument(
        "--images", type=positive_int, default=20, help="images used (default 20; DeepLab used 100 of VOC val)"
    )
    parser.add_argument("--start", type=non_negative_int, default=0, help="index of the first image used (default 0)")
    parser.add_argument(
        "--search",
        choices=("random", "grid"),
        default="random",
        help="random samples from DeepLab's ranges (default) or its full 128-point grid",
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        help=f"random settings to try (default {DEFAULT_SAMPLES}; not with --search grid)",
    )
    parser.add_argument(
        "--iterations", type=positive_int, default=10, help="mean-field iterations (default 10, as DeepLab)"
    )
    parser.add_argument("--seed", type=int, help="seed of the random search (default 0; not with --search grid)")
    parser.add_argument(
        "--out", type=output_path, metavar="JSON", help="write the best setting here (for --crf-params)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    parser.set_defaults(func=run)
