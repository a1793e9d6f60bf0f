"""One policy for damaged frames, the same for image folders, videos and PoseTrack batch sequences.

source.damaged_frames=skip (default): the frame is left out with a warning naming the file (and the frame), counted
in the summary, and the run goes on with the frames keeping their place in the input; =stop: exit 2 at the first
one, naming it. A truncated JPEG is caught (OpenCV alone decodes it as a half-grey picture without complaint)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from faults import synthetic_video
from posetrack_app.cli import main
from posetrack_app.errors import DamagedFrameError
from posetrack_app.io.sources import list_images, read_image

SMALL = ["--set", "detector.input_size=64", "--no-progress"]


def _jpeg(width=64, height=48, seed=0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def _with_exif_thumbnail(main_jpeg: bytes, thumbnail: bytes) -> bytes:
    """`main_jpeg` with an APP1 (EXIF) segment holding a complete small JPEG, end-of-image marker included, as
    camera files carry their thumbnail."""
    payload = b"Exif\0\0" + thumbnail
    return main_jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + main_jpeg[2:]


def _png_bytes() -> bytes:
    return cv2.imencode(".png", np.full((48, 64, 3), 7, np.uint8))[1].tobytes()


@pytest.mark.parametrize("name, make, damaged", [
    ("ok.jpg", lambda: _jpeg(), False),
    ("ok_exif.jpeg", lambda: _with_exif_thumbnail(_jpeg(), _jpeg(16, 12, 1)), False),
    ("cut.jpg", lambda: _jpeg()[: len(_jpeg()) // 2], True),
    # Cut inside the main image's scan data, after the thumbnail's end marker: still truncated.
    ("cut_exif.jpg", lambda: (lambda d: d[: len(d) - 200])(_with_exif_thumbnail(_jpeg(), _jpeg(16, 12, 1))), True),
    ("empty.jpg", lambda: b"", True),
    ("text.jpg", lambda: b"not an image at all" * 10, True),
    ("ok.png", _png_bytes, False),
    ("cut.png", lambda: _png_bytes()[:40], True),
])
def test_read_image_finds_damage(tmp_path, name, make, damaged):
    path = tmp_path / name
    path.write_bytes(make())
    if damaged:
        with pytest.raises(DamagedFrameError, match=name):
            read_image(path)
    else:
        image = read_image(path)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8


def test_one_suffix_list_for_every_image_reader(tmp_path):
    for name in ("a.JPG", "b.jpeg", "c.png", "d.bmp", "e.tif", "f.tiff", "g.webp", "h.txt", "i.json"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.jpeg", "c.png", "d.bmp", "e.tif", "f.tiff",
                                                        "g.webp"]


@pytest.fixture
def folder_with_damage(tmp_path):
    """Eight frames; 000003.jpg is truncated, 000005.jpg is not an image."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        data = _jpeg(seed=i)
        if i == 3:
            data = data[: len(data) // 2]
        if i == 5:
            data = b"garbage" * 20
        (folder / f"{i:06d}.jpg").write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def damaged_video(tmp_path_factory):
    """40 frames (25 fps); a tenth of the file overwritten with seeded random bytes in the middle: the decoder
    cannot deliver frames 21-25 and resumes at frame 26 (its timestamp, 1040 ms, says so)."""
    folder = tmp_path_factory.mktemp("media")
    data = bytearray(synthetic_video(folder / "clean.mp4", 40, 160, 120).read_bytes())
    middle, size = len(data) // 2, len(data) // 10
    data[middle:middle + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    (folder / "damaged.mp4").write_bytes(bytes(data))
    clean_avi = synthetic_video(folder / "clean.avi", 40, 160, 120).read_bytes()
    (folder / "truncated.avi").write_bytes(clean_avi[: int(len(clean_avi) * 0.6)])
    return folder


def _frames_written(path):
    return [json.loads(line)["frame"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("source, expected_frames, damaged, names", [
    ("folder", [0, 1, 2, 4, 6, 7], 2, ["000003.jpg is a truncated or corrupt JPEG", "000005.jpg is corrupt or "
                                                                                     "not an image"]),
    ("damaged.mp4", list(range(21)) + list(range(26, 40)), 5, ["damaged.mp4: frames 21-25 could not be decoded"]),
    ("truncated.avi", list(range(20)), 20, ["truncated.avi ended after 20 of its 40 declared frames",
                                            "the last 20 frames count as damaged"]),
])
def test_skip_policy_leaves_damaged_frames_out_counts_and_names_them(tmp_path, capsys, caplog, folder_with_damage,
                                                                     damaged_video, source, expected_frames,
                                                                     damaged, names):
    path = folder_with_damage if source == "folder" else damaged_video / source
    out = tmp_path / "out.jsonl"
    code = main(["track", str(path), "--out-json", str(out), *SMALL])
    err = capsys.readouterr().err
    assert code == 0, err
    assert _frames_written(out) == expected_frames  # the frames keep their place in the input
    assert f"{damaged} damaged frames skipped" in err, err
    warnings = caplog.text  # the warnings (on stderr in a real run; pytest captures the log records)
    for fragment in names:
        assert fragment in warnings, warnings


@pytest.mark.parametrize("source, fragments", [
    ("folder", ["frame 3", "000003.jpg", "truncated or corrupt JPEG", "source.damaged_frames=stop"]),
    ("damaged.mp4", ["damaged.mp4: frames 21-25 could not be decoded", "source.damaged_frames=stop"]),
    ("truncated.avi", ["ended after 20 of its 40 declared frames", "source.damaged_frames=stop"]),
])
def test_stop_policy_gives_exit_2_naming_the_frame_and_no_output(tmp_path, capsys, folder_with_damage,
                                                                 damaged_video, source, fragments):
    path = folder_with_damage if source == "folder" else damaged_video / source
    out = tmp_path / "out"
    out.mkdir()
    code = main(["track", str(path), "--out-json", str(out / "o.jsonl"), "--out-video", str(out / "o.avi"), *SMALL,
                 "--set", "source.damaged_frames=stop"])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert list(out.iterdir()) == []


def test_unknown_policy_is_a_config_error(tmp_path, capsys, folder_with_damage):
    code = main(["track", str(folder_with_damage), *SMALL, "--set", "source.damaged_frames=ignore"])
    err = capsys.readouterr().err
    assert code == 2 and "source.damaged_frames must be one of skip, stop, got 'ignore'" in err, err


class _OnePersonPipeline:
    """Test double: one person (track 1) at fixed joints in every frame it is given; counts the frames it saw."""

    from posetrack_app.skeleton import POSETRACK18 as skeleton

    def __init__(self):
        self.seen = []

    def reset(self):
        self.seen = []

    def step(self, frame):
        from posetrack_app.structures import Poses, Tracks

        self.seen.append(frame.index)
        keypoints = np.stack([np.arange(17) * 2.0 + 10, np.arange(17) * 2.0 + 5], axis=1)[None].astype(np.float32)
        return Tracks(np.array([1]), Poses(keypoints, np.full((1, 17), 0.9, np.float32),
                                           np.array([[0, 0, 60, 40]], np.float32), np.array([0.9], np.float32)))


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_batch_follows_the_same_policy(tmp_path, policy):
    from faults import write_images_dataset
    from posetrack_app.batch import discover_sequences, run_batch
    from posetrack_app.config import load_config

    root = write_images_dataset(tmp_path / "ds", {"seq": 4})
    image = root / "images" / "val" / "seq" / "000002.jpg"
    image.write_bytes(image.read_bytes()[:300])
    pipeline = _OnePersonPipeline()
    report = run_batch(discover_sequences(root, "val"), tmp_path / "pred",
                       load_config(None, [f"source.damaged_frames={policy}"]), pipeline_factory=lambda cfg: pipeline)
    if policy == "stop":
        assert report.failed and "000002.jpg" in report.failed[0].message and pipeline.seen == [0, 1]
        assert not (tmp_path / "pred" / "seq.json").exists()
        return
    assert [o.status for o in report.outcomes] == ["done"] and pipeline.seen == [0, 1, 3]
    data = json.loads((tmp_path / "pred" / "seq.json").read_text())
    persons_per_image = {image["id"]: 0 for image in data["images"]}
    for annotation in data["annotations"]:
        persons_per_image[annotation["image_id"]] += 1
    assert persons_per_image == {0: 1, 1: 1, 2: 0, 3: 1}  # the damaged frame's entry is kept, empty
