"""FlowTrack: pose tracking by optical-flow propagation and OKS association (Xiao et al., ECCV 2018).

Shape glossary:
    N  poses of the current frame;  T  tracks alive in the tracker;  K  keypoints per person
    Keypoints are continuous image pixels [.., K, 2]; keypoint scores [.., K] (the detector's in [0, 1]; HRNet's
    raw heatmap maxima in paper mode, about 0..1); boxes xyxy [.., 4].

Per frame t (the pipeline calls `propose`, merges boxes, runs the pose stage, then calls `update`):
  1. Propagate (`propose`): every track's joints at t-1 are moved into frame t by sparse Lucas-Kanade flow
     (KeypointFlow), computed once per frame pair and reused by `update`. A propagated box is the track's last box
     shifted by the median motion of its reliably flowed joints. Only a reported track that a detection backed
     at most `max_propagation_s` ago, whose joints flow reliably, proposes its box, with provenance `proposed_by`
     = its id, so propagation only adds a person the detector missed, and only while there is evidence.
  2. Merge (tracking/merge.py): detector boxes always win over propagated boxes that overlap them.
  3. Pose NMS (`_suppress_duplicates`): a propagated pose that duplicates a detector pose (OKS above
     `pose_nms_oks_threshold`) is dropped, never the detector pose; duplicates among detector poses are dropped,
     strong detections before weak ones.
  4. Associate (`_associate`), in two rounds as in ByteTrack: strong detector poses (box score at or above
     `high_score_threshold`, i.e. detector.score_threshold) against every track, then weak ones (from
     `low_score_threshold` up) against the tracks that are reported or lost and still free. Each round matches
     greedily by OKS with the tracks' flow-warped poses (highest pair first, `match_oks_threshold`; a track not lost
     also by half the OKS with its last detected pose, LAST_DETECTION_OKS_WEIGHT, for flow that went off the
     person), a pose whose box is far taller or shorter than the person's (MAX_HEIGHT_RATIO) excluded, and
     leftovers by box IoU with the tracks' propagated boxes. After both rounds, the detector poses still free are
     matched by OKS with the lost tracks' last detected poses where they were seen (`_match_where_last_seen`: a
     person who stopped behind an occluder). A propagated pose may continue only the track that proposed it.
  5. Life cycle (`_update_life_cycle`): a new track starts from an unmatched strong detector pose scoring at least
     `new_track_min_score`; a weak pose never starts one. It is reported at once when that first score reaches
     `confirm_score`, else once the scores of its consecutive strong detections add up to CONFIRM_SCORE_SUM (a
     tentative track that misses a frame is dropped), so a single weak detection never becomes a reported person. A
     reported track that finds no pose is lost: not reported, moved by a constant-velocity Kalman filter on its box
     centre at the size it had before it was hidden (SIZE_MEMORY_S), with the joint confidences of its last
     detection, and kept `max_lost_s` seconds so its id can come back.
  6. Report (`_report`): the confirmed tracks matched in this frame. A track confirmed in this frame also hands
     over the poses of the frames in which it was seen before (Tracks.info[LATE_POSES]), and the earliest frame a
     tentative track could still add to goes to Tracks.info[PENDING_SINCE]: output files put those poses back in
     their frames (tracking/backfill.py), where a live view has already shown the frame without them.

Time is in seconds, from Frame.timestamp_s (the source's frame rate); where timestamps do not advance, frames are
taken as 1/30 s apart. Distances that decide a match are relative to the person (OKS scales with the box area).
The tracker never draws and never reads files; ids come from a per-instance counter; `reset()` restarts them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..config import DetectorConfig, FlowTrackConfig
from ..ops.boxes import box_areas, box_iou
from ..ops.oks import oks_matrix, oks_nms
from ..skeleton import Skeleton
from ..structures import (DETECTOR, LATE_POSES, PENDING_SINCE, UNREPORTED_BOXES, Detections, Frame, Poses,
                          Tracks)
from .clock import TrackerClock
from .flow import KeypointFlow
from .matching import greedy_match
from .motion import CenterMotion

log = logging.getLogger(__name__)

TENTATIVE, TRACKED, LOST, REMOVED = "tentative", "tracked", "lost", "removed"

# -- constants (named, with their reasons; the user-facing settings are FlowTrackConfig's) --
# Joints scored below this are not flowed (detectors place unseen joints anywhere); they follow their person's
# median motion instead.
FLOW_MIN_KEYPOINT_SCORE = 0.2
# A flowed joint that fails the forward-backward check keeps its person's median motion and has its score
# multiplied by this, so a person whose joints flow cannot follow (an occluder in front) stops being carried soon.
UNRELIABLE_SCORE_FACTOR = 0.3
# Flow moves a track only when at least this fraction of its flowed joints is reliable; otherwise (and for lost
# tracks) its constant-velocity Kalman filter does, and it proposes no propagated box.
MIN_RELIABLE_JOINT_FRACTION = 0.5
# When the median joint flow and the Kalman prediction disagree by more than this fraction of the person's height,
# the joints are following something else (at a crossing, the person in front): the Kalman filter moves the track
# instead. Needs a filter that has seen a few detections (KALMAN_SETTLED_HITS). On the 7-fps synthetic crossing
# clip at detector size 960: IDF1 52.8 -> 60.8, ID switches 8 -> 6; no change on the 30-fps clip.
FLOW_KALMAN_MAX_DISAGREEMENT = 0.15
KALMAN_SETTLED_HITS = 3
# Scores of a pose carried by flow alone fall by this factor per second since its last detection, so carried
# poses rank below detected ones and fade out (0.8 per second: the PETS09-tuned 0.97 per frame at 7 fps). The
# track keeps its joints' scores undecayed and the decay is applied where a carried pose is judged and reported,
# so it is the same whatever the frame rate and whether the pose stage re-estimates the joints or passes the
# proposal's through.
PROPAGATED_SCORE_DECAY_PER_S = 0.8
# A carried pose whose mean keypoint score falls below this ends its track's run (the pose stage found no person
# in the propagated box, or the decay has run long).
MIN_PROPAGATED_POSE_SCORE = 0.25
# Joints scored at or below this are left out of OKS (the official COCO/PoseTrack practice of ignoring unlabelled
# joints, applied to predictions).
OKS_KEYPOINT_SCORE_THRESHOLD = 0.2
# A detector pose that OKS left unmatched (jittery joints of a small person) continues a still-free track when its
# box overlaps the track's propagated box at least this much; without it, it would start a second track on a
# person that propagation is carrying.
FALLBACK_IOU_THRESHOLD = 0.5
# A track that is not lost is also looked for where it was last detected (its detector pose of at most
# max_propagation_s ago, at its remembered size), at this weight of that OKS: flow sometimes carries a person's
# joints off them (onto an occluder's edge, a person passing in front), and the detection then sits where they were,
# not where the joints went; without it the detection starts a second track while the person's own is lost, and the
# two take turns on them later. Half weight, so a warped pose that fits wins over a last position that fits as well.
# Judged with the box rule below on medians over 16 copies of the detections with int8-sized noise
# (benchmarks/results/compare_trackers_noise.md; under that noise one run's IDF1 on the 30-fps clip lies anywhere in
# 64-80): mean over PETS09 and the three synthetic clips, MOTA / IDF1 / ID switches 76.8 / 80.2 / 7.4 -> 77.6 /
# 82.1 / 6.9 at detector size auto and 63.9 / 69.2 / 3.0 -> 64.1 / 69.7 / 2.9 at 640 (syn25 IDF1 85.8 -> 90.3; the
# cost: syn30 at 640 74.9 -> 72.0), pose MOTA and mAP within 0.1, the MOT17 clips' medians within 0.5.
LAST_DETECTION_OKS_WEIGHT = 0.5
# The flow-propagated box is averaged into a detector-backed match (box_flow_weight) only when the two overlap at
# least this much: a propagated box that disagrees with the detection has followed something else, and averaging it
# in moves the reported box (and the Kalman filter's anchor) off the person. Measured together with the rule above:
# that rule without this one cost syn30 1.1 points of median MOTA (its new matches are the frames where flow went
# off), and this one without that rule cost syn30's IDF1 median 4.9 points (8 seeds).
BOX_BLEND_MIN_IOU = 0.5
# A lost track's OKS scale grows by this fraction per second lost: the longer a person is hidden, the less sure
# the tracker is where they are (0.15 per frame at 7 fps on PETS09).
LOST_SCALE_GROWTH_PER_S = 1.0
# A track started from a detection scored under `confirm_score` is reported once the box scores of its consecutive
# strong detections add up to this (score by track): two detections averaging 0.4 (the IoU tracker's start score),
# or three weaker ones. One that misses a frame first is dropped unreported. The bag of issue 12 (one detection at
# 0.36) never is. Two hits of any strong score (ByteTrack's rule) let a twice-seen weak object through: on MOT17-11
# one scored 0.36 then 0.31 was reported for three frames before the IoU tracker started it, and on MOT17-02 a
# person cut by the frame's edge (0.33, 0.33) whom the truth leaves out. Medians over 16 noisy copies of the suite's
# detections (benchmarks/compare_trackers.py --noise-seeds; detector size auto): FlowTrack's precision rises on
# every clip it moves (MOT17-02 94.4 -> 100, MOT17-11 87.5 -> 93.3, syn30 90.7 -> 91.2) and recall falls by at
# most 2.1 (MOT17-10; 0.3 on the 30-fps clip); MOTA / IDF1 / ID switches over the 11 clips 43.6 / 56.8 / 2.50 ->
# 43.7 / 56.8 / 2.45, pose mAP 92.0 -> 91.9. At detector size 640 the short 1080p MOT17 clips, whose people are
# small and weakly detected, lose more (MOT17-10's MOTA 7.4 -> 4.2; over the 11 clips 33.0 / 42.8 -> 32.6 / 42.1);
# the 640x480 25-fps clip does not move. 0.7 and 0.9 score the same within 0.1; 0.7 lies within the noise of the two
# objects' 0.66-0.67 (some noisy copies still report MOT17-02's), 0.9 delays more people (MOT17-02's recall -1.1).
CONFIRM_SCORE_SUM = 0.8
# The id of a track not yet reported (ids start at 1; see _Track.track_id).
UNCONFIRMED_ID = 0
# The person's size is the largest detected box (width and height apart) of the last this-many seconds: occlusion
# only ever shrinks a box, so a person walking behind a pillar or another person keeps the size they had before.
# A lost track is looked for at that size around its Kalman-predicted centre. Suite (detector size auto) without
# it: syn7 IDF1 73.4 -> 60.2 (the IoU tracker has 43.1).
SIZE_MEMORY_S = 1.0
# A detection more than this factor taller or shorter than a track's size is not that person (a head-only or
# legs-only detection of someone passing by); on the suite: syn7 MOTA 82.4 -> 84.5 with it, no clip worse by more
# than 1 point of MOTA.
MAX_HEIGHT_RATIO = 1.5
# A detected box narrower (or shorter) than this fraction of the person's size is taken as cut by an occluder: the
# Kalman filter is fed the centre of a full-size box on the side that moved as predicted, not the cut box's centre,
# which stops at the occluder's edge and would teach the filter that the person stopped. Walking people's boxes
# change width with their stride by up to ~25%, hence 0.7. Suite: see FlowTrackConfig.max_lost_s.
MIN_UNCUT_FRACTION = 0.7
# A weak detection (under high_score_threshold: the second round) whose box is narrower or shorter than this fraction
# of its person's size (SIZE_MEMORY_S) keeps the track alive but is not reported: a weakly seen sliver of someone
# (behind an occluder, leaving the frame) says they are still there, but its box and joints are not the person's.
# Medians over 8 noisy copies of the suite's detections (size auto): suite score 73.29 -> 73.39, MOTA 47.17 -> 47.36;
# at 640 60.35 -> 60.46. Precision rises where people are occluded (syn25pan 90.7 -> 91.5, syn30 91.3 -> 91.8, syn25
# 93.2 -> 93.6) and on MOT17-13 (40 -> 50: a 0.12 detection of an 11-px sliver of a person leaving the frame), with
# no recall lost. 0.4 and 0.6 score the same within 0.03; MIN_UNCUT_FRACTION (0.7) costs PETS09 1.2 points, whose
# small people's weak boxes vary that much in width.
WEAK_MIN_SIZE_FRACTION = 0.5


@dataclass
class _Track:
    # UNCONFIRMED_ID until the track is first reported: ids are handed out in the order people are first reported, so
    # a new person always gets a larger id than everyone reported before, and tentative tracks leave no gaps.
    track_id: int
    state: str
    keypoints: np.ndarray          # [K, 2] latest estimate
    keypoint_scores: np.ndarray    # [K]
    box_xyxy: np.ndarray           # [4]
    box_score: float               # of the last detection
    motion: CenterMotion           # box-centre Kalman filter, in seconds and person heights
    last_detected_s: float
    detected_scores: np.ndarray    # [K] joint scores of its last detector pose (a lost track keeps these)
    detected_keypoints: np.ndarray  # [K, 2] joints of its last detector pose, where they were seen
    sizes: List[tuple]             # (time s, width px, height px) of its detected boxes in the last SIZE_MEMORY_S
    hits: int = 1                  # detections (a tentative track's are consecutive: one miss removes it)
    score_sum: float = 0.0         # box scores of its detections added up (decides when a tentative one is reported)
    lost_since_s: Optional[float] = None
    # A tentative track's detections (frame index, its pose row): reported in their own frames once it is confirmed.
    early: List[Tuple[int, Poses]] = field(default_factory=list)
    # Warped into the current frame by `_advance`:
    pred_keypoints: Optional[np.ndarray] = None
    pred_scores: Optional[np.ndarray] = None
    pred_box: Optional[np.ndarray] = None
    flow_reliable: bool = False
    matched: bool = False


def _size_wh(track: _Track):
    """(width, height) in pixels: the largest detected box of the last SIZE_MEMORY_S (each side apart)."""
    return max(s[1] for s in track.sizes), max(s[2] for s in track.sizes)


def _center(box_xyxy: np.ndarray) -> np.ndarray:
    return np.array([(box_xyxy[0] + box_xyxy[2]) * 0.5, (box_xyxy[1] + box_xyxy[3]) * 0.5], dtype=np.float64)


def _height_gated(oks: np.ndarray, boxes_xyxy: np.ndarray, person_heights: np.ndarray) -> np.ndarray:
    """[N, T] `oks` (poses with `boxes_xyxy` [N, 4] against tracks of `person_heights` [T]) with 0 where the heights
    disagree by more than MAX_HEIGHT_RATIO: a joint set that fits (a head-only detection of a passer-by matches five
    head joints) is not the person when its box is far taller or shorter than theirs."""
    heights = boxes_xyxy[:, 3] - boxes_xyxy[:, 1]
    ratio = heights[:, None] / np.maximum(person_heights, 1.0)[None, :]
    return np.where((ratio >= 1.0 / MAX_HEIGHT_RATIO) & (ratio <= MAX_HEIGHT_RATIO), oks, 0.0)


def _pose_score(keypoint_scores: np.ndarray) -> np.ndarray:
    """[N] mean keypoint score of each pose ([N, K] in)."""
    return keypoint_scores.mean(axis=-1) if keypoint_scores.shape[-1] else np.zeros(len(keypoint_scores))


class FlowTracker:
    """Multi-person pose tracker by flow propagation and greedy OKS matching.

    propose(frame) -> Detections (propagated boxes, keypoints [N, K, 3], proposed_by); update(frame, poses) ->
    Tracks; reset() at sequence boundaries. The settings are FlowTrackConfig's (see there for their meaning and the
    evidence for each default); `from_config` builds one from that section.
    """

    def __init__(self, *, skeleton: Skeleton,
                 match_oks_threshold: float = FlowTrackConfig.match_oks_threshold,
                 pose_nms_oks_threshold: float = FlowTrackConfig.pose_nms_oks_threshold,
                 new_track_min_score: float = FlowTrackConfig.new_track_min_score,
                 confirm_score: float = FlowTrackConfig.confirm_score,
                 max_propagation_s: float = FlowTrackConfig.max_propagation_s,
                 max_lost_s: float = FlowTrackConfig.max_lost_s,
                 box_flow_weight: float = FlowTrackConfig.box_flow_weight,
                 low_score_threshold: float = FlowTrackConfig.low_score_threshold,
                 high_score_threshold: float = DetectorConfig.score_threshold):
        # Range checks live with the config fields: a tracker built by hand is checked the same way.
        FlowTrackConfig(match_oks_threshold=match_oks_threshold, pose_nms_oks_threshold=pose_nms_oks_threshold,
                        new_track_min_score=new_track_min_score, confirm_score=confirm_score,
                        max_propagation_s=max_propagation_s, max_lost_s=max_lost_s, box_flow_weight=box_flow_weight,
                        low_score_threshold=low_score_threshold)
        self.skeleton = skeleton
        self.sigmas = skeleton.sigmas
        self.match_oks_threshold = match_oks_threshold
        self.pose_nms_oks_threshold = pose_nms_oks_threshold
        self.new_track_min_score = new_track_min_score
        self.confirm_score = confirm_score
        self.max_propagation_s = max_propagation_s
        self.max_lost_s = max_lost_s
        self.box_flow_weight = box_flow_weight
        self.low_score_threshold = low_score_threshold
        self.high_score_threshold = high_score_threshold
        self.flow = KeypointFlow()
        self.reset()

    @classmethod
    def from_config(cls, cfg: FlowTrackConfig, skeleton: Skeleton,
                    high_score_threshold: float = DetectorConfig.score_threshold) -> "FlowTracker":
        return cls(skeleton=skeleton, low_score_threshold=cfg.low_score_threshold,
                   high_score_threshold=high_score_threshold, match_oks_threshold=cfg.match_oks_threshold,
                   pose_nms_oks_threshold=cfg.pose_nms_oks_threshold, new_track_min_score=cfg.new_track_min_score,
                   confirm_score=cfg.confirm_score, max_propagation_s=cfg.max_propagation_s,
                   max_lost_s=cfg.max_lost_s, box_flow_weight=cfg.box_flow_weight)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Sequence boundary: forget tracks and frames; ids restart at 1."""
        self._tracks: List[_Track] = []
        self._next_id = 1
        self._late: Dict[int, List[Tuple[int, Poses]]] = {}  # frame index -> (id, pose) confirmed in this update
        self._frame_index = 0
        self.flow.reset()
        self._advanced_key = None
        self._frames_seen = 0
        self._clock = TrackerClock()
        self._flow_reliable_fraction = float("nan")

    @property
    def num_keypoints(self) -> int:
        return self.skeleton.num_keypoints

    @property
    def _now_s(self) -> float:
        return self._clock.now_s

    # ------------------------------------------------------------- propagate
    def _advance(self, frame: Frame) -> None:
        """Warp every track into `frame` (once per frame; `propose` and `update` share the result)."""
        key = (frame.index, id(frame.image_bgr))
        if key == self._advanced_key:
            return
        self._advanced_key = key
        self._frame_index = frame.index
        self._frames_seen += 1
        self._clock.tick(frame)
        self.flow.next_frame(frame.image_bgr)
        if not self._tracks:
            return
        # One flow call for the joints of all tracks that flow moves; a lost track's last joints would follow
        # whatever hides it, so lost tracks move by their Kalman filter alone.
        masks = [(t.keypoint_scores > FLOW_MIN_KEYPOINT_SCORE) if t.state != LOST else np.zeros(self.num_keypoints, bool)
                 for t in self._tracks]
        starts = [t.keypoints[m] for t, m in zip(self._tracks, masks)]
        points = np.concatenate(starts) if starts else np.zeros((0, 2), np.float32)
        result = self.flow.track(points)
        self._flow_reliable_fraction = float(result.reliable.mean()) if len(points) else float("nan")
        offset = 0
        for track, mask in zip(self._tracks, masks):
            n = int(mask.sum())
            moved, reliable = result.points_px[offset: offset + n], result.reliable[offset: offset + n]
            offset += n
            self._warp(track, mask, moved, reliable)

    def _warp(self, track: _Track, mask: np.ndarray, moved: np.ndarray, reliable: np.ndarray) -> None:
        """Predicted joints, scores and box of one track in the current frame."""
        track.motion.predict(self._now_s, _size_wh(track)[1])
        scores = track.keypoint_scores.copy()
        n = int(mask.sum())
        track.flow_reliable = bool(n) and float(reliable.mean()) >= MIN_RELIABLE_JOINT_FRACTION
        kalman_shift = (track.motion.center - _center(track.box_xyxy)).astype(np.float32)
        flow_shift = (np.median(moved[reliable] - track.keypoints[mask][reliable], axis=0).astype(np.float32)
                      if reliable.any() else None)
        height = max(1.0, float(track.box_xyxy[3] - track.box_xyxy[1]))
        if (flow_shift is not None and track.hits >= KALMAN_SETTLED_HITS
                and np.linalg.norm(flow_shift - kalman_shift) > FLOW_KALMAN_MAX_DISAGREEMENT * height):
            track.flow_reliable = False  # the joints' flow follows something else, e.g. a person passing in front
        if not track.flow_reliable:
            shift = kalman_shift
            keypoints = track.keypoints + shift
            scores[mask] *= UNRELIABLE_SCORE_FACTOR
        else:
            shift = flow_shift
            keypoints = track.keypoints + shift          # unflowed and unreliable joints follow the person
            flowed = np.flatnonzero(mask)
            keypoints[flowed[reliable]] = moved[reliable]
            scores[flowed[~reliable]] *= UNRELIABLE_SCORE_FACTOR
        track.pred_keypoints = keypoints.astype(np.float32)
        track.pred_scores = scores.astype(np.float32)
        track.pred_box = (track.box_xyxy + np.concatenate([shift, shift])).astype(np.float32)
        if track.state == LOST:
            # Looked for at the size the person had before they were hidden (SIZE_MEMORY_S).
            width, height = _size_wh(track)
            cx, cy = track.motion.center
            track.pred_box = np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], np.float32)

    def _decay(self, track: _Track) -> float:
        return PROPAGATED_SCORE_DECAY_PER_S ** max(0.0, self._now_s - track.last_detected_s)

    def _may_propagate(self, track: _Track) -> bool:
        """Evidence to carry a reported track by flow: reliable joint flow, a recent detection, a pose left."""
        return (track.state == TRACKED and track.pred_keypoints is not None and track.flow_reliable
                and self._now_s - track.last_detected_s <= self.max_propagation_s + 1e-9
                and float(_pose_score(track.pred_scores * self._decay(track))) >= MIN_PROPAGATED_POSE_SCORE)

    def propose(self, frame: Frame) -> Detections:
        """Propagated boxes of the tracks that may be carried into `frame`: boxes [N, 4], decayed box scores [N],
        warped joints [N, K, 3] (x, y, score; undecayed, see PROPAGATED_SCORE_DECAY_PER_S), proposed_by [N] (track
        ids)."""
        self._advance(frame)
        chosen = [t for t in self._tracks if self._may_propagate(t)]
        if not chosen:
            return Detections.empty(self.num_keypoints)
        decay = np.array([self._decay(t) for t in chosen], np.float32)
        keypoints = np.concatenate([np.stack([t.pred_keypoints for t in chosen]),
                                    np.stack([t.pred_scores for t in chosen])[..., None]], axis=2)
        return Detections(np.stack([t.pred_box for t in chosen]),
                          np.array([t.box_score for t in chosen], np.float32) * decay, keypoints,
                          np.array([t.track_id for t in chosen], np.int64))

    def _carried_decay(self, poses: Poses) -> np.ndarray:
        """[N] the score decay of each pose: 1 for detector poses, the proposing track's for carried ones (0 where
        that track is no longer reported: nothing for the pose to continue)."""
        by_id = {t.track_id: t for t in self._tracks if t.state == TRACKED}
        return np.array([1.0 if owner == DETECTOR else (self._decay(by_id[owner]) if owner in by_id else 0.0)
                         for owner in poses.proposed_by.tolist()], np.float32)

    # --------------------------------------------------------------- update
    def update(self, frame: Frame, poses: Poses) -> Tracks:
        """Associate this frame's poses (keypoints [N, K, 2], proposed_by [N]) with the tracks; returns the reported
        tracks."""
        if poses.num_keypoints != self.num_keypoints:
            raise ValueError(f"poses have {poses.num_keypoints} keypoints but the tracker's {self.skeleton.name} "
                             f"layout has {self.num_keypoints}: configure pose.keypoints to match")
        self._advance(frame)
        for track in self._tracks:
            track.matched = False
            if track.pred_keypoints is None:  # created in the previous update without a frame in between
                track.pred_keypoints, track.pred_scores = track.keypoints.copy(), track.keypoint_scores.copy()
                track.pred_box = track.box_xyxy.copy()
        self._late = {}
        decay = self._carried_decay(poses)
        detected, carried = self._suppress_duplicates(poses, decay)
        assigned = self._associate(poses, detected, carried)
        self._update_life_cycle(frame, poses, detected, assigned)
        return self._report(poses, decay, assigned)

    def _suppress_duplicates(self, poses: Poses, decay: np.ndarray):
        """Pose NMS with detector poses first. Returns (detector pose rows, propagated pose rows) that survive.
        decay: [N] from _carried_decay."""
        n = len(poses)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        propagated = poses.proposed_by != DETECTOR
        # A carried pose whose joints the pose stage could not find (no person left in the box), or whose decay has
        # run long, is no evidence.
        keep = ~(propagated & (_pose_score(poses.keypoint_scores) * decay < MIN_PROPAGATED_POSE_SCORE))
        candidates = np.flatnonzero(keep)
        # Priority, not score: +2 puts every detector pose ahead of every propagated one, and +4 every strong
        # detection ahead of every weak one.
        strong = ~propagated & self._strong(poses.box_scores)
        priority = (strong[candidates] * 4.0 + (~propagated[candidates]) * 2.0
                    + _pose_score(poses.keypoint_scores[candidates]))
        kept = oks_nms(poses.keypoints[candidates], poses.keypoint_scores[candidates],
                       box_areas(poses.boxes_xyxy[candidates]), priority, self.sigmas,
                       self.pose_nms_oks_threshold, OKS_KEYPOINT_SCORE_THRESHOLD)
        candidates = candidates[kept]
        return candidates[~propagated[candidates]], candidates[propagated[candidates]]

    def _strong(self, box_scores):
        """Box scores (array or one) at or above high_score_threshold: the first round's detections."""
        return box_scores >= self.high_score_threshold - 1e-9

    def _associate(self, poses: Poses, detected: np.ndarray, carried: np.ndarray) -> Dict[int, _Track]:
        """pose row -> track. Strong detector poses (box score >= high_score_threshold) first, against every track;
        then weak ones (low_score_threshold and up) against the reported and lost tracks still free (never a
        tentative one: weak evidence does not confirm a track), then every detector pose left against the lost
        tracks where they were last seen; carried poses continue the track that proposed them, if it is still free."""
        assigned: Dict[int, _Track] = {}
        scores = poses.box_scores[detected] if len(detected) else np.zeros(0, np.float32)
        strong = detected[self._strong(scores)]
        weak = detected[~self._strong(scores) & (scores >= self.low_score_threshold - 1e-9)]
        self._match(poses, strong, self._tracks, assigned)
        self._match(poses, weak, [t for t in self._tracks if t.state != TENTATIVE], assigned)
        self._match_where_last_seen(poses, np.concatenate([strong, weak]), assigned)
        by_id = {t.track_id: t for t in self._tracks}
        for index in carried:
            track = by_id.get(int(poses.proposed_by[index]))
            if track is not None and not track.matched and track.state == TRACKED:
                assigned[int(index)] = track
                track.matched = True
        return assigned

    def _similarity(self, poses: Poses, rows: np.ndarray, tracks: List[_Track]) -> np.ndarray:
        """[len(rows), len(tracks)] OKS of the poses against the tracks' warped poses, at each person's remembered
        size (a lost track's scale grows with the time it has been lost), or, for a track not lost, against its last
        detected pose at LAST_DETECTION_OKS_WEIGHT if that is higher; 0 where the heights disagree by more than
        MAX_HEIGHT_RATIO."""
        pred_kp = np.stack([t.pred_keypoints for t in tracks])
        pred_sc = np.stack([t.pred_scores for t in tracks])
        lost_s = np.array([0.0 if t.lost_since_s is None else self._now_s - t.lost_since_s for t in tracks])
        boxes = np.stack([t.pred_box for t in tracks])
        # OKS's scale is the person's area: the remembered size (SIZE_MEMORY_S), not the latest box, which an occluder
        # may have cut to a strip; at a strip's area the full person's joints, a frame later, fail OKS and start a
        # new id (the 25-fps synthetic clip, frame 126). Suite at size auto: mean IDF1 55.3 -> 56.8, ID switches
        # 38 -> 35 (syn25 IDF1 75.7 -> 85.6, syn30 74.5 -> 81.5); MOTA and the MOT17 clips unchanged; against it,
        # syn25 at 960 (not its auto size) 86.1 -> 82.6 with 0 -> 2 switches.
        remembered_wh = np.array([_size_wh(t) for t in tracks], np.float64)
        areas = np.maximum(box_areas(boxes), remembered_wh[:, 0] * remembered_wh[:, 1])
        areas = areas * (1.0 + LOST_SCALE_GROWTH_PER_S * lost_s) ** 2
        oks = oks_matrix(poses.keypoints[rows], poses.keypoint_scores[rows], pred_kp, pred_sc, areas, self.sigmas,
                         OKS_KEYPOINT_SCORE_THRESHOLD)
        seen = np.array([t.state != LOST for t in tracks])
        if seen.any():  # a lost track's last position is the job of _match_where_last_seen, after every other pose
            last = self._last_detection_oks(poses, rows, tracks, remembered_wh)
            oks = np.where(seen[None, :], np.maximum(oks, LAST_DETECTION_OKS_WEIGHT * last), oks)
        return _height_gated(oks, poses.boxes_xyxy[rows], remembered_wh[:, 1])

    def _last_detection_oks(self, poses: Poses, rows: np.ndarray, tracks: List[_Track],
                            remembered_wh: np.ndarray) -> np.ndarray:
        """[len(rows), len(tracks)] OKS of the poses against each track's last detected pose where it was seen, at
        the person's remembered size (`remembered_wh` [T, 2], _size_wh of each track)."""
        return oks_matrix(poses.keypoints[rows], poses.keypoint_scores[rows],
                          np.stack([t.detected_keypoints for t in tracks]),
                          np.stack([t.detected_scores for t in tracks]), remembered_wh[:, 0] * remembered_wh[:, 1],
                          self.sigmas, OKS_KEYPOINT_SCORE_THRESHOLD)

    def _match(self, poses: Poses, rows: np.ndarray, tracks: List[_Track], assigned: Dict[int, _Track]) -> None:
        """Greedy matching of detector pose `rows` to free `tracks`: by OKS with the warped poses, then leftovers by
        box IoU with the propagated boxes."""
        tracks = [t for t in tracks if not t.matched]
        if len(rows) and tracks:
            for row, col in greedy_match(self._similarity(poses, rows, tracks), self.match_oks_threshold)[0]:
                assigned[int(rows[row])] = tracks[col]
                tracks[col].matched = True
        left = np.array([i for i in rows if int(i) not in assigned], dtype=np.int64)
        free = [t for t in tracks if not t.matched]
        if len(left) and free:
            iou = box_iou(poses.boxes_xyxy[left], np.stack([t.pred_box for t in free]))
            for row, col in greedy_match(iou, FALLBACK_IOU_THRESHOLD)[0]:
                assigned[int(left[row])] = free[col]
                free[col].matched = True

    def _match_where_last_seen(self, poses: Poses, rows: np.ndarray, assigned: Dict[int, _Track]) -> None:
        """Last, the detector poses of `rows` still free against the lost tracks still free, by OKS with each track's
        last detected pose where it was seen, at the person's remembered size.

        The Kalman filter carries a lost track on at the person's last velocity, but people also stop or turn
        behind an occluder: on PETS09 a person stood at the lamp post for 3.3 s and was found again (by weak
        detections) 0.2 heights from where they were last seen, while their lost track had been carried 1.9
        heights away; the detections matched nothing and the person came back under a new id. Matched after every
        other pose, so a person whom their own track explains is never taken for a lost one. Suite
        (benchmarks/results/compare_trackers_suite.md): PETS09 at 960 (its auto size) MOTA / IDF1 / ID switches
        68.3 / 66.3 / 25 -> 71.6 / 75.1 / 22; at 960, syn30 -0.5 / -0.3 / 0 (its walkers never stop) and syn25
        -0.1 / -0.1 / 0; every other clip, and every clip at 640, unchanged. Weak poses alone (not the strong
        leftovers) keep PETS09's gain but cost syn30 at 640 0.7 MOTA and 2.8 IDF1: a weak false positive then
        takes the lost id that the strong detection of the person would have taken. The cost: a newcomer who appears
        where a lost person was last seen, within max_lost_s, takes that person's id (tests/test_csv_output.py)."""
        left = np.array([i for i in rows if int(i) not in assigned], dtype=np.int64)
        lost = [t for t in self._tracks if not t.matched and t.state == LOST]
        if not len(left) or not lost:
            return
        remembered_wh = np.array([_size_wh(t) for t in lost], np.float64)
        oks = _height_gated(self._last_detection_oks(poses, left, lost, remembered_wh), poses.boxes_xyxy[left],
                            remembered_wh[:, 1])
        for row, col in greedy_match(oks, self.match_oks_threshold)[0]:
            assigned[int(left[row])] = lost[col]
            lost[col].matched = True

    def _update_life_cycle(self, frame: Frame, poses: Poses, detected: np.ndarray, assigned: Dict[int, _Track]):
        for index, track in assigned.items():
            self._continue(track, poses, index, from_detector=poses.proposed_by[index] == DETECTOR)
        for track in self._tracks:
            if not track.matched:
                self._miss(track, frame)
        for index in detected:
            if int(index) in assigned or poses.box_scores[index] < max(self.new_track_min_score,
                                                                       self.high_score_threshold) - 1e-9:
                continue
            assigned[int(index)] = self._start(poses, int(index))
        self._tracks = [t for t in self._tracks if t.state != REMOVED]
        for track in self._tracks:
            track.pred_keypoints = track.pred_scores = track.pred_box = None

    def _continue(self, track: _Track, poses: Poses, index: int, from_detector: bool) -> None:
        box = poses.boxes_xyxy[index].copy()
        if from_detector and track.lost_since_s is None:
            # The flow-propagated box already follows the person's motion, so averaging it in damps the detector's
            # frame-to-frame box jitter without the lag a constant-velocity filter would add.
            if box_iou(box[None], track.pred_box[None])[0, 0] >= BOX_BLEND_MIN_IOU:
                w = self.box_flow_weight
                box = ((1.0 - w) * box + w * track.pred_box).astype(np.float32)
        track.keypoints = poses.keypoints[index].copy()
        track.keypoint_scores = poses.keypoint_scores[index].copy()
        track.box_xyxy = box
        track.lost_since_s = None
        track.motion.update(self._motion_anchor(track, box), _size_wh(track)[1])
        if from_detector:
            detected = poses.boxes_xyxy[index]
            track.sizes = [s for s in track.sizes if s[0] >= self._now_s - SIZE_MEMORY_S - 1e-9]
            track.sizes.append((self._now_s, float(detected[2] - detected[0]), float(detected[3] - detected[1])))
            track.detected_scores = poses.keypoint_scores[index].copy()
            track.detected_keypoints = poses.keypoints[index].copy()
            track.box_score = float(poses.box_scores[index])
            track.last_detected_s = self._now_s
            track.hits += 1
            track.score_sum += track.box_score
            if track.state == LOST or (track.state == TENTATIVE and track.score_sum >= CONFIRM_SCORE_SUM - 1e-9):
                self._confirm(track)
            elif track.state == TENTATIVE:
                track.early.append((self._frame_index, poses.select(np.array([index]))))

    @staticmethod
    def _motion_anchor(track: _Track, box: np.ndarray) -> np.ndarray:
        """Centre of the person's full-size box (_size_wh) placed on the sides of `box` that move with the person: a
        box cut by an occluder has one side stopped at the occluder's edge, the other where the Kalman filter (already
        advanced to this frame) predicts the full-size box's side."""
        width, height = _size_wh(track)
        px, py = (float(v) for v in track.motion.center)
        pred = np.array([px - width / 2, py - height / 2, px + width / 2, py + height / 2])
        cx, cy = _center(box)
        if box[2] - box[0] < MIN_UNCUT_FRACTION * width:
            left_err, right_err = abs(box[0] - pred[0]), abs(box[2] - pred[2])
            cx = box[0] + width / 2 if left_err <= right_err else box[2] - width / 2
        if box[3] - box[1] < MIN_UNCUT_FRACTION * height:
            top_err, bottom_err = abs(box[1] - pred[1]), abs(box[3] - pred[3])
            cy = box[1] + height / 2 if top_err <= bottom_err else box[3] - height / 2
        return np.array([cx, cy], np.float64)

    def _miss(self, track: _Track, frame: Frame) -> None:
        if track.state == TENTATIVE:
            track.state = REMOVED
            return
        # Lost: the joints move with the track, but keep the confidences of the last detection; flow's decayed scores
        # would leave no joint for OKS to compare when the person comes back (syn7 IDF1 without: see SIZE_MEMORY_S).
        track.keypoints, track.keypoint_scores = track.pred_keypoints, track.detected_scores
        track.box_xyxy = track.pred_box
        track.state = LOST
        if track.lost_since_s is None:
            track.lost_since_s = self._now_s
        cx, cy = _center(track.box_xyxy)
        outside = not (0.0 <= cx <= frame.width and 0.0 <= cy <= frame.height)
        if self._now_s - track.lost_since_s > self.max_lost_s + 1e-9 or outside:
            track.state = REMOVED

    def _start(self, poses: Poses, index: int) -> _Track:
        box = poses.boxes_xyxy[index].copy()
        score = float(poses.box_scores[index])
        track = _Track(
            track_id=UNCONFIRMED_ID, state=TENTATIVE,
            keypoints=poses.keypoints[index].copy(), keypoint_scores=poses.keypoint_scores[index].copy(),
            box_xyxy=box, box_score=score, score_sum=score,
            motion=CenterMotion(_center(box), box[3] - box[1], self._now_s), last_detected_s=self._now_s,
            detected_scores=poses.keypoint_scores[index].copy(),
            detected_keypoints=poses.keypoints[index].copy(),
            sizes=[(self._now_s, float(box[2] - box[0]), float(box[3] - box[1]))], matched=True,
        )
        if score >= self.confirm_score - 1e-9:
            self._confirm(track)
        else:
            track.early.append((self._frame_index, poses.select(np.array([index]))))
        self._tracks.append(track)
        return track

    def _confirm(self, track: _Track) -> None:
        """The track is reported from now on; the first time, it gets the next id, and the poses it had before go to
        this frame's LATE_POSES."""
        track.state = TRACKED
        if track.track_id == UNCONFIRMED_ID:
            track.track_id = self._next_id
            self._next_id += 1
        for frame_index, pose in track.early:
            self._late.setdefault(frame_index, []).append((track.track_id, pose))
        track.early = []

    def _weak_sliver(self, poses: Poses, index: int, track: _Track) -> bool:
        """A weak detector pose whose box is under WEAK_MIN_SIZE_FRACTION of the person's width or height."""
        if poses.proposed_by[index] != DETECTOR or self._strong(poses.box_scores[index]):
            return False
        width, height = _size_wh(track)
        x1, y1, x2, y2 = poses.boxes_xyxy[index]
        return x2 - x1 < WEAK_MIN_SIZE_FRACTION * width or y2 - y1 < WEAK_MIN_SIZE_FRACTION * height

    def _report(self, poses: Poses, decay: np.ndarray, assigned: Dict[int, _Track]) -> Tracks:
        report = sorted((i, t) for i, t in assigned.items()
                        if t.state == TRACKED and t.matched and not self._weak_sliver(poses, i, t))
        shown = {t.track_id for _, t in report}
        rows = np.array([i for i, _ in report], dtype=np.int64)
        reported = poses.select(rows) if len(rows) else Poses.empty(self.num_keypoints)
        if len(rows):  # the tracker's box (see box_flow_weight), not only the box the pose was estimated in
            reported.boxes_xyxy = np.stack([t.box_xyxy for _, t in report]).astype(np.float32)
            reported.keypoint_scores = (reported.keypoint_scores * decay[rows, None]).astype(np.float32)
        info = {
            "lost_tracks": sum(t.state == LOST for t in self._tracks),
            "tentative_tracks": sum(t.state == TENTATIVE for t in self._tracks),
            "propagated_poses": int(sum(poses.proposed_by[i] != DETECTOR for i, _ in report)),
            "flow_reliable_fraction": self._flow_reliable_fraction,
            # Where people the report leaves out are expected: tentative tracks (not yet confirmed), lost ones (where
            # the motion model has them) and those seen only as a weak sliver, for a detection schedule that looks
            # only around people (roi).
            UNREPORTED_BOXES: np.array([t.box_xyxy for t in self._tracks if t.track_id not in shown],
                                       dtype=np.float32).reshape(-1, 4),
        }
        if self._late:
            info[LATE_POSES] = {frame_index: Tracks(np.array([i for i, _ in entries], np.int64),
                                                    Poses.concatenate([pose for _, pose in entries]))
                                for frame_index, entries in self._late.items()}
        pending = [t.early[0][0] for t in self._tracks if t.early]
        if pending:
            info[PENDING_SINCE] = min(pending)
        return Tracks(np.array([t.track_id for _, t in report], dtype=np.int64), reported, info=info)
