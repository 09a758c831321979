"""Figures: titles fit their column (demo_out/summary.png, predict --panel)."""

from __future__ import annotations

import numpy as np

from atrous.data.figure import titled_grid


def test_long_titles_stay_inside_their_columns() -> None:
    tiles = [np.zeros((30, 60, 3), np.uint8) for _ in range(4)]
    titles = ["input", "ground truth", "prediction", "dense CRF refinement"]
    figure = titled_grid([tiles], titles)
    title_band = figure[:20]
    gap = 6
    for column in range(1, 4):  # the white gaps between columns carry no title pixels
        left = gap + column * (60 + gap) - gap
        assert (title_band[:, left : left + gap] == 255).all(), f"a title runs into column {column}"
    assert (title_band[:, gap : gap + 60] < 128).any()  # the titles are there
