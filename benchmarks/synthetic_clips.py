"""Synthetic crossing clips with exact identity and pose truth, made of real people and a real background.

People: eight fully visible pedestrians cut from the first frames of three MOT17 clips (../shared/data/mot17_mini:
MOT17-02, -09 and -11, ground-truth boxes with visibility 1). Their joints come from our YOLO11n-pose detector run
once on the full source frame at input 1280 (the detection with the highest IoU with the ground-truth box), so the
truth of a pasted person is that detector output moved and scaled by the paste: the same keypoint definition the
trackers are fed. Background: the PETS09 scene with its people removed (the per-pixel median of 60 frames).

Each clip is deterministic (seeded): people walk on straight lines across the frame at 0.5-0.9 body heights per
second (a walking pace), in both directions and at several depths, so they cross and hide each other; a pillar
hides whoever walks behind it. Nearer people (lower feet) are larger and drawn in front. The same scene in seconds
is sampled at 7, 25 or 30 fps, so per-frame motion differs while the scene does not. The cameras of syn7, syn25 and
syn30 are static; syn25pan's pans back and forth and shakes (ClipSpec.pan, .shake), so every person's image motion
is theirs plus the camera's, as in hand-held pose-tracking video. People, pillar and background all move with the
view; the background beyond the scene's edge is its mirror image.

Truth per frame and person: box (the mapped detector box, clipped to the frame) and joints; the fraction of the box
not covered by people in front or the pillar is its visibility. A person at least 30% visible is a target (box
ground truth conf 1, and a PoseTrack person with the joints that are visible); a person less visible but on screen
is a region neither scored as a hit nor as a miss (box conf 0; a PoseTrack ignore region).

A sprite is the rectangle of its person's MOT17 box, so it also holds parts of the people beside and behind them in
the source frame (five of the eight do: up to 62% of another person's box inside the crop). The detector finds
those people, correctly, and they move with the sprite; the truth cannot say who they are, so each of them (a
MOT17 ground-truth person of any person class with at least a quarter of their box inside the crop, or a box our
detector finds in the crop pasted alone on the background) is a region neither scored as a hit nor as a miss in the
box truth (conf 0), like the hidden people. Not in the pose truth: a
PoseTrack ignore region removes every joint inside it, and a bystander's box lies mostly inside the sprite's own
person, whose joints it would remove (measured on syn7: the IoU tracker's right-elbow AP 95 -> 58); so a
bystander's pose still counts as a false positive there, for every tracker alike.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from posetrack_app.config import AppConfig, replace
from posetrack_app.ops.boxes import box_iou, xyxy_to_xywh
from posetrack_app.structures import Frame
from tracker_suite import Clip, _read_video, shared_data

log = logging.getLogger("synthetic_clips")

# (MOT17 clip, ground-truth id in frame 1): large, fully visible pedestrians.
SPRITES = [("MOT17-09-FRCNN", 1), ("MOT17-09-FRCNN", 19), ("MOT17-02-FRCNN", 2), ("MOT17-02-FRCNN", 3),
           ("MOT17-02-FRCNN", 19), ("MOT17-11-FRCNN", 1), ("MOT17-11-FRCNN", 3), ("MOT17-11-FRCNN", 4)]
MIN_VISIBLE_FRACTION = 0.3   # below this a person is an ignore region, not a target
# MOT17 classes of people (pedestrian, person on vehicle, static person, distractor, reflection): any of them inside a
# sprite's crop is a person the detector may find there.
MOT17_PERSON_CLASSES = (1, 2, 7, 8, 12)
# Another person becomes a not-scored box (conf 0) of the sprite when at least this fraction of their box is inside
# the crop, and only while it overlaps the sprite's own person less than this IoU (so it never swallows that
# person's box).
BYSTANDER_MIN_INSIDE_FRACTION = 0.25
BYSTANDER_MAX_IOU_WITH_PERSON = 0.3
JOINT_TRUTH_MIN_SCORE = 0.5  # source joints the detector scored lower are not part of the truth
BYSTANDER_ID_BASE = 1000     # ground-truth ids of a sprite's bystanders: 1000 x (person id) + k


@dataclass(frozen=True)
class ClipSpec:
    fps: float
    duration_s: float
    size_wh: Tuple[int, int]
    people: int
    seed: int
    pillar: bool = True
    # A moving camera (0 = static): the view pans back and forth over the scene by up to `pan` frame widths, one
    # sweep each way per PAN_PERIOD_S, and shakes like a hand-held camera by up to `shake` frame heights.
    pan: float = 0.0
    shake: float = 0.0


SYNTHETIC_CLIPS: Dict[str, ClipSpec] = {
    "syn7": ClipSpec(fps=7.0, duration_s=20.0, size_wh=(960, 540), people=7, seed=7),
    "syn25": ClipSpec(fps=25.0, duration_s=10.0, size_wh=(640, 480), people=6, seed=25),
    "syn30": ClipSpec(fps=30.0, duration_s=8.0, size_wh=(960, 540), people=7, seed=30),
    # A hand-held camera following the action (the other clips' cameras are static, and the moving-camera MOT17
    # clips last 4-8 frames): image motion is the people's plus the camera's.
    "syn25pan": ClipSpec(fps=25.0, duration_s=8.0, size_wh=(960, 540), people=6, seed=26, pan=0.15, shake=0.01),
}
# One sweep of the pan each way takes this long; the shake mixes two hand tremors (Hz) on each axis.
PAN_PERIOD_S = 6.0
SHAKE_HZ = ((1.3, 2.9), (1.1, 2.3))
GENERATOR_VERSION = 1
# Ground truth only (the frames, and so the cached detections, are unchanged): 2 = bystanders inside sprites ignored.
TRUTH_VERSION = 2


@dataclass
class Sprite:
    image: np.ndarray        # BGR crop [h, w, 3]
    box_xyxy: np.ndarray     # detector box in crop pixels
    keypoints: np.ndarray    # [17, 3] crop pixels + score
    bystanders_xyxy: np.ndarray  # [M, 4] other people's boxes in crop pixels, clipped to the crop


def _sprites(cache_dir: Path) -> List[Sprite]:
    """The people, each with the detector's box and joints in its crop (detector output cached as JSON)."""
    cache = cache_dir / "synthetic_sprites.json"
    root = shared_data() / "mot17_mini"
    if cache.is_file():
        records = json.loads(cache.read_text())
    else:
        from posetrack_app.build import build_detector

        detector = build_detector(replace(AppConfig(), **{"detector.input_size": 1280}))
        records, frames = [], {}
        for seq, track_id in SPRITES:
            if seq not in frames:
                frames[seq] = cv2.imread(str(root / seq / "img1" / "000001.jpg"), cv2.IMREAD_COLOR)
            table = np.loadtxt(root / seq / "gt" / "gt.txt", delimiter=",", ndmin=2)
            row = table[(table[:, 0] == 1) & (table[:, 1] == track_id)][0]
            gt_xyxy = np.array([row[2], row[3], row[2] + row[4], row[3] + row[5]], np.float32)
            dets = detector(Frame(0, frames[seq]))
            best = int(np.argmax(box_iou(gt_xyxy[None], dets.boxes_xyxy)[0]))
            records.append({"seq": seq, "gt_xyxy": gt_xyxy.tolist(), "box_xyxy": dets.boxes_xyxy[best].tolist(),
                            "keypoints": dets.keypoints[best].tolist()})
        cache.write_text(json.dumps(records))
    detected = _sprite_detections(records, cache_dir)
    sprites = []
    for r, others in zip(records, detected):
        image = cv2.imread(str(root / r["seq"] / "img1" / "000001.jpg"), cv2.IMREAD_COLOR)
        x1, y1, x2, y2 = np.round(r["gt_xyxy"]).astype(int)
        offset = np.array([x1, y1], np.float32)
        keypoints = np.array(r["keypoints"], np.float32)
        keypoints[:, :2] -= offset
        box = np.array(r["box_xyxy"], np.float32) - np.tile(offset, 2)
        bystanders = _bystanders(root / r["seq"], np.array(r["gt_xyxy"], np.float32), box + np.tile(offset, 2), others)
        sprites.append(Sprite(image[y1:y2, x1:x2].copy(), box, keypoints, bystanders - np.tile(offset, 2)))
    return sprites


