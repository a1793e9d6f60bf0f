"""PoseTrack sequence files: read and write the 2017 (``annolist``) and 2018 (COCO-style) formats.

Shape glossary:
    F  frames of a sequence (the entries of ``annolist`` or ``images``, in file order)
    K  keypoints in the PoseTrack-18 layout (17 slots, see skeleton.POSETRACK18; the ear slots stay empty)
    J  the 15 joints PoseTrack scores (``EVAL_JOINT_NAMES``, the 2017 files' point ids 0..14)

One sequence file holds one video. Both formats load into the same `Sequence` object, so the evaluator sees
no difference between them. Keypoints are stored by name in the PoseTrack-18 layout; a point is *present*
when the file annotates it:
    2017: a ``point`` entry with that id (the first one when ids repeat);
    2018: any keypoint triple other than (0, 0, 0) -- the official converter's rule, so a visibility-0
          point with real coordinates still counts.

Model output becomes persons of this layout in posetrack_app/posetrack_layout.py (the head rule lives there).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import UserError
from ..skeleton import POSETRACK18
from .atomic import write_json_atomic

log = logging.getLogger(__name__)

# The official evaluation's joint order: the point ids of 2017 files. The official code calls
# head_bottom "neck"; tables print it that way.
EVAL_JOINT_NAMES: Tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)
NUM_EVAL_JOINTS = len(EVAL_JOINT_NAMES)
NUM_KEYPOINTS = POSETRACK18.num_keypoints
# For each eval joint j, its slot in the PoseTrack-18 layout.
EVAL_TO_LAYOUT = np.array([POSETRACK18.index(n) for n in EVAL_JOINT_NAMES], dtype=np.int64)

FORMAT_2017 = "2017"
FORMAT_2018 = "2018"

CATEGORY_2018 = {
    "supercategory": "person",
    "id": 1,
    "name": "person",
    "keypoints": list(POSETRACK18.keypoint_names),
    # 1-based limb pairs, as PoseTrack 2018 files carry them.
    "skeleton": [[a + 1, b + 1] for a, b in POSETRACK18.limbs.tolist()],
}


class PoseTrackFormatError(UserError):
    """A PoseTrack file that cannot be read or does not fit the format; the message names the file."""


@dataclass
class Person:
    """One annotated or predicted person in one frame.

    keypoints: float64 [K, 2] image pixels (PoseTrack-18 layout); present: bool [K];
    keypoint_scores: float64 [K], NaN where the file gives no score;
    head_box_xyxy: float64 [4] or None; box_xyxy: float64 [4] or None.
    has_point_list: False for a 2017 person whose ``annopoints`` is missing or empty. The official tool
    drops such persons before scoring, but keeps a 2018 person with no keypoints (an empty point list),
    so the flag keeps both behaviours.
    """

    track_id: int
    keypoints: np.ndarray
    present: np.ndarray
    keypoint_scores: np.ndarray
    head_box_xyxy: Optional[np.ndarray] = None
    box_xyxy: Optional[np.ndarray] = None
    score: Optional[float] = None
    has_point_list: bool = True

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 2)
        self.present = np.asarray(self.present, dtype=bool).reshape(NUM_KEYPOINTS)
        self.keypoint_scores = np.asarray(self.keypoint_scores, dtype=np.float64).reshape(NUM_KEYPOINTS)
        if self.head_box_xyxy is not None:
            self.head_box_xyxy = np.asarray(self.head_box_xyxy, dtype=np.float64).reshape(4)
        if self.box_xyxy is not None:
            self.box_xyxy = np.asarray(self.box_xyxy, dtype=np.float64).reshape(4)

    @property
    def num_points(self) -> int:
        return int(self.present.sum())


@dataclass
class FrameAnnotation:
    """One frame of a sequence file.

    ignore_regions: list of float64 [P, 2] polygons (x, y); points strictly inside are not scored.
    image_info: the 2018 ``images`` entry's other fields (width, height, vid_id, ...), kept for writing.
    """

    file_name: str
    image_id: Optional[int] = None
    is_labeled: bool = False
    persons: List[Person] = field(default_factory=list)
    ignore_regions: List[np.ndarray] = field(default_factory=list)
    image_info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Sequence:
    """One PoseTrack sequence file. `format` is the format it was read from ("2017" or "2018")."""

    name: str
    frames: List[FrameAnnotation]
    format: str = FORMAT_2018
    path: Optional[Path] = None

    def __len__(self) -> int:
        return len(self.frames)


# ----------------------------------------------------------------------------------------------- reading

def _fail(path, message: str) -> PoseTrackFormatError:
    return PoseTrackFormatError(f"{path}: {message}")


def _number(value, path, what: str):
    """A JSON number that is finite: NaN and Infinity (which Python's JSON reader accepts), strings and booleans
    are refused, naming the file and the place, since they would silently change every score."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"{what} must be a finite number, got {value!r}")
    return value


def _scalar(value, path, what: str):
    """2017 files wrap scalars in one-element lists; accept both."""
    if isinstance(value, list):
        if len(value) != 1:
            raise _fail(path, f"{what} must be a number or a one-element list, got {value!r}")
        value = value[0]
    return _number(value, path, what)


def _empty_person_arrays():
    return (np.zeros((NUM_KEYPOINTS, 2)), np.zeros(NUM_KEYPOINTS, bool), np.full(NUM_KEYPOINTS, np.nan))


def _polygon(xs, ys, path, where: str) -> np.ndarray:
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
        raise _fail(path, f"{where}: an ignore region needs lists of x and y coordinates of one length, got "
                          f"{xs!r} and {ys!r}")
    for value in (*xs, *ys):
        _number(value, path, f"{where}: ignore region coordinate")
    return np.asarray([xs, ys], dtype=np.float64).T.reshape(-1, 2)


def _track_id(value, path, where: str) -> int:
    if value is None:
        raise _fail(path, f"{where}: person has no track_id; PoseTrack files need one per person")
    value = _scalar(value, path, f"{where}: track_id")
    if float(value) != int(value):
        raise _fail(path, f"{where}: track_id must be an integer, got {value!r}")
    return int(value)


def _parse_2017(data: dict, path: Path, name: str) -> Sequence:
    annolist = data["annolist"]
    if not isinstance(annolist, list):
        raise _fail(path, "'annolist' must be a list of frames")
    frames = []
    for f_idx, entry in enumerate(annolist):
        where = f"frame {f_idx}"
        if not isinstance(entry, dict):
            raise _fail(path, f"{where}: expected an object, got {type(entry).__name__}")
        image = entry.get("image")
        if isinstance(image, list) and image and isinstance(image[0], dict):
            file_name = str(image[0].get("name", ""))
        elif isinstance(image, dict):
            file_name = str(image.get("name", ""))
        else:
            file_name = ""
        imgnum = entry.get("imgnum")
        image_id = int(_scalar(imgnum, path, f"{where}: imgnum")) if imgnum is not None else None
        persons = []
        for p_idx, rect in enumerate(entry.get("annorect") or []):
            pwhere = f"{where} ({file_name or 'no file name'}), person {p_idx}"
            keypoints, present, scores = _empty_person_arrays()
            annopoints = rect.get("annopoints")
            has_point_list = bool(annopoints) and isinstance(annopoints[0], dict) and "point" in annopoints[0]
            if has_point_list:
                for point in annopoints[0]["point"] or []:
                    joint = int(_scalar(point.get("id"), path, f"{pwhere}: point id"))
                    if not 0 <= joint < NUM_EVAL_JOINTS:
                        raise _fail(path, f"{pwhere}: point id {joint} is outside 0..14 (the PoseTrack 2017 joint ids)")
                    slot = EVAL_TO_LAYOUT[joint]
                    if present[slot]:
                        continue  # the official tool takes the first point with an id
                    keypoints[slot] = (_scalar(point.get("x"), path, f"{pwhere}: x"),
                                       _scalar(point.get("y"), path, f"{pwhere}: y"))
                    present[slot] = True
                    if "score" in point:
                        scores[slot] = _scalar(point["score"], path, f"{pwhere}: score")
            head = None
            if all(k in rect for k in ("x1", "y1", "x2", "y2")):
                head = [_scalar(rect[k], path, f"{pwhere}: {k}") for k in ("x1", "y1", "x2", "y2")]
            score = _scalar(rect["score"], path, f"{pwhere}: score") if "score" in rect else None
            persons.append(Person(
                track_id=_track_id(rect.get("track_id"), path, pwhere),
                keypoints=keypoints, present=present, keypoint_scores=scores, head_box_xyxy=head,
                score=score, has_point_list=has_point_list,
            ))
        regions = []
        for r_idx, region in enumerate(entry.get("ignore_regions") or []):
            points = region.get("point") or []
            xs = [_scalar(p.get("x"), path, f"{where}: ignore region {r_idx} x") for p in points]
            ys = [_scalar(p.get("y"), path, f"{where}: ignore region {r_idx} y") for p in points]
            regions.append(_polygon(xs, ys, path, where))
        labeled = entry.get("is_labeled")
        is_labeled = bool(_scalar(labeled, path, f"{where}: is_labeled")) if labeled is not None else bool(persons)
        frames.append(FrameAnnotation(file_name=file_name, image_id=image_id, is_labeled=is_labeled,
                                      persons=persons, ignore_regions=regions))
    return Sequence(name=name, frames=frames, format=FORMAT_2017, path=path)


def _category_mapping(data: dict, path: Path) -> Tuple[List[str], np.ndarray]:
    """The file category's keypoint names [K_file] and, for each, its PoseTrack-18 slot or -1 (not scored)."""
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise _fail(path, "no 'categories' entry: a PoseTrack 2018 file names its keypoints there")
    persons = [c for c in categories if isinstance(c, dict) and c.get("name") == "person"] or categories[:1]
    names = persons[0].get("keypoints")
    if not isinstance(names, list) or not names:
        raise _fail(path, "the person category has no 'keypoints' list of names")
    missing = [n for n in EVAL_JOINT_NAMES if n not in names]
    if missing:
        hint = ""
        if "left_eye" in names and "head_top" in missing:
            hint = (" -- this is the COCO-17 layout; convert it with posetrack_app (the batch command writes "
                    "PoseTrack files and derives head_bottom/head_top, see docs/posetrack.md)")
        raise _fail(path, f"unknown keypoint layout: the category lacks {', '.join(missing)}; PoseTrack needs "
                          f"{', '.join(EVAL_JOINT_NAMES)}{hint}")
    return [str(n) for n in names], np.array([POSETRACK18.index(n) if n in POSETRACK18.keypoint_names
                                              and n not in ("left_ear", "right_ear") else -1 for n in names],
                                             dtype=np.int64)


def _box_xywh_to_xyxy(box, path, where: str) -> Optional[np.ndarray]:
    if box is None:
        return None
    if not isinstance(box, list) or len(box) != 4:
        raise _fail(path, f"{where}: a box must be [x, y, width, height], got {box!r}")
    x, y, w, h = (float(_number(v, path, f"{where}: box value")) for v in box)
    return np.array([x, y, x + w, y + h])


def _parse_2018(data: dict, path: Path, name: str) -> Sequence:
    images = data.get("images")
    annotations = data.get("annotations", [])
    if not isinstance(images, list):
        raise _fail(path, "'images' must be a list of frames")
    if not isinstance(annotations, list):
        raise _fail(path, "'annotations' must be a list of persons")
    names, mapping = _category_mapping(data, path)
    num_file_keypoints = len(mapping)
    frames = []
    index_of_image: Dict[Any, int] = {}
    for f_idx, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image:
            raise _fail(path, f"image {f_idx} has no 'id'")
        if image["id"] in index_of_image:
            raise _fail(path, f"image id {image['id']} occurs twice in 'images'")
        index_of_image[image["id"]] = f_idx
        xs, ys = image.get("ignore_regions_x") or [], image.get("ignore_regions_y") or []
        if len(xs) != len(ys):
            raise _fail(path, f"image {f_idx}: {len(xs)} ignore_regions_x but {len(ys)} ignore_regions_y")
        info = {k: v for k, v in image.items()
                if k not in ("file_name", "id", "is_labeled", "ignore_regions_x", "ignore_regions_y")}
        frames.append(FrameAnnotation(
            file_name=str(image.get("file_name", "")), image_id=image["id"],
            is_labeled=bool(image.get("is_labeled", False)),
            ignore_regions=[_polygon(x, y, path, f"image {f_idx}") for x, y in zip(xs, ys)],
            image_info=info,
        ))
    for a_idx, ann in enumerate(annotations):
        where = f"annotation {a_idx}"
        if not isinstance(ann, dict):
            raise _fail(path, f"{where}: expected an object")
        if ann.get("image_id") not in index_of_image:
            raise _fail(path, f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        f_idx = index_of_image[ann["image_id"]]
        where = (f"frame {f_idx} ({frames[f_idx].file_name or 'no file name'}), person "
                 f"{len(frames[f_idx].persons)} (annotation {a_idx})")
        raw = ann.get("keypoints")
        if not isinstance(raw, list) or len(raw) != 3 * num_file_keypoints:
            got = len(raw) if isinstance(raw, list) else raw
            raise _fail(path, f"{where}: 'keypoints' must hold {num_file_keypoints} x (x, y, v) = "
                              f"{3 * num_file_keypoints} numbers as the category names them, got {got}")
        for i, value in enumerate(raw):
            _number(value, path, f"{where}: keypoint {names[i // 3]} {'xyv'[i % 3]}")
        triples = np.asarray(raw, dtype=np.float64).reshape(num_file_keypoints, 3)
        file_scores = ann.get("scores") or []
        if not isinstance(file_scores, list) or (file_scores and len(file_scores) != num_file_keypoints):
            raise _fail(path, f"{where}: 'scores' must be empty or hold one value per keypoint "
                              f"({num_file_keypoints}), got {file_scores!r}")
        for i, value in enumerate(file_scores):
            _number(value, path, f"{where}: score of keypoint {names[i]}")
        keypoints, present, scores = _empty_person_arrays()
        for k_file, slot in enumerate(mapping):
            if slot < 0:
                continue
            x, y, v = triples[k_file]
            if x == 0 and y == 0 and v == 0:
                continue  # how 2018 files mark a keypoint that is not there
            keypoints[slot] = (x, y)
            present[slot] = True
            if file_scores:
                scores[slot] = float(file_scores[k_file])
        score = ann.get("score")
        frames[index_of_image[ann["image_id"]]].persons.append(Person(
            track_id=_track_id(ann.get("track_id"), path, where),
            keypoints=keypoints, present=present, keypoint_scores=scores,
            head_box_xyxy=_box_xywh_to_xyxy(ann.get("bbox_head"), path, where),
            box_xyxy=_box_xywh_to_xyxy(ann.get("bbox"), path, where),
            score=float(_scalar(score, path, f"{where}: score")) if score is not None else None,
        ))
    return Sequence(name=name, frames=frames, format=FORMAT_2018, path=path)


def parse_sequence(data: Any, path, name: Optional[str] = None) -> Sequence:
    """A loaded JSON object -> Sequence; `path` only names the source in errors."""
    path = Path(path)
    name = name or path.stem
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object, got {type(data).__name__}")
    try:
        if "annolist" in data:
            return _parse_2017(data, path, name)
        if "images" in data:
            return _parse_2018(data, path, name)
    except PoseTrackFormatError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise _fail(path, f"malformed PoseTrack file ({type(exc).__name__}: {exc})") from None
    raise _fail(path, "neither a PoseTrack 2017 file ('annolist') nor a 2018 file ('images', 'annotations')")


def read_sequence(path) -> Sequence:
    """Read one PoseTrack 2017 or 2018 sequence file (the format is detected from its keys)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PoseTrackFormatError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PoseTrackFormatError(f"{path}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoseTrackFormatError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return parse_sequence(data, path)


# ----------------------------------------------------------------------------------------------- writing

def _num(value) -> Any:
    """JSON-friendly number: ints stay ints, floats are rounded to 1/1000 pixel to keep files small."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 3)


def sequence_to_2018(sequence: Sequence) -> dict:
    images, annotations = [], []
    nframes = len(sequence.frames)
    for f_idx, frame in enumerate(sequence.frames):
        image_id = frame.image_id if frame.image_id is not None else f_idx
        image = {"file_name": frame.file_name, "id": image_id, "is_labeled": bool(frame.is_labeled)}
        image.update(frame.image_info)
        image.setdefault("nframes", nframes)
        image.setdefault("frame_id", image_id)
        if frame.ignore_regions:
            image["ignore_regions_x"] = [[_num(v) for v in r[:, 0]] for r in frame.ignore_regions]
            image["ignore_regions_y"] = [[_num(v) for v in r[:, 1]] for r in frame.ignore_regions]
        images.append(image)
        for p_idx, person in enumerate(frame.persons):
            triples = []
            for k in range(NUM_KEYPOINTS):
                if person.present[k]:
                    triples += [_num(person.keypoints[k, 0]), _num(person.keypoints[k, 1]), 1]
                else:
                    triples += [0, 0, 0]
            ann = {
                "id": int(image_id) * 100 + p_idx if isinstance(image_id, int) else f"{image_id}_{p_idx}",
                "image_id": image_id,
                "category_id": 1,
                "track_id": int(person.track_id),
                "keypoints": triples,
                "scores": [],
            }
            scored = person.present & ~np.isnan(person.keypoint_scores)
            if scored.any():
                ann["scores"] = [round(float(s), 5) if ok else 0.0
                                 for s, ok in zip(person.keypoint_scores, scored)]
            if person.head_box_xyxy is not None:
                x1, y1, x2, y2 = person.head_box_xyxy
                ann["bbox_head"] = [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)]
            if person.box_xyxy is not None:
                x1, y1, x2, y2 = person.box_xyxy
                ann["bbox"] = [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)]
            if person.score is not None:
                ann["score"] = round(float(person.score), 5)
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": [dict(CATEGORY_2018)]}


