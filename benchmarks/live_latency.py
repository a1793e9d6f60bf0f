"""End-to-end latency of `posetrack track` on a live stream: capture -> tracked result, median and p95.

A real ffmpeg (the binary inside imageio-ffmpeg) serves PETS09 (re-encoded once to MJPEG) in a loop, in real time,
as an HTTP MJPEG stream on loopback; `posetrack track URL` runs on it for --frames frames per run, and its summary
line gives the latency (median, p95), the FPS and the frames dropped to stay live. Runs of the configurations
compared are interleaved (A, B, A, B, ...), with the load average beside each, because this machine is shared.

    python benchmarks/live_latency.py --frames 150 --rounds 2 --out benchmarks/results/live_latency_cpu.md
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "pets09_s2l1" / "vtest.avi"
# The configurations compared: a name and the --set overrides of each.
VARIANTS = {
    "default (detector.input_size auto: 960 for 768x576)": [],
    "detector.input_size=640": ["--set", "detector.input_size=640"],
    # The CPU default detects two frames at once (pipeline.detect_ahead auto = 2); this is the detector inline.
    "pipeline.detect_ahead=0": ["--set", "pipeline.detect_ahead=0"],
    "detector.input_size=640, pipeline.detect_ahead=0": ["--set", "detector.input_size=640",
                                                          "--set", "pipeline.detect_ahead=0"],
    # The CPU default looks at windows around the tracked people between whole frames (detector.schedule auto = roi).
    "detector.schedule=fixed": ["--set", "detector.schedule=fixed"],
}
SUMMARY = re.compile(r"(?P<frames>\d+) frames, .*?(?P<fps>[\d.]+) FPS end to end.*?latency capture -> result median "
                     r"(?P<median>\d+) ms, p95 (?P<p95>\d+) ms(?:, (?P<dropped>\d+) stale frames dropped)?")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def mjpeg_copy(clip: Path, folder: Path) -> Path:
    """The clip as MJPEG in AVI, so the server sends its frames as they are (no encoding while serving)."""
    out = folder / "clip_mjpeg.avi"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip),
                    "-c:v", "mjpeg", "-q:v", "3", str(out)], check=True)
    return out


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def serve(clip: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                               "-stream_loop", "-1", "-i", str(clip), "-c:v", "copy", "-f", "mpjpeg", "-listen", "1",
                               f"http://127.0.0.1:{port}/"], stdin=subprocess.DEVNULL)
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            if any(line.split()[1] == wanted and line.split()[3] == "0A" for line in table.readlines()[1:]):
                return server
        time.sleep(0.02)
    server.kill()
    raise SystemExit("the ffmpeg server did not start listening")


def measure(clip: Path, frames: int, overrides, folder: Path) -> dict:
    port = free_port()
    server = serve(clip, port)
    try:
        command = [sys.executable, "-m", "posetrack_app", "track", f"http://127.0.0.1:{port}/", "--out-json",
                   str(folder / "live.jsonl"), "--max-frames", str(frames), "--no-progress", *overrides]
        load_start = load_average()
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    finally:
        server.kill()
        server.wait()
    match = SUMMARY.search(result.stderr)
    if result.returncode != 0 or not match:
        raise SystemExit(f"posetrack track failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return dict(frames=int(match["frames"]), fps=float(match["fps"]), median_ms=int(match["median"]),
                p95_ms=int(match["p95"]), dropped=int(match["dropped"] or 0), load_start=load_start,
                load_end=load_average(), command=" ".join(command[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--frames", type=int, default=150, help="frames processed per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all variants")
    parser.add_argument("--out", type=Path, help="Markdown table to write")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the configurations to compare (default: all)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clip = mjpeg_copy(args.clip, Path(folder))
        for round_number in range(1, args.rounds + 1):
            for name in args.variants:
                overrides = VARIANTS[name]
                row = measure(clip, args.frames, overrides, Path(folder))
                row.update(variant=name, round=round_number)
                rows.append(row)
                print(f"round {round_number} {name}: {row}", flush=True)
    lines = [
        "# Live-stream latency, capture -> tracked result (`benchmarks/live_latency.py`)",
        "",
        f"Command: `python benchmarks/live_latency.py --frames {args.frames} --rounds {args.rounds}`"
        + ("" if args.variants == list(VARIANTS) else " (variants: " + "; ".join(args.variants) + ")"),
        f"({os.cpu_count()} CPU cores, shared with other work: load average at each run's start and end beside it).",
        f"Stream: {args.clip.name} re-encoded to MJPEG, served in real time at its header rate by ffmpeg "
        "(`-re -stream_loop -1 -c:v copy -f mpjpeg -listen 1`) on 127.0.0.1; `posetrack track URL --max-frames "
        f"{args.frames}`, detector keypoints (no HRNet weights), FlowTrack.",
        "",
        "| round | variant | frames | FPS | latency median ms | latency p95 ms | stale frames dropped | load start/end |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['round']} | {r['variant']} | {r['frames']} | {r['fps']:.1f} | {r['median_ms']} | "
                     f"{r['p95_ms']} | {r['dropped']} | {r['load_start']:.1f} / {r['load_end']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