def _sprite_detections(records: List[dict], cache_dir: Path) -> List[np.ndarray]:
    """Per sprite: [M, 4] boxes (source-frame pixels) of every person our detector finds in the sprite's crop pasted
    on the background at a clip's scale (220 px tall in a 960x540 frame, input 960, score >= 0.1; cached as JSON).
    This finds bystanders the MOT17 truth boxes cannot place: a person behind the sprite's own person, whose box
    mostly lies inside that person's box while only a sliver of them shows."""
    cache = cache_dir / "synthetic_sprite_detections.json"
    if not cache.is_file():
        from posetrack_app.build import build_detector

        detector = build_detector(replace(AppConfig(), **{"detector.input_size": 960, "detector.score_threshold": 0.1}))
        root = shared_data() / "mot17_mini"
        background = _background((960, 540), cache_dir)
        found = []
        for r in records:
            x1, y1, x2, y2 = np.round(r["gt_xyxy"]).astype(int)
            crop = cv2.imread(str(root / r["seq"] / "img1" / "000001.jpg"), cv2.IMREAD_COLOR)[y1:y2, x1:x2]
            scale = 220.0 / crop.shape[0]
            small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ox, oy = (960 - small.shape[1]) // 2, (540 - small.shape[0]) // 2
            image = background.copy()
            image[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
            boxes = detector(Frame(0, image)).boxes_xyxy
            found.append(((boxes - np.array([ox, oy, ox, oy], np.float32)) / scale
                          + np.array([x1, y1, x1, y1], np.float32)).tolist())
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(found))
        tmp.replace(cache)
    return [np.array(boxes, np.float32).reshape(-1, 4) for boxes in json.loads(cache.read_text())]