def sequence_to_2017(sequence: Sequence) -> dict:
    annolist = []
    for f_idx, frame in enumerate(sequence.frames):
        rects = []
        for person in frame.persons:
            rect: Dict[str, Any] = {"track_id": [int(person.track_id)]}
            if person.has_point_list:
                points = []
                for joint, slot in enumerate(EVAL_TO_LAYOUT):
                    if not person.present[slot]:
                        continue
                    point = {"id": [joint], "x": [_num(person.keypoints[slot, 0])],
                             "y": [_num(person.keypoints[slot, 1])]}
                    if not np.isnan(person.keypoint_scores[slot]):
                        point["score"] = [round(float(person.keypoint_scores[slot]), 5)]
                    points.append(point)
                rect["annopoints"] = [{"point": points}]
            else:
                rect["annopoints"] = []
            if person.head_box_xyxy is not None:
                for key, value in zip(("x1", "y1", "x2", "y2"), person.head_box_xyxy):
                    rect[key] = [_num(value)]
            if person.score is not None:
                rect["score"] = [round(float(person.score), 5)]
            rects.append(rect)
        entry = {
            "image": [{"name": frame.file_name}],
            "imgnum": [int(frame.image_id) if isinstance(frame.image_id, int) else f_idx + 1],
            "is_labeled": [int(bool(frame.is_labeled))],
            "annorect": rects,
        }
        if frame.ignore_regions:
            entry["ignore_regions"] = [
                {"point": [{"x": [_num(x)], "y": [_num(y)]} for x, y in region]} for region in frame.ignore_regions
            ]
        annolist.append(entry)
    return {"annolist": annolist}


def sequence_to_json(sequence: Sequence, fmt: Optional[str] = None) -> dict:
    fmt = fmt or sequence.format
    if fmt == FORMAT_2018:
        return sequence_to_2018(sequence)
    if fmt == FORMAT_2017:
        return sequence_to_2017(sequence)
    raise ValueError(f"unknown PoseTrack format {fmt!r}; choose {FORMAT_2017} or {FORMAT_2018}")


def write_sequence(path, sequence: Sequence, fmt: Optional[str] = None) -> None:
    """Write atomically in `fmt` ("2017" / "2018"; default: the format the sequence was read from)."""
    write_json_atomic(path, sequence_to_json(sequence, fmt))
