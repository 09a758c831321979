"""``atrous predict`` on videos: clips generated with PyAV (real encode and decode), frame
folders, temporal smoothing, every model format, and bad input (one line each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from _inference_models import single_thread, small_model, write_checkpoint
from PIL import Image

from atrous import Predictor
from atrous.checkpoint import load_model
from atrous.cli import main
from atrous.inference.video import TemporalSmoothing

av = pytest.importorskip("av")

HEIGHT, WIDTH, FRAMES, FPS = 64, 96, 10, 12


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def moving_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> Iterator[np.ndarray]:
    """A gradient with a bright square and a dark bar crossing it, one step per frame."""
    y, x = np.mgrid[0:height, 0:width]
    for index in range(count):
        frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1).astype(np.uint8)
        left = (index * 7) % (width - 16)
        frame[8:24, left : left + 16] = (250, 240, 30)
        frame[height - 20 : height - 8, width - 12 - left : width - left] = (20, 30, 200)
        yield frame


def write_clip(path: Path, frames: Iterator[np.ndarray], *, fps: int = FPS, container: str = "mp4", **options) -> Path:
    """Encode ``frames`` with PyAV (H.264 unless the container needs another codec)."""
    frames = list(frames)
    height, width = frames[0].shape[:2] if frames else (HEIGHT, WIDTH)
    output = av.open(str(path), "w", format=container, options=options)
    stream = output.add_stream("mpeg4" if container == "avi" else "libx264", rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    output.start_encoding()
    for frame in frames:
        output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    output.mux(stream.encode(None))
    output.close()
    return path


def read_clip(path: Path) -> tuple[list[np.ndarray], Fraction]:
    """Every decoded RGB frame of a clip, and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], stream.average_rate


def fitted_model(steps: int = 20) -> torch.nn.Module:
    """A small model fitted for a few steps to label the moving frames (left / right
    background, square, bar): a random model labels every pixel alike, which would make
    comparing masks meaningless. Not fitted to the end, so frames still disagree a little."""
    from _inference_models import IMAGENET_MEAN, IMAGENET_STD

    model = small_model("lraspp_mobilenet_v3_small", num_classes=4)
    frames = np.stack(list(moving_frames(12)))
    target = np.where(np.arange(WIDTH) < WIDTH // 2, 0, 3)[None, None, :].repeat(12, 0).repeat(HEIGHT, 1)
    target[(frames == (250, 240, 30)).all(-1)] = 1
    target[(frames == (20, 30, 200)).all(-1)] = 2
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    images = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    labels = torch.from_numpy(target).long()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    names = ["left", "square", "bar", "right"]
    return write_checkpoint(fitted_model(), tmp_path_factory.mktemp("ckpt") / "model.pt", names)


def test_the_test_model_labels_frames_apart(checkpoint: Path) -> None:
    """What the mask comparisons below rest on: masks that differ across pixels and frames."""
    first, second = Predictor(load_model(checkpoint)).predict(list(moving_frames(2)))
    assert len(np.unique(first)) >= 3 and 0.002 < (first != second).mean() < 0.5


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_frames(FRAMES))


def predict(checkpoint: Path | str, *args: str) -> int:
    return main(["predict", "--checkpoint", str(checkpoint), *args, "--no-progress"])


def masks_of(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]


def test_clip_gives_an_overlay_of_its_size_rate_and_frames_and_the_predictors_masks(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pred"
    assert predict(checkpoint, str(clip), "--out", str(out), "--save-masks", "--batch-size", "3") == 0
    assert "10 frames" in capsys.readouterr().out
    frames, rate = read_clip(out / "clip_overlay.mp4")
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3) and rate == FPS
    names = sorted(path.name for path in (out / "clip_masks").iterdir())
    assert names == [f"{index:06d}.png" for index in range(FRAMES)]
    assert Image.open(out / "clip_masks" / "000000.png").mode == "P"
    # The masks are the still-image Predictor's on the same decoded frames (batches of 3: 3+3+3+1).
    decoded, _ = read_clip(clip)
    predictor = Predictor(load_model(checkpoint))
    for mask, frame in zip(masks_of(out / "clip_masks"), decoded, strict=True):
        np.testing.assert_array_equal(mask, predictor.predict(frame))


