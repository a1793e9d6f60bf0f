"""FlowTrack: pose tracking by optical-flow propagation and OKS association (Xiao et al., ECCV 2018).

Shape glossary:
    N  poses of the current frame;  T  tracks alive in the tracker;  K  keypoints per person
    Keypoints are continuous image pixels [.., K, 2]; keypoint scores [.., K] in [0, 1]; boxes xyxy [.., 4].

Per frame t (the pipeline calls `propose`, merges boxes, runs the pose stage, then calls `update`):
  1. Propagate (`propose`): every track's joints at t-1 are moved into frame t by optical flow, computed once
     per frame pair (KeypointFlow) and reused by `update`. A propagated box is the extent of the propagated
     joints, enlarged (`box_enlarge_ratio`). Reported tracks are proposed as Detections whose keypoints are the
     warped joints [N, K, 3], so a person the detector missed is still estimated from the propagated box.
  2. Unify: the pipeline merges detected and propagated boxes by box NMS.
  3. Pose NMS (`update`): duplicate poses are removed by OKS-NMS, detector-backed poses first.
  4. Associate: OKS between each detector-backed pose and the flow-warped pose of every track seen in the last
     `max_lost_frames` frames (area from the warped box, growing while a track is lost); greedy matching takes
     the highest pair above `match_oks_threshold`, removes its row and column, and repeats. Detector-backed
     poses left over are matched to the remaining tracks by box IoU with the propagated box
     (`fallback_iou_threshold`; 1.0 turns it off). A pose that exists only because a track proposed its box may
     continue that track only (last stage). Unmatched detector-backed poses start new tracks.

Track states: tentative (not yet reported, needs `min_hits_to_confirm` detector-backed matches), tracked,
lost (not reported; propagated by flow or a constant-velocity Kalman filter for `max_lost_frames` so the same
id comes back), removed. A pose carried by propagation alone has its scores decayed every frame
(`propagated_score_decay`); when its pose score falls below `min_propagated_pose_score` its track is lost.

The tracker never draws and never reads files; ids come from a per-instance counter; `reset()` restarts them.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from filterpy.kalman import KalmanFilter

from ..config import FlowTrackConfig
from ..ops.boxes import box_areas, box_iou
from ..ops.oks import oks_matrix, oks_nms
from ..skeleton import Skeleton
from ..structures import Detections, Frame, Poses, Tracks
from .flow import FLOW_METHODS, KeypointFlow
from .matching import get_matcher

log = logging.getLogger(__name__)

TENTATIVE, TRACKED, LOST, REMOVED = "tentative", "tracked", "lost", "removed"
LOST_MOTIONS = ("flow_or_kalman", "kalman", "flow")
PROPAGATED_BOXES = ("joints", "shift")
SMOOTHERS = ("none", "one_euro", "kalman")

# A pose whose box has IoU at least this with a box the tracker proposed was estimated in that box: it exists
# because of propagation. An identity test (the pose stage reports the box it used), not a tuning knob.
_SAME_BOX_IOU = 0.99


def _box_center_kalman(center_xy: np.ndarray, process_noise_px: float, measurement_noise_px: float) -> KalmanFilter:
    """Constant-velocity filter on a box centre: state (x, y, vx, vy) in pixels and pixels per frame."""
    kf = KalmanFilter(dim_x=4, dim_z=2)
    kf.F = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    kf.H = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=float)
    kf.R = np.eye(2) * measurement_noise_px ** 2
    q = process_noise_px ** 2
    # Piecewise-constant white acceleration, dt = 1 frame.
    kf.Q = q * np.array([[0.25, 0, 0.5, 0], [0, 0.25, 0, 0.5], [0.5, 0, 1, 0], [0, 0.5, 0, 1]], dtype=float)
    kf.P = np.diag([measurement_noise_px ** 2, measurement_noise_px ** 2, 10.0 ** 2, 10.0 ** 2])
    kf.x = np.array([center_xy[0], center_xy[1], 0.0, 0.0], dtype=float)
    return kf


class _OneEuro:
    """One-Euro filter over all joints of one track (Casiez et al., CHI 2012): keypoints [K, 2]."""

    def __init__(self, min_cutoff_hz: float, beta: float, derivative_cutoff_hz: float):
        self.min_cutoff_hz, self.beta, self.derivative_cutoff_hz = min_cutoff_hz, beta, derivative_cutoff_hz
        self._value = None
        self._derivative = None

    @staticmethod
    def _alpha(cutoff_hz, dt_s):
        tau = 1.0 / (2.0 * np.pi * cutoff_hz)
        return 1.0 / (1.0 + tau / dt_s)

    def __call__(self, keypoints: np.ndarray, dt_s: float) -> np.ndarray:
        if self._value is None:
            self._value = keypoints.astype(np.float64)
            self._derivative = np.zeros_like(self._value)
            return keypoints.copy()
        derivative = (keypoints - self._value) / dt_s
        a_d = self._alpha(self.derivative_cutoff_hz, dt_s)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        speed = np.linalg.norm(self._derivative, axis=-1, keepdims=True)
        a = self._alpha(self.min_cutoff_hz + self.beta * speed, dt_s)
        self._value = a * keypoints + (1 - a) * self._value
        return self._value.astype(np.float32)


class _KeypointKalman:
    """Constant-velocity Kalman filter on all joints of one track (filterpy): state [2K positions, 2K velocities]."""

    def __init__(self, keypoints: np.ndarray, process_noise_px: float, measurement_noise_px: float):
        k2 = keypoints.size
        kf = KalmanFilter(dim_x=2 * k2, dim_z=k2)
        eye = np.eye(k2)
        kf.F = np.block([[eye, eye], [np.zeros_like(eye), eye]])
        kf.H = np.hstack([eye, np.zeros_like(eye)])
        kf.R = eye * measurement_noise_px ** 2
        q = process_noise_px ** 2
        kf.Q = q * np.block([[0.25 * eye, 0.5 * eye], [0.5 * eye, eye]])
        kf.P = np.block([[eye * measurement_noise_px ** 2, 0 * eye], [0 * eye, eye * 10.0 ** 2]])
        kf.x = np.concatenate([keypoints.reshape(-1), np.zeros(k2)]).astype(float)
        self.kf = kf
        self._first = True

    def __call__(self, keypoints: np.ndarray, dt_s: float) -> np.ndarray:
        if self._first:
            self._first = False
            return keypoints.copy()
        self.kf.predict()
        self.kf.update(keypoints.reshape(-1).astype(float))
        return self.kf.x[: keypoints.size].reshape(keypoints.shape).astype(np.float32)


@dataclass
class _Track:
    track_id: int
    state: str
    keypoints: np.ndarray          # [K, 2] latest estimate
    keypoint_scores: np.ndarray    # [K]
    box_xyxy: np.ndarray           # [4]
    box_score: float
    kf: KalmanFilter
    hits: int = 1
    frames_lost: int = 0
    frames_propagated: int = 0     # consecutive frames continued by propagation alone
    smoother: Optional[object] = None
    # Warped into the current frame by `_advance`:
    pred_keypoints: Optional[np.ndarray] = None
    pred_scores: Optional[np.ndarray] = None
    pred_box: Optional[np.ndarray] = None
    matched: bool = field(default=False)


def _center(box_xyxy: np.ndarray) -> np.ndarray:
    return np.array([(box_xyxy[0] + box_xyxy[2]) * 0.5, (box_xyxy[1] + box_xyxy[3]) * 0.5], dtype=np.float64)


def _pose_score(keypoint_scores: np.ndarray) -> np.ndarray:
    """[N] mean keypoint score of each pose ([N, K] in)."""
    return keypoint_scores.mean(axis=-1) if keypoint_scores.shape[-1] else np.zeros(len(keypoint_scores))


class FlowTracker:
    """Multi-person pose tracker by flow propagation and greedy OKS matching.

    propose(frame) -> Detections (propagated boxes, keypoints [N, K, 3]); update(frame, poses) -> Tracks;
    reset() at sequence boundaries. All keyword arguments are the fields of config.FlowTrackConfig (see there for
    their meaning and chosen defaults) plus `skeleton` (keypoint layout: K and OKS sigmas).
    """

    def __init__(self, *, skeleton: Skeleton, **options):
        cfg = dataclasses.replace(FlowTrackConfig(), **options)  # one set of defaults: the config's
        for name, allowed in (("flow_method", FLOW_METHODS), ("lost_track_motion", LOST_MOTIONS),
                              ("propagated_box", PROPAGATED_BOXES), ("smoothing", SMOOTHERS)):
            if getattr(cfg, name) not in allowed:
                raise ValueError(f"tracker.flow.{name}={getattr(cfg, name)!r} is not supported; "
                                 f"choose one of {', '.join(allowed)}")
        for f in dataclasses.fields(cfg):
            setattr(self, f.name, getattr(cfg, f.name))
        self.skeleton = skeleton
        self.sigmas = skeleton.sigmas
        self.flow = KeypointFlow(cfg.flow_method, downscale=cfg.flow_downscale, window_px=cfg.flow_window_px,
                                 pyramid_levels=cfg.flow_pyramid_levels, fb_max_error_px=cfg.flow_fb_max_error_px)
        self.match = get_matcher(cfg.matcher)
        self.one_euro = (cfg.one_euro_min_cutoff_hz, cfg.one_euro_beta, cfg.one_euro_derivative_cutoff_hz)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Sequence boundary: forget tracks and frames; ids restart at 1."""
        self._tracks: List[_Track] = []
        self._next_id = 1
        self.flow.reset()
        self._advanced_key = None
        self._frames_seen = 0
        self._last_timestamp_s = None
        self._dt_s = 1.0 / self.smoothing_default_fps
        self._proposal_boxes = np.zeros((0, 4), np.float32)
        self._proposal_tracks: List[_Track] = []
        self._flow_reliable_fraction = float("nan")

    @property
    def num_keypoints(self) -> int:
        return self.skeleton.num_keypoints

    # ------------------------------------------------------------- propagate
    def _advance(self, frame: Frame) -> None:
        """Warp every track into `frame` (once per frame; `propose` and `update` share the result)."""
        key = (frame.index, id(frame.image_bgr))
        if key == self._advanced_key:
            return
        self._advanced_key = key
        self._frames_seen += 1
        if self._last_timestamp_s is not None and frame.timestamp_s > self._last_timestamp_s:
            self._dt_s = frame.timestamp_s - self._last_timestamp_s
        self._last_timestamp_s = frame.timestamp_s
        self.flow.next_frame(frame.image_bgr)
        self._proposal_boxes = np.zeros((0, 4), np.float32)
        self._proposal_tracks = []
        if not self._tracks:
            return

        # One flow call for the joints of all tracks that flow moves.
        flowed_masks, starts = [], []
        for track in self._tracks:
            uses_flow = track.state != LOST or self.lost_track_motion != "kalman"
            mask = (track.keypoint_scores > self.flow_min_keypoint_score if uses_flow
                    else np.zeros(self.num_keypoints, bool))
            flowed_masks.append(mask)
            starts.append(track.keypoints[mask])
        points = np.concatenate(starts) if starts else np.zeros((0, 2), np.float32)
        result = self.flow.track(points)
        total_flowed = len(points)
        self._flow_reliable_fraction = float(result.reliable.mean()) if total_flowed else float("nan")

        offset = 0
        for track, mask in zip(self._tracks, flowed_masks):
            n = int(mask.sum())
            moved = result.points_px[offset: offset + n]
            reliable = result.reliable[offset: offset + n]
            offset += n
            track.kf.predict()
            center = _center(track.box_xyxy)
            kalman_shift = (track.kf.x[:2] - center).astype(np.float32)
            scores = track.keypoint_scores.copy()
            reliable_fraction = reliable.mean() if n else 0.0
            use_kalman = n == 0 or reliable.sum() == 0 or (
                track.state == LOST and self.lost_track_motion == "flow_or_kalman"
                and reliable_fraction < self.min_reliable_joint_fraction)
            if use_kalman:
                shift = kalman_shift
                keypoints = track.keypoints + shift
                if track.state != LOST and n:
                    scores[mask] *= self.unreliable_score_factor
            else:
                start = track.keypoints[mask]
                shift = np.median(moved[reliable] - start[reliable], axis=0).astype(np.float32)
                keypoints = track.keypoints + shift          # unflowed and unreliable joints follow the person
                flowed_index = np.flatnonzero(mask)
                keypoints[flowed_index[reliable]] = moved[reliable]
                scores[flowed_index[~reliable]] *= self.unreliable_score_factor
            track.pred_keypoints = keypoints.astype(np.float32)
            track.pred_scores = scores.astype(np.float32)
            track.pred_box = self._propagated_box(track, keypoints, mask, shift, frame)

    def _propagated_box(self, track: _Track, keypoints: np.ndarray, mask: np.ndarray, shift: np.ndarray,
                        frame: Frame) -> np.ndarray:
        if self.propagated_box == "joints" and mask.sum() >= 2:
            points = keypoints[mask]
            lo, hi = points.min(axis=0), points.max(axis=0)
            grow = (hi - lo) * self.box_enlarge_ratio * 0.5
            box = np.concatenate([lo - grow, hi + grow])
        else:
            box = track.box_xyxy + np.concatenate([shift, shift])
        return box.astype(np.float32)

    def propose(self, frame: Frame) -> Detections:
        """Propagated boxes of the reported tracks in `frame`: boxes [N, 4], decayed scores [N], warped joints
        [N, K, 3] (x, y, decayed score). Tracks whose decayed pose score is below `min_propagated_pose_score`
        propose nothing."""
        self._advance(frame)
        decay = self.propagated_score_decay
        chosen = [t for t in self._tracks if t.state == TRACKED and t.pred_keypoints is not None
                  and float(_pose_score(t.pred_scores * decay)) >= self.min_propagated_pose_score]
        self._proposal_tracks = chosen
        if not chosen:
            self._proposal_boxes = np.zeros((0, 4), np.float32)
            return Detections.empty(self.num_keypoints)
        boxes = np.stack([t.pred_box for t in chosen])
        scores = np.array([t.box_score * decay for t in chosen], np.float32)
        keypoints = np.concatenate([np.stack([t.pred_keypoints for t in chosen]),
                                    np.stack([t.pred_scores * decay for t in chosen])[..., None]], axis=2)
        self._proposal_boxes = boxes
        return Detections(boxes, scores, keypoints)

    # --------------------------------------------------------------- update
    def update(self, frame: Frame, poses: Poses) -> Tracks:
        """Associate this frame's poses (keypoints [N, K, 2]) with the tracks; returns the reported tracks."""
        if poses.num_keypoints != self.num_keypoints:
            raise ValueError(f"poses have {poses.num_keypoints} keypoints but the tracker's {self.skeleton.name} "
                             f"layout has {self.num_keypoints}: configure pose.keypoints to match")
        self._advance(frame)
        for track in self._tracks:
            track.matched = False
            if track.pred_keypoints is None:  # created in the previous update without a frame in between
                track.pred_keypoints, track.pred_scores = track.keypoints.copy(), track.keypoint_scores.copy()
                track.pred_box = track.box_xyxy.copy()

        n = len(poses)
        pose_scores = _pose_score(poses.keypoint_scores) if n else np.zeros(0)
        # Which poses exist only because this tracker proposed their box, and by which track.
        origin = np.full(n, -1, dtype=np.int64)
        if n and len(self._proposal_boxes):
            iou = box_iou(poses.boxes_xyxy, self._proposal_boxes)
            best = iou.argmax(axis=1)
            hit = iou[np.arange(n), best] >= _SAME_BOX_IOU
            origin[hit] = best[hit]
        propagated = origin >= 0
        keep = ~(propagated & (pose_scores < self.min_propagated_pose_score))
        # Pose NMS: detector-backed poses first, then by pose score.
        candidates = np.flatnonzero(keep)
        if len(candidates):
            priority = (~propagated[candidates]).astype(np.float64) * 2.0 + pose_scores[candidates]
            kept = oks_nms(poses.keypoints[candidates], poses.keypoint_scores[candidates],
                           box_areas(poses.boxes_xyxy[candidates]), priority, self.sigmas,
                           self.pose_nms_oks_threshold, self.oks_keypoint_score_threshold)
            candidates = candidates[kept]
        detected = candidates[~propagated[candidates]]
        carried = candidates[propagated[candidates]]

        assigned = {}  # pose index -> track
        # Stage 1: detector-backed poses against the flow-warped poses of all live tracks, by OKS.
        tracks = self._tracks
        if len(detected) and tracks:
            pred_kp = np.stack([t.pred_keypoints for t in tracks])
            pred_sc = np.stack([t.pred_scores for t in tracks])
            growth = np.array([1.0 + self.lost_scale_growth_per_frame * t.frames_lost for t in tracks])
            areas = box_areas(np.stack([t.pred_box for t in tracks])) * growth ** 2
            similarity = oks_matrix(poses.keypoints[detected], poses.keypoint_scores[detected], pred_kp, pred_sc,
                                    areas, self.sigmas, self.oks_keypoint_score_threshold)
            matches, _, _ = self.match(similarity, self.match_oks_threshold)
            for row, col in matches:
                assigned[int(detected[row])] = tracks[col]
                tracks[col].matched = True
        # Stage 1b: detector-backed poses left over (their joints too far off, e.g. jittery keypoints of a small
        # person) against the tracks still free, by IoU of the pose box and the track's propagated box. Without it
        # such a detection would start a second track on a person that propagation is still carrying.
        left = np.array([i for i in detected if int(i) not in assigned], dtype=np.int64)
        free = [t for t in tracks if not t.matched]
        if self.fallback_iou_threshold < 1.0 and len(left) and free:
            iou = box_iou(poses.boxes_xyxy[left], np.stack([t.pred_box for t in free]))
            matches, _, _ = self.match(iou, self.fallback_iou_threshold)
            for row, col in matches:
                assigned[int(left[row])] = free[col]
                free[col].matched = True
        # Stage 2: a propagated pose continues the track that proposed it, if that track is still free.
        for index in carried:
            track = self._proposal_tracks[origin[index]]
            if track.matched or track.state == REMOVED:
                continue
            similarity = oks_matrix(poses.keypoints[index][None], poses.keypoint_scores[index][None],
                                    track.pred_keypoints[None], track.pred_scores[None],
                                    box_areas(track.pred_box[None]), self.sigmas, self.oks_keypoint_score_threshold)
            if similarity[0, 0] >= self.match_oks_threshold:
                assigned[int(index)] = track
                track.matched = True

        first_frame = self._frames_seen <= 1
        for index, track in assigned.items():
            self._continue(track, poses, index, from_detector=not propagated[index])
        for track in self._tracks:
            if not track.matched:
                self._miss(track, frame)
        for index in detected:
            if int(index) in assigned or poses.box_scores[index] < self.new_track_min_score:
                continue
            track = self._start(poses, int(index), confirmed=first_frame or self.min_hits_to_confirm <= 1)
            assigned[int(index)] = track
        self._tracks = [t for t in self._tracks if t.state != REMOVED]
        for track in self._tracks:
            track.pred_keypoints = track.pred_scores = track.pred_box = None

        report = sorted((i, t) for i, t in assigned.items() if t.state == TRACKED and t.matched)
        rows = np.array([i for i, _ in report], dtype=np.int64)
        reported = poses.select(rows) if len(rows) else Poses.empty(self.num_keypoints)
        if len(rows):  # the tracker's box (see box_flow_weight), not only the box the pose was estimated in
            reported.boxes_xyxy = np.stack([t.box_xyxy for _, t in report]).astype(np.float32)
        if len(rows) and self.smoothing != "none":
            reported.keypoints = np.stack([self._smooth(t, poses.keypoints[i]) for i, t in report])
        info = {
            "lost_tracks": sum(t.state == LOST for t in self._tracks),
            "tentative_tracks": sum(t.state == TENTATIVE for t in self._tracks),
            "propagated_poses": int(sum(propagated[i] for i, _ in report)),
            "flow_reliable_fraction": self._flow_reliable_fraction,
        }
        return Tracks(np.array([t.track_id for _, t in report], dtype=np.int64), reported, info=info)

    def _continue(self, track: _Track, poses: Poses, index: int, from_detector: bool) -> None:
        track.keypoints = poses.keypoints[index].copy()
        track.keypoint_scores = poses.keypoint_scores[index].copy()
        track.box_xyxy = poses.boxes_xyxy[index].copy()
        if from_detector and track.frames_lost == 0:
            # The flow-propagated box already follows the person's motion, so averaging it in damps the detector's
            # frame-to-frame box jitter without the lag a constant-velocity filter would add.
            w = self.box_flow_weight
            track.box_xyxy = ((1.0 - w) * track.box_xyxy + w * track.pred_box).astype(np.float32)
        track.box_score = float(poses.box_scores[index])
        track.frames_lost = 0
        track.kf.update(_center(track.box_xyxy))
        if from_detector:
            track.hits += 1
            track.frames_propagated = 0
            if track.state == TENTATIVE and track.hits >= self.min_hits_to_confirm:
                track.state = TRACKED
            elif track.state == LOST:
                track.state = TRACKED
        else:
            track.frames_propagated += 1

    def _miss(self, track: _Track, frame: Frame) -> None:
        if track.state == TENTATIVE:
            track.state = REMOVED
            return
        track.keypoints, track.keypoint_scores = track.pred_keypoints, track.pred_scores
        track.box_xyxy = track.pred_box
        track.state = LOST
        track.frames_lost += 1
        cx, cy = _center(track.box_xyxy)
        outside = not (0.0 <= cx <= frame.width and 0.0 <= cy <= frame.height)
        if track.frames_lost > self.max_lost_frames or outside:
            track.state = REMOVED

    def _start(self, poses: Poses, index: int, confirmed: bool) -> _Track:
        box = poses.boxes_xyxy[index].copy()
        track = _Track(
            track_id=self._next_id, state=TRACKED if confirmed else TENTATIVE,
            keypoints=poses.keypoints[index].copy(), keypoint_scores=poses.keypoint_scores[index].copy(),
            box_xyxy=box, box_score=float(poses.box_scores[index]),
            kf=_box_center_kalman(_center(box), self.kalman_process_noise_px, self.kalman_measurement_noise_px),
            matched=True,
        )
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _smooth(self, track: _Track, keypoints: np.ndarray) -> np.ndarray:
        if track.smoother is None:
            if self.smoothing == "one_euro":
                track.smoother = _OneEuro(*self.one_euro)
            else:
                track.smoother = _KeypointKalman(keypoints, self.kalman_process_noise_px,
                                                 self.kalman_measurement_noise_px)
        return track.smoother(keypoints, self._dt_s)
