"""Bad command-line input gets one clear line naming the flag and the fix (exit 2), no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from atrous.cli import main


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_a_picture_as_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    picture = tmp_path / "some.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(picture)
    assert main(["train", "--config", str(picture)]) == 2
    assert "is not a text (YAML) file" in error_line(capsys)


def test_info_size_must_be_positive(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "deeplabv3_mobilenet_v2", "--size", "-5"]) == 2
    assert "--size must be positive" in error_line(capsys)


def test_info_option_errors_name_option(capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "deeplabv3_mobilenet_v2", "--option", "noequals"]) == 2
    assert "--option expects key=value" in error_line(capsys)


@pytest.mark.parametrize("flag, value, message", [("--bilateral-compat", "inf", "must be finite"),
                                                   ("--gaussian-compat", "-1", "must be ≥ 0")])  # fmt: skip
def test_crf_compatibilities_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, message: str) -> None:
    import numpy as np

    image = tmp_path / "im.png"
    Image.new("RGB", (16, 12), (10, 200, 10)).save(image)
    probs = tmp_path / "p.npy"
    np.save(probs, np.full((3, 12, 16), 1 / 3, dtype=np.float32))
    assert main(["crf", "--image", str(image), "--probs", str(probs), "--out", str(tmp_path / "o.png"), f"{flag}={value}"]) == 2
    assert message in error_line(capsys)