def _bystanders(seq_root: Path, crop_xyxy: np.ndarray, person_xyxy: np.ndarray,
                detected_xyxy: np.ndarray) -> np.ndarray:
    """[M, 4] boxes (source-frame pixels, clipped to the crop) of the other people inside a sprite's crop: the MOT17
    ground-truth people of frame 1 and our detector's boxes in the crop (the person's own box excluded by the IoU
    limit)."""
    table = np.loadtxt(seq_root / "gt" / "gt.txt", delimiter=",", ndmin=2)
    rows = table[(table[:, 0] == 1) & np.isin(table[:, 7], MOT17_PERSON_CLASSES)]
    boxes = np.stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]], 1).astype(np.float32)
    boxes = np.concatenate([boxes, detected_xyxy])
    x1, y1, x2, y2 = np.round(crop_xyxy)
    clipped = np.clip(boxes, [x1, y1, x1, y1], [x2, y2, x2, y2])
    inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
    own = np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 1.0)
    keep = ((inside / own >= BYSTANDER_MIN_INSIDE_FRACTION)
            & (box_iou(clipped, person_xyxy[None])[:, 0] < BYSTANDER_MAX_IOU_WITH_PERSON))
    return clipped[keep].reshape(-1, 4)


def _background(size_wh, cache_dir: Path) -> np.ndarray:
    cache = cache_dir / "synthetic_background.png"
    if not cache.is_file():
        frames = _read_video(shared_data() / "pets09_s2l1" / "vtest.avi")
        picks = np.stack(frames[:: max(1, len(frames) // 60)])
        cv2.imwrite(str(cache), np.median(picks, axis=0).astype(np.uint8))
    return cv2.resize(cv2.imread(str(cache), cv2.IMREAD_COLOR), size_wh, interpolation=cv2.INTER_AREA)


def _walkers(spec: ClipSpec, sprites: List[Sprite]):
    """Per person: sprite index, feet y (px), height (px), start x, speed (px/s), start time (s)."""
    rng = np.random.default_rng(spec.seed)
    w, h = spec.size_wh
    walkers = []
    for p in range(spec.people):
        feet_y = h * rng.uniform(0.62, 0.98)
        height = h * (0.30 + 0.55 * (feet_y / h - 0.62))  # perspective: nearer is larger
        direction = 1 if p % 2 == 0 else -1
        speed = direction * height * rng.uniform(0.5, 0.9)
        span_s = (w + height) / abs(speed)
        start_s = rng.uniform(-0.3, 0.6) * min(span_s, spec.duration_s)
        start_x = -0.5 * height if direction > 0 else w + 0.5 * height
        walkers.append(dict(sprite=p % len(sprites), feet_y=feet_y, height=height, start_x=start_x,
                            speed=speed, start_s=start_s))
    return walkers


def _camera_offset(spec: ClipSpec, t: float) -> np.ndarray:
    """(x, y) pixels of the scene at the view's top-left corner at time `t` (0, 0 for a static camera)."""
    w, h = spec.size_wh
    x = spec.pan * w * np.sin(2 * np.pi * t / (2 * PAN_PERIOD_S))
    shake = [0.5 * spec.shake * h * sum(np.sin(2 * np.pi * hz * t + axis + k) for k, hz in enumerate(tremors))
             for axis, tremors in enumerate(SHAKE_HZ)]
    return np.array([x + shake[0], shake[1]], np.float32)


def _pillar(spec: ClipSpec):
    w, h = spec.size_wh
    return np.array([0.55 * w, 0.25 * h, 0.55 * w + 0.06 * w, h], np.float32) if spec.pillar else None


def render_clip(name: str, cache_dir: Path) -> Clip:
    from posetrack_app.io.posetrack_json import FrameAnnotation, Person, Sequence
    from posetrack_app.posetrack_layout import to_posetrack_layout
    from posetrack_app.skeleton import COCO17

    spec = SYNTHETIC_CLIPS[name]
    sprites = _sprites(cache_dir)
    background = _background(spec.size_wh, cache_dir)
    walkers = _walkers(spec, sprites)
    pillar = _pillar(spec)
    w, h = spec.size_wh
    n_frames = int(round(spec.duration_s * spec.fps))
    frames, gt, pose_frames = [], {}, []
    for i in range(n_frames):
        t = i / spec.fps
        cam_x, cam_y = _camera_offset(spec, t)
        if spec.pan or spec.shake:  # the background outside the scene is its mirror image
            image = cv2.warpAffine(background, np.float32([[1, 0, -cam_x], [0, 1, -cam_y]]), (w, h),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        else:
            image = background.copy()
        owner = np.full((h, w), -1, np.int32)
        placed = []
        for index, wk in enumerate(walkers):
            if t < wk["start_s"]:
                continue
            sprite = sprites[wk["sprite"]]
            scale = wk["height"] / sprite.image.shape[0]
            cx = wk["start_x"] + wk["speed"] * (t - wk["start_s"])
            x0 = cx - 0.5 * sprite.image.shape[1] * scale - cam_x
            y0 = wk["feet_y"] - wk["height"] - cam_y
            placed.append((wk["feet_y"], index, sprite, scale, x0, y0))
        for _, index, sprite, scale, x0, y0 in sorted(placed, key=lambda p: p[0]):  # far ones first
            # Sub-pixel paste by an affine warp, so motion is continuous at every frame rate.
            matrix = np.float32([[scale, 0, x0], [0, scale, y0]])
            warped = cv2.warpAffine(sprite.image, matrix, (w, h), flags=cv2.INTER_LINEAR)
            mask = cv2.warpAffine(np.full(sprite.image.shape[:2], 255, np.uint8), matrix, (w, h),
                                  flags=cv2.INTER_LINEAR) > 127
            image[mask] = warped[mask]
            owner[mask] = index
        if pillar is not None:
            px1, py1, px2, _ = (pillar - np.array([cam_x, cam_y, cam_x, cam_y])).astype(int)
            px1, py1, py2 = max(px1, 0), max(py1, 0), h  # it stands on the ground below the view
            image[py1:py2, px1:px2] = (70, 75, 80)
            owner[py1:py2, px1:px2] = -2
        frames.append(image)

        ids, boxes, confs, persons, ignore = [], [], [], [], []
        for _, index, sprite, scale, x0, y0 in placed:
            box = sprite.box_xyxy * scale + np.array([x0, y0, x0, y0], np.float32)
            clipped = np.clip(box, [0, 0, 0, 0], [w, h, w, h])
            area = max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
            cx1, cy1, cx2, cy2 = np.round(clipped).astype(int)
            if cx2 - cx1 < 2 or cy2 - cy1 < 2:
                continue
            visible = float((owner[cy1:cy2, cx1:cx2] == index).sum()) / area
            if visible <= 0.0:
                continue
            target = visible >= MIN_VISIBLE_FRACTION
            ids.append(index + 1)
            boxes.append(clipped)
            confs.append(1.0 if target else 0.0)
            if not target:
                ignore.append(np.array([[cx1, cy1], [cx2, cy1], [cx2, cy2], [cx1, cy2]], np.float64))
                continue
            joints = sprite.keypoints[:, :2] * scale + np.array([x0, y0], np.float32)
            inside = (joints[:, 0] >= 0) & (joints[:, 0] < w) & (joints[:, 1] >= 0) & (joints[:, 1] < h)
            jx = np.clip(joints[:, 0].astype(int), 0, w - 1)
            jy = np.clip(joints[:, 1].astype(int), 0, h - 1)
            seen = inside & (owner[jy, jx] == index) & (sprite.keypoints[:, 2] >= JOINT_TRUTH_MIN_SCORE)
            kp18, sc18 = to_posetrack_layout(joints[None], np.where(seen, 1.0, 0.0)[None], COCO17)
            present = ~np.isnan(sc18[0]) & (sc18[0] > 0.5)
            head = kp18[0][[0, 1, 2]]  # nose, head_bottom, head_top (derived by the head rule)
            head_size = 0.14 * (box[3] - box[1])
            center = head[[0, 2]].mean(axis=0)
            head_box = np.concatenate([center - head_size / 2, center + head_size / 2])
            persons.append(Person(track_id=index + 1, keypoints=np.where(present[:, None], kp18[0], 0.0),
                                  present=present, keypoint_scores=np.full(17, np.nan), head_box_xyxy=head_box,
                                  box_xyxy=clipped))
        for _, index, sprite, scale, x0, y0 in placed:
            for k, other in enumerate(sprite.bystanders_xyxy):
                box = np.clip(other * scale + np.array([x0, y0, x0, y0], np.float32), [0, 0, 0, 0], [w, h, w, h])
                bx1, by1, bx2, by2 = box
                if bx2 - bx1 < 2 or by2 - by1 < 2:
                    continue
                ids.append(BYSTANDER_ID_BASE * (index + 1) + k)
                boxes.append(box)
                confs.append(0.0)
        if ids:
            gt[i + 1] = (np.array(ids, np.int64), xyxy_to_xywh(np.array(boxes, np.float32)),
                         np.array(confs, np.float32))
        pose_frames.append(FrameAnnotation(file_name=f"{name}/{i:06d}.jpg", image_id=i, is_labeled=True,
                                           persons=persons, ignore_regions=ignore,
                                           image_info={"width": w, "height": h}))
    pose_gt = Sequence(name=name, frames=pose_frames)
    return Clip(name, spec.fps, frames, gt, pose_gt=pose_gt, group="synthetic", cache_key=cache_key(name))


def cache_key(name: str) -> str:
    digest = hashlib.sha1(repr((SYNTHETIC_CLIPS[name], SPRITES, GENERATOR_VERSION)).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def load_synthetic(name: str, cache_dir: Path) -> Clip:
    return render_clip(name, cache_dir)
