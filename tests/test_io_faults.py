"""Every write is checked: a full disk (a real 2 MB tmpfs) or an I/O error (a real file-size limit) gives one
error line naming the file, a non-zero exit, no file left behind and no "wrote" line."""
from __future__ import annotations

import resource
import subprocess

import pytest

from faults import cli_command, cli_env, fill_disk, small_tmpfs, synthetic_video, video_frame_count
from posetrack_app.cli import main
from posetrack_app.io.atomic import write_json_atomic
from posetrack_app.errors import OutputError
from posetrack_app.io.sinks import VideoSink

SMALL = ["--set", "detector.input_size=64", "--no-progress"]


@pytest.fixture(scope="module")
def noise_video(tmp_path_factory):
    # Random noise does not compress: ~23 kB per 320x240 frame, so a few frames fill what is left of the disk.
    return synthetic_video(tmp_path_factory.mktemp("media") / "noise.mp4", 60, 320, 240, noise=True)


@pytest.fixture
def full_disk(tmp_path):
    with small_tmpfs(tmp_path / "tmpfs", "2m") as mount:
        yield mount


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "filler.bin")


@pytest.mark.parametrize("outputs, free_bytes, failing", [
    # The encoder buffers, the disk fills mid-run: caught by the growth check or the re-read at the end.
    ({"--out-video": "o.mp4"}, 100_000, "o.mp4"),
    ({"--out-video": "o.avi"}, 100_000, "o.avi"),
    # All outputs: the first to fail is named; none is kept.
    ({"--out-video": "o.mp4", "--out-json": "o.jsonl", "--out-mot": "o.txt", "--out-posetrack": "o.json"},
     100_000, None),
    # Text outputs on a disk with no room at all: the failure shows at a flush or at the end.
    ({"--out-json": "o.jsonl"}, 0, "o.jsonl"),
    ({"--out-mot": "o.txt", "--out-posetrack": "o.json"}, 0, None),
])
def test_disk_full_gives_one_line_exit_2_and_no_file(full_disk, noise_video, capsys, outputs, free_bytes, failing):
    fill_disk(full_disk, free_bytes)
    argv = ["track", str(noise_video), *SMALL]
    for flag, name in outputs.items():
        argv += [flag, str(full_disk / name)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "wrote" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert "cannot write" in errors[0] and "nothing was written there" in errors[0], errors[0]
    assert ("disk is full" in errors[0]) or ("No space left on device" in errors[0]), errors[0]
    if failing:
        assert str(full_disk / failing) in errors[0]
    assert _leftovers(full_disk) == []  # no output, no temporary file


@pytest.mark.parametrize("frames, found_by", [
    # Fewer frames than VideoSink.GROWTH_CHECK_FRAMES: only the re-read at the end can find the full disk.
    (VideoSink.GROWTH_CHECK_FRAMES - 5, "the video is unreadable"),
])
def test_video_on_a_full_disk_found_at_the_end_says_what_to_do(full_disk, tmp_path, capsys, frames, found_by):
    """Both ways a full disk is found (growth check, re-read at the end) give the same advice."""
    clip = synthetic_video(tmp_path / "short_noise.mp4", frames, 320, 240, noise=True)
    fill_disk(full_disk, 100_000)
    code = main(["track", str(clip), "--out-video", str(full_disk / "o.mp4"), *SMALL])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert found_by in errors[0] and "disk is full" in errors[0], errors[0]
    assert "free some space or choose another location" in errors[0], errors[0]
    assert _leftovers(full_disk) == []


def test_small_video_on_a_nearly_full_disk_is_not_mistaken_for_a_full_one(full_disk, tmp_path, capsys):
    """A tiny video does not make the file grow for many frames (the encoder buffers 32 kB); with 300 kB free that
    is no failure, and the run must finish and keep the video."""
    tiny = synthetic_video(tmp_path / "tiny.mp4", 80)
    fill_disk(full_disk, 300_000)
    code = main(["track", str(tiny), "--out-video", str(full_disk / "o.mp4"), *SMALL])
    err = capsys.readouterr().err
    assert code == 0, err
    assert video_frame_count(full_disk / "o.mp4") == 80
    assert _leftovers(full_disk) == ["o.mp4"]


@pytest.mark.slow  # a real process
def test_disk_full_stderr_has_no_encoder_noise(full_disk, noise_video):
    """A real process: stderr holds our lines only (OpenCV/FFmpeg printed ~70 lines per full disk before)."""
    fill_disk(full_disk, 100_000)
    result = subprocess.run(cli_command("track", str(noise_video), "--out-video", str(full_disk / "o.mp4"),
                                        "--out-json", str(full_disk / "o.jsonl"), *SMALL),
                            env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if "error:" in line] == [lines[-1]], result.stderr
    noise = [line for line in lines if line.startswith("[") or "WARN" in line or "FFmpeg" in line]
    assert noise == [], result.stderr
    assert _leftovers(full_disk) == []


def _limit_file_size(limit_bytes):
    def apply():
        # Writes past the limit fail with EFBIG (Python ignores the SIGXFSZ that comes with them).
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("flag, name, fragment", [
    # An encoder whose writes fail for a reason other than a full disk: found by re-reading the file.
    ("--out-video", "o.mp4", "the encoder did not write every frame"),
    ("--out-json", "o.jsonl", "File too large"),
])
def test_io_error_other_than_disk_full(tmp_path, noise_video, flag, name, fragment):
    result = subprocess.run(cli_command("track", str(noise_video), flag, str(tmp_path / name), *SMALL),
                            env=cli_env(), capture_output=True, text=True, timeout=120,
                            preexec_fn=_limit_file_size(200_000 if flag == "--out-video" else 2_000))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and fragment in errors[0] and str(tmp_path / name) in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "wrote" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_atomic_json_on_a_full_disk_raises_output_error_and_leaves_nothing(full_disk):
    fill_disk(full_disk, 0)
    with pytest.raises(OutputError, match="cannot write .*scores.json: No space left on device"):
        write_json_atomic(full_disk / "scores.json", {"values": list(range(100_000))})
    assert _leftovers(full_disk) == []
