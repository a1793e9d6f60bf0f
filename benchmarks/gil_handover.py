"""What a call that releases the GIL costs while another Python thread is busy: the pipeline thread gets the GIL
back only after the busy thread's switch interval (sys.getswitchinterval(), 5 ms by default).

This is the mechanism behind a pose crop stage that costs 7-14 ms on a GPU where the crop itself takes 0.6 ms
(issue 17): every host synchronisation (a pageable host-to-device copy, Event.synchronize, .cpu()) and every torch
call on a large CPU tensor releases the GIL, and the reader / writer threads are busy Python threads. Measured here
on the CPU with stand-ins for those calls; each case runs alone and next to a busy thread, interleaved.

    python benchmarks/gil_handover.py --out benchmarks/results/gil_handover.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posetrack_app.io.atomic import write_json_atomic  # noqa: E402

FRAME_HW = (720, 1280)


def cases():
    frame = np.random.default_rng(0).integers(0, 255, FRAME_HW + (3,), dtype=np.uint8)
    pinned_stand_in = np.empty_like(frame)
    return {
        # A host wait of 0.5 ms, as a synchronisation on work already done would be (it releases the GIL).
        "time.sleep(0.5 ms)": lambda: time.sleep(0.0005),
        # The frame into a staging buffer: torch releases the GIL for the copy, numpy does not.
        "torch copy of a 720p frame": lambda: torch.from_numpy(frame).clone(),
        "numpy copy of a 720p frame": lambda: np.copyto(pinned_stand_in, frame),
        # A small tensor op: kept under the GIL.
        "torch op on 3 numbers": lambda: torch.zeros(3) + 1,
    }


def per_call_ms(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1000.0 * (time.perf_counter() - started) / calls


def measure(fn, calls: int, busy: bool) -> float:
    stop = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            x += 1

    thread = threading.Thread(target=spin, daemon=True) if busy else None
    if thread:
        thread.start()
        time.sleep(0.02)   # the spinner holds the GIL in turns before the measurement starts
    try:
        return per_call_ms(fn, calls)
    finally:
        stop.set()
        if thread:
            thread.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alone/busy pairs per case (interleaved)")
    parser.add_argument("--calls", type=int, default=20, help="calls per measurement")
    parser.add_argument("--out", default="benchmarks/results/gil_handover.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = []
    for name, fn in cases().items():
        alone, busy = [], []
        for _ in range(args.rounds):
            alone.append(measure(fn, args.calls, busy=False))
            busy.append(measure(fn, args.calls, busy=True))
        row = {"case": name, "alone_ms": round(statistics.median(alone), 3),
               "with_busy_thread_ms": round(statistics.median(busy), 3)}
        rows.append(row)
        print(f"{name:28s} alone {row['alone_ms']:8.3f} ms   next to a busy Python thread "
              f"{row['with_busy_thread_ms']:8.3f} ms", flush=True)
    record = {"command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
              "switch_interval_s": sys.getswitchinterval(), "python": sys.version.split()[0],
              "torch": torch.__version__, "cpu_count": os.cpu_count(),
              "load_average_before_after": [round(x, 2) for x in load_before + os.getloadavg()],
              "note": "median per call over rounds; alone and busy interleaved", "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.out), record, indent=2)
    print(json.dumps({"load_average_before_after": record["load_average_before_after"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
