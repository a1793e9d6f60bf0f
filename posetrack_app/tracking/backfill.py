"""Output files get a confirmed person's first frames back.

FlowTrack reports a track that starts from a weak detection only once its detections add up (confirmation, so a
bag detected once never becomes a person). A live view cannot wait, but a file can: when the track is confirmed, its
tracker hands over the poses of the frames in which it was seen before (Tracks.info[LATE_POSES]), and says from
which frame on a track not yet confirmed may still do so (Tracks.info[PENDING_SINCE]). `Backfill` holds each frame
until no such track can add to it, then releases it with those poses added; a frame is held only while a track is
pending, so the delay is the few frames a confirmation takes, and none for a tracker that reports at once.

The Tracks it releases are new objects where poses were added: what the live view was given is never changed.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Tuple

import numpy as np

from ..structures import LATE_POSES, PENDING_SINCE, Frame, Poses, Tracks


def with_late_poses(tracks: Tracks, late: Tracks) -> Tracks:
    """`tracks` plus the rows of `late` (raw keypoints, where the frame has them, are the late poses' own)."""
    poses = Poses.concatenate([tracks.poses, late.poses])
    raw = None
    if tracks.raw_keypoints is not None:
        late_raw = late.raw_keypoints if late.raw_keypoints is not None else late.poses.keypoints
        raw = np.concatenate([tracks.raw_keypoints, late_raw])
    return Tracks(np.concatenate([tracks.track_ids, late.track_ids]), poses, info=dict(tracks.info),
                  raw_keypoints=raw)


class Backfill:
    """Frames in, frames out in the same order, each with the late poses of its own (see the module docstring).

    push(frame, tracks, extra) -> the (frame, tracks, extra) now final; flush() -> the rest, at the end of a run.
    `extra` rides along untouched (the writer's fps).
    """

    def __init__(self) -> None:
        self._held: Deque[List[Any]] = deque()

    def push(self, frame: Frame, tracks: Tracks, extra: Any = None) -> List[Tuple[Frame, Tracks, Any]]:
        late = tracks.info.get(LATE_POSES)
        if late:
            for entry in self._held:
                if entry[0].index in late:
                    entry[1] = with_late_poses(entry[1], late[entry[0].index])
        self._held.append([frame, tracks, extra])
        pending_since = tracks.info.get(PENDING_SINCE)
        ready = []
        while self._held and (pending_since is None or self._held[0][0].index < pending_since):
            ready.append(tuple(self._held.popleft()))
        return ready

    def flush(self) -> List[Tuple[Frame, Tracks, Any]]:
        ready = [tuple(entry) for entry in self._held]
        self._held.clear()
        return ready