def test_panel_video_is_input_and_prediction_side_by_side(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pred"
    assert predict(checkpoint, str(clip), "--out", str(out), "--panel", "--alpha", "1") == 0
    panel, _ = read_clip(out / "clip_panel.mp4")
    overlay, _ = read_clip(out / "clip_overlay.mp4")
    assert len(panel) == FRAMES and panel[0].shape[1] > 2 * WIDTH and panel[0].shape[0] > HEIGHT + 20
    assert panel[0].shape[0] % 2 == 0 and panel[0].shape[1] % 2 == 0
    # The input tile holds the frame; the prediction tile, right of it, the overlay (lossy: loosely).
    decoded, _ = read_clip(clip)

    def best_match(tile: np.ndarray, columns: range) -> float:
        return min(
            np.abs(panel[3][y : y + HEIGHT, x : x + WIDTH].astype(int) - tile).mean()
            for y in range(0, 40)
            for x in columns
        )

    assert best_match(decoded[3], range(0, 20)) < 8
    assert best_match(overlay[3], range(WIDTH, panel[3].shape[1] - WIDTH + 1)) < 8


def test_a_frame_folder_as_video_in_number_order_matches_still_predict(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frames = tmp_path / "drive"
    frames.mkdir()
    for index, frame in enumerate(moving_frames(FRAMES), start=1):
        frame[:] = frame // 2 + 12 * index  # brighter frame after frame: the order shows in the video
        Image.fromarray(frame).save(frames / f"frame{index}.png")
    out = tmp_path / "pred"
    assert predict(checkpoint, str(frames), "--as-video", "--fps", "5", "--out", str(out), "--save-masks") == 0
    video, rate = read_clip(out / "drive_overlay.mp4")
    assert len(video) == FRAMES and rate == 5
    still = tmp_path / "still"
    assert predict(checkpoint, str(frames), "--out", str(still), "--workers", "0") == 0
    for index in range(1, FRAMES + 1):
        expected = np.asarray(Image.open(still / f"frame{index}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(out / "drive_masks" / f"frame{index}.png")), expected)
    plain = tmp_path / "plain"  # --alpha 0: the frames themselves, in name order (frame2 before frame10)
    assert predict(checkpoint, str(frames), "--as-video", "--alpha", "0", "--out", str(plain)) == 0
    brightness = [frame.mean() for frame in read_clip(plain / "drive_overlay.mp4")[0]]
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 80


def test_temporal_smoothing_is_the_running_average_of_probabilities(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    plain, zero, smooth = tmp_path / "plain", tmp_path / "zero", tmp_path / "smooth"
    assert predict(checkpoint, str(clip), "--out", str(plain), "--save-masks") == 0
    assert predict(checkpoint, str(clip), "--out", str(zero), "--save-masks", "--temporal", "0") == 0
    assert predict(checkpoint, str(clip), "--out", str(smooth), "--save-masks", "--temporal", "0.9") == 0
    for a, b in zip(masks_of(plain / "clip_masks"), masks_of(zero / "clip_masks"), strict=True):
        np.testing.assert_array_equal(a, b)
    decoded, _ = read_clip(clip)
    probs = Predictor(load_model(checkpoint)).predict_proba(decoded)
    state, expected = probs[0], []
    for p in probs:
        state = 0.9 * state + 0.1 * p if expected else p
        expected.append(state.argmax(0))
    smoothed = masks_of(smooth / "clip_masks")
    for mask, labels in zip(smoothed, expected, strict=True):
        assert (mask == labels).mean() > 0.999  # float32 sums in another order may flip a tie
    assert any((a != b).any() for a, b in zip(smoothed, masks_of(plain / "clip_masks")))


def test_temporal_smoothing_weights_the_past_by_alpha() -> None:
    smoothing = TemporalSmoothing(0.5)
    first, second = torch.tensor([[[1.0]], [[0.0]]]), torch.tensor([[[0.0]], [[1.0]]])
    assert torch.equal(smoothing(first), first)
    assert torch.allclose(smoothing(second), torch.tensor([[[0.5]], [[0.5]]]))
    assert torch.allclose(smoothing(second), torch.tensor([[[0.25]], [[0.75]]]))
    for alpha in (-0.1, 1.0):
        with pytest.raises(Exception, match=r"alpha in \[0, 1\)"):
            TemporalSmoothing(alpha)


def test_odd_sized_clip_keeps_its_size(checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clip = write_clip(tmp_path / "odd.mp4", moving_frames(3, height=63, width=95))
    assert predict(checkpoint, str(clip), "--out", str(tmp_path / "pred")) == 0
    frames, _ = read_clip(tmp_path / "pred" / "odd_overlay.mp4")
    assert len(frames) == 3 and frames[0].shape == (63, 95, 3)
    assert "4:4:4" in caplog.text


def test_progress_shows_frames_per_second(checkpoint: Path, clip: Path, tmp_path: Path, capsys) -> None:
    assert main(["predict", "--checkpoint", str(checkpoint), str(clip), "--out", str(tmp_path / "p")]) == 0
    assert "frame/s" in capsys.readouterr().err


def test_onnx_and_shipped_models_run_on_clips(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("onnxruntime")
    import atrous

    onnx_path = tmp_path / "model.onnx"
    size = ["--size", str(HEIGHT), str(WIDTH)]
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(onnx_path), *size]) == 0
    decoded, _ = read_clip(clip)
    for model in (str(onnx_path), "camvid"):
        out = tmp_path / Path(model).stem
        assert predict(model, str(clip), "--out", str(out), "--save-masks") == 0
        predictor = atrous.open(model).predictor()
        for mask, frame in zip(masks_of(out / "clip_masks"), decoded, strict=True):
            np.testing.assert_array_equal(mask, predictor.predict(frame))


def test_tflite_models_run_on_clips(clip: Path, tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    from _inference_models import tiny_net  # converts in seconds; its labels vary with the pixels

    import atrous
    from atrous.exporters.tflite import export_tflite

    tflite = export_tflite(tiny_net(4), tmp_path / "model.tflite", input_size=(HEIGHT, WIDTH)).path
    out = tmp_path / "pred"
    assert predict(tflite, str(clip), "--out", str(out), "--save-masks") == 0
    decoded, _ = read_clip(clip)
    predictor = atrous.open(tflite).predictor()
    for mask, frame in zip(masks_of(out / "clip_masks"), decoded, strict=True):
        np.testing.assert_array_equal(mask, predictor.predict(frame))


def _text(path: Path) -> Path:
    path.write_text("not a video, only text\n")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _truncated(path: Path) -> Path:  # an MP4 cut off before its index (moov) was written
    whole = write_clip(path.with_name("whole.mp4"), moving_frames(FRAMES, 128, 192)).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _no_frames(path: Path) -> Path:  # an AVI with a video stream and no frame
    return write_clip(path.with_suffix(".avi"), iter([]), container="avi")


def _no_video_stream(path: Path) -> Path:  # MP4 drops an empty track: streams, none of them video
    return write_clip(path, iter([]))


def _jpeg(path: Path) -> Path:
    Image.fromarray(next(moving_frames(1))).save(path, format="JPEG")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_text, "not a video FFmpeg can read (Invalid data found when processing input); it looks like text"),
        (_empty, "an empty file, not a video"),
        (_truncated, "truncated (a recording cut off before its index was written) or damaged"),
        (_no_frames, "holds no video frames; nothing was written"),
        (_no_video_stream, "no video stream"),
        (_jpeg, "a JPEG image, not a video"),
    ],
    ids=["text", "empty", "truncated", "no-frames", "no-video-stream", "jpeg"],
)
def test_bad_clips_are_one_line_and_write_no_video(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, make, message: str
) -> None:
    clip = make(tmp_path / "bad.mp4")
    out = tmp_path / "pred"
    assert predict(checkpoint, str(clip), "--out", str(out), "--save-masks") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and str(clip.name) in err
    assert not out.exists() or not any(out.iterdir())


def test_a_clip_truncated_midway_gives_its_decodable_frames_and_a_warning(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = write_clip(tmp_path / "whole.mp4", moving_frames(40, 128, 192), movflags="faststart").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])  # its index is at the front: the first frames still decode
    out = tmp_path / "pred"
    assert predict(checkpoint, str(cut), "--out", str(out), "--save-masks") == 0
    frames, _ = read_clip(out / "cut_overlay.mp4")
    assert 0 < len(frames) < 40 and len(list((out / "cut_masks").iterdir())) == len(frames)
    assert f"{len(frames)} of the 40 frames its header announces could be decoded" in caplog.text


def test_a_frame_that_cannot_be_decoded_ends_the_run_after_finalising_the_frames_before_it(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    frames = tmp_path / "drive"
    frames.mkdir()
    for index, frame in enumerate(moving_frames(6)):
        Image.fromarray(frame).save(frames / f"{index}.png")
    whole = (frames / "4.png").read_bytes()
    (frames / "4.png").write_bytes(whole[: len(whole) // 2])  # its header still reads: the size check passes
    out = tmp_path / "pred"
    assert predict(checkpoint, str(frames), "--as-video", "--out", str(out), "--batch-size", "3") == 2
    err = capsys.readouterr().err.strip()
    assert "4.png: truncated or corrupt image" in err and "the 4 frames before it are in" in err
    assert len(err.splitlines()) == 1
    assert len(read_clip(out / "drive_overlay.mp4")[0]) == 4


def test_frames_above_the_pixel_limit_are_refused_before_the_model_runs(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "pred"
    assert predict(checkpoint, str(clip), "--out", str(out), "--max-pixels", "5000") == 2
    err = capsys.readouterr().err.strip()
    assert "96x64 = 6144 pixels exceeds max_pixels=5000" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unwritable_out_and_existing_outputs(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert predict(checkpoint, str(clip), "--out", str(blocker / "pred")) == 2
    assert "cannot be created" in capsys.readouterr().err and blocker.read_text() == "keep me"
    out = tmp_path / "pred"
    assert predict(checkpoint, str(clip), "--out", str(out), "--save-masks") == 0
    before = (out / "clip_overlay.mp4").read_bytes()
    assert predict(checkpoint, str(clip), "--out", str(out), "--save-masks") == 2
    assert "pass --force" in capsys.readouterr().err and (out / "clip_overlay.mp4").read_bytes() == before
    assert predict(checkpoint, str(clip), "--out", str(out), "--save-masks", "--force", "--alpha", "1") == 0
    assert (out / "clip_overlay.mp4").read_bytes() != before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{clip}", "--temporal", "1"], "alpha in [0, 1)"),
        (["{clip}", "--save-probs"], "--save-probs is for still images"),
        (["{clip}", "--confidence=entropy"], "--confidence is for still images"),
        (["{clip}", "--fps", "10"], "--fps sets the frame rate of --as-video's videos"),
        (["{clip}", "{image}"], "predict videos and images in separate runs"),
        (["{image}", "--save-masks"], "--save-masks is for videos"),
        (["{image}", "--temporal", "0.5"], "--temporal is for videos"),
        (["{clip}", "--as-video"], "--as-video takes folders of frames"),
    ],
)
def test_options_that_do_not_fit_are_one_line(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    image = tmp_path / "photo.png"
    Image.fromarray(next(moving_frames(1))).save(image)
    argv = [arg.format(clip=clip, image=image) for arg in args]
    assert predict(checkpoint, *argv, "--out", str(tmp_path / "pred")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "pred").exists()


def test_temporal_on_a_labels_only_model_is_refused(clip: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from _inference_models import tiny_net

    from atrous.exporters import export_onnx

    labels = export_onnx(tiny_net(4), tmp_path / "labels.onnx", input_size=(HEIGHT, WIDTH), argmax=True).path
    assert predict(labels, str(clip), "--out", str(tmp_path / "pred"), "--temporal", "0.5") == 2
    err = capsys.readouterr().err.strip()
    assert "--temporal smooths class probabilities" in err and len(err.splitlines()) == 1


def test_without_pyav_one_line_says_how_to_install_it(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` meets where PyAV is not installed
    assert predict(checkpoint, str(clip), "--out", str(tmp_path / "pred")) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'atrous[video]'" in err and len(err.splitlines()) == 1


def test_ctrl_c_midway_finalises_the_frames_written(checkpoint: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long.mp4", moving_frames(3000))
    out, log = tmp_path / "pred", tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", "atrous", "predict", "--checkpoint", str(checkpoint), str(clip), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("w") as stderr:
        process = subprocess.Popen([*argv, "--save-masks", "--no-progress"], env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not (out / "long_masks").exists() or len(list((out / "long_masks").iterdir())) < 5:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no frame was written in 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 128 + signal.SIGINT
    finally:
        process.kill()
    err = log.read_text().strip()
    assert len(err.splitlines()) == 1 and "interrupted by SIGINT" in err and "finalised: it plays" in err
    written = int(err.split("SIGINT: ")[1].split()[0])
    frames, _ = read_clip(out / "long_overlay.mp4")
    assert 5 <= len(frames) == written < 3000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
