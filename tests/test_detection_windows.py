"""Detection in windows around expected people (detector.schedule=roi): the window geometry, the detector run on
windows, and the schedule that chooses them.

Oracle for the detector: a stand-in network that "detects" every solid white rectangle in whatever input it gets, as
one anchor with its box (and its corners as keypoints) in that input's pixels. Run on windows, the detector must
give the whole frame's detections in image pixels for the people inside them, and nobody cut by a window edge."""
import numpy as np
import pytest

from posetrack_app.detection.detector import YoloPoseDetector
from posetrack_app.detection.schedule import TIMES_KEPT, UNDECIDED, RegionSchedule, build_schedule
from posetrack_app.detection.windows import CUT_TOLERANCE_PX, detection_windows, window_output_to_input
from posetrack_app.structures import UNREPORTED_BOXES, Frame, Poses, Tracks

K = 17


@pytest.mark.parametrize("regions, input_hw, expected", [
    # one region: snapped outward to the 32-pixel grid
    ([[40, 70, 100, 130]], (480, 640), [[32, 64, 128, 160]]),
    # already on the grid: unchanged
    ([[64, 64, 128, 192]], (480, 640), [[64, 64, 128, 192]]),
    # reaching out of the input: clipped to it
    ([[-50, -10, 60, 90]], (480, 640), [[0, 0, 64, 96]]),
    ([[600, 400, 700, 520]], (480, 640), [[576, 384, 640, 480]]),
    # two apart: two windows
    ([[10, 10, 50, 50], [300, 300, 340, 340]], (480, 640), [[0, 0, 64, 64], [288, 288, 352, 352]]),
    # overlapping after snapping: one bounding window
    ([[10, 10, 70, 50], [66, 40, 120, 100]], (480, 640), [[0, 0, 128, 128]]),
    # merged in a chain: a and c overlap only once a and b are one window
    ([[0, 0, 60, 60], [100, 0, 200, 20], [50, 50, 120, 120]], (480, 640), [[0, 0, 224, 128]]),
    # touching on the grid without overlap: kept apart
    ([[0, 0, 64, 64], [64, 0, 128, 64]], (480, 640), [[0, 0, 64, 64], [64, 0, 128, 64]]),
])
def test_windows_cover_regions_on_the_stride_grid(regions, input_hw, expected):
    windows = detection_windows(np.array(regions, np.float32), input_hw)
    assert sorted(windows.tolist()) == sorted(expected)


@pytest.mark.parametrize("seed", range(20))
def test_windows_cover_every_region_on_the_grid_without_overlapping(seed):
    rng = np.random.default_rng(seed)
    corners = rng.uniform(-50, 700, size=(int(rng.integers(1, 12)), 2))
    regions = np.concatenate([corners, corners + rng.uniform(10, 120, size=corners.shape)], axis=1)
    windows = detection_windows(regions, (480, 640), max_area_fraction=1.01)
    if windows is None:  # every region outside the input
        assert np.all((regions[:, 0] >= 640) | (regions[:, 1] >= 480) | (regions[:, 2] <= 0) | (regions[:, 3] <= 0))
        return
    assert np.all(windows % 32 == 0) and np.all(windows[:, :2] >= 0) and np.all(windows[:, 2:] <= [640, 480])
    for a in range(len(windows)):
        for b in range(a + 1, len(windows)):
            wa, wb = windows[a], windows[b]
            assert min(wa[2], wb[2]) <= max(wa[0], wb[0]) or min(wa[3], wb[3]) <= max(wa[1], wb[1])
    clipped = np.clip(regions, 0, [640, 480, 640, 480])
    for region in clipped[(clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])]:
        assert np.any(np.all(windows[:, :2] <= region[:2], axis=1) & np.all(windows[:, 2:] >= region[2:], axis=1))


@pytest.mark.parametrize("regions, max_fraction", [
    ([], 0.6),                            # nobody expected
    ([[0, 0, 640, 480]], 0.6),            # the whole input
    ([[0, 0, 400, 480]], 0.6),            # 62.5% of it
    ([[0, 0, 320, 480]], 0.5),            # 50% of it, at a threshold of 50%
    ([[-100, -100, -10, -10]], 0.6),      # outside the input: empty once clipped
])
def test_whole_input_when_windows_would_cover_most_of_it_or_nothing(regions, max_fraction):
    assert detection_windows(np.array(regions, np.float32).reshape(-1, 4), (480, 640), max_fraction) is None


def test_window_output_is_moved_to_input_pixels_and_cut_people_dropped():
    window = (64, 32, 256, 224)  # every edge inside the 480x640 input
    anchors = [  # cx, cy, w, h in window pixels
        (96, 96, 40, 80),                       # well inside: kept
        (CUT_TOLERANCE_PX + 5, 96, 20, 40),     # left edge within tolerance of the window's left edge: cut
        (96, 192 - 10, 20, 30),                 # bottom edge 5 px from the window's bottom: cut
        (100, 100, 300, 40),                    # wider than the window: cut on both sides
    ]
    output = np.zeros((1, 5 + 3 * K, len(anchors)), np.float32)
    for a, (cx, cy, w, h) in enumerate(anchors):
        output[0, :5, a] = [cx, cy, w, h, 0.9]
        output[0, 5::3, a] = cx + np.arange(K)
        output[0, 6::3, a] = cy - np.arange(K)
        output[0, 7::3, a] = 0.5
    moved = window_output_to_input(output, np.array(window), (480, 640))
    assert moved.shape == (1, 5 + 3 * K, 1)
    np.testing.assert_allclose(moved[0, :5, 0], [96 + 64, 96 + 32, 40, 80, 0.9])
    np.testing.assert_allclose(moved[0, 5::3, 0], 96 + 64 + np.arange(K))
    np.testing.assert_allclose(moved[0, 6::3, 0], 96 + 32 - np.arange(K))
    np.testing.assert_allclose(moved[0, 7::3, 0], 0.5)
    output[0, 4] = 0.0  # the result is a copy
    assert moved[0, 4, 0] == pytest.approx(0.9)


@pytest.mark.parametrize("window, kept", [
    ((0, 0, 192, 160), True),       # the window's left and top edges are the input's: a person there is not cut
    ((32, 0, 192, 160), False),     # the left edge is inside the input: cut
])
def test_edges_of_the_input_do_not_cut(window, kept):
    output = np.zeros((1, 5 + 3 * K, 1), np.float32)
    output[0, :5, 0] = [10, 10, 20, 20, 0.9]  # touches the window's left and top edges
    moved = window_output_to_input(output, np.array(window), (160, 192))
    assert moved.shape[2] == (1 if kept else 0)


class WhiteBoxNetwork:
    """Host-backend stand-in: every solid white rectangle of the input [1, 3, S, T] is one anchor (its box, score
    0.9, its corners and centre as keypoints); records each input's shape."""

    host_io = True
    fixed_hw = None
    runs_windows = True
    description = "white boxes"
    providers = ()

    def __init__(self):
        self.shapes = []

    def run(self, blob, score_threshold):
        import cv2

        self.shapes.append(blob.shape[2:])
        white = (blob[0].min(axis=0) > 0.99).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(white, connectivity=4)
        out = np.zeros((1, 5 + 3 * K, count - 1), np.float32)
        for a, (x, y, w, h, _) in enumerate(stats[1:]):
            out[0, :5, a] = [x + w / 2, y + h / 2, w, h, 0.9]
            out[0, 5::3, a] = x + (np.arange(K) % 3) * w / 2
            out[0, 6::3, a] = y + (np.arange(K) // 3 % 3) * h / 2
            out[0, 7::3, a] = 0.8
        return out

    def close(self):
        pass


def _frame_with_people(boxes, size_wh=(640, 480)):
    image = np.full((size_wh[1], size_wh[0], 3), 40, np.uint8)
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = 255
    return Frame(0, image)


PEOPLE = [(40, 60, 90, 200), (300, 100, 340, 190), (500, 300, 560, 420)]


@pytest.mark.parametrize("frame_wh, input_size", [((640, 480), 640), ((768, 576), 640), ((640, 480), 960)])
def test_detections_in_windows_are_the_whole_frames_for_the_people_inside(frame_wh, input_size):
    frame = _frame_with_people(PEOPLE, frame_wh)
    whole = YoloPoseDetector(WhiteBoxNetwork(), input_size=input_size, nms_iou_threshold=0.7)(frame)
    assert len(whole) == 3
    network = WhiteBoxNetwork()
    detector = YoloPoseDetector(network, input_size=input_size, nms_iou_threshold=0.7)
    # Around the first and last person only, with room around them.
    regions = np.array([[20, 40, 110, 220], [480, 280, 580, 440]], np.float32)
    found = detector(frame, regions)
    assert len(network.shapes) == 2 and all(h * w < 0.6 * 480 * 640 for h, w in network.shapes)
    order = np.argsort(found.boxes_xyxy[:, 0])
    expected = whole.select(np.array([0, 2]) if whole.boxes_xyxy[0, 0] < whole.boxes_xyxy[2, 0] else np.array([2, 0]))
    expected = expected.select(np.argsort(expected.boxes_xyxy[:, 0]))
    np.testing.assert_allclose(found.boxes_xyxy[order], expected.boxes_xyxy, atol=1e-3)
    np.testing.assert_allclose(found.keypoints[order], expected.keypoints, atol=1e-3)
    np.testing.assert_allclose(found.scores[order], expected.scores)


def test_a_person_cut_by_a_window_edge_is_not_kept():
    frame = _frame_with_people(PEOPLE)
    detector = YoloPoseDetector(WhiteBoxNetwork(), input_size=640)
    # A region that holds the first person and reaches halfway into the second.
    found = detector(frame, np.array([[20, 40, 320, 220]], np.float32))
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes_xyxy[0], PEOPLE[0], atol=1e-3)


@pytest.mark.parametrize("regions", [None, np.zeros((0, 4), np.float32), np.array([[0, 0, 600, 470]], np.float32)])
def test_no_regions_or_regions_covering_most_of_the_frame_run_it_whole(regions):
    frame = _frame_with_people(PEOPLE)
    network = WhiteBoxNetwork()
    found = YoloPoseDetector(network, input_size=640)(frame, regions)
    assert network.shapes == [(480, 640)] and len(found) == 3


def _tracks(boxes, ids=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    poses = Poses(np.zeros((n, K, 2), np.float32), np.zeros((n, K), np.float32), boxes, np.ones(n, np.float32))
    return Tracks(np.arange(n) if ids is None else np.array(ids), poses)


def _frames(count, fps=10.0):
    image = np.zeros((8, 8, 3), np.uint8)
    return [Frame(i, image, i / fps) for i in range(count)]


def _ask_and_observe(schedule, frames, people, ids=None):
    """Asks about each frame in turn, then observes its tracks (`people[n]`: boxes); the answers."""
    answers = []
    for n, frame in enumerate(frames):
        assert schedule.should_detect(frame, n)
        answers.append(schedule.regions(frame, n))
        schedule.observe(frame, _tracks(people[n], None if ids is None else ids[n]), True)
    return answers


def test_region_schedule_looks_around_the_tracks_of_the_frame_before():
    schedule = RegionSchedule(full_interval_s=10.0, margin=0.5)
    frames = _frames(6)
    people = [[[0, 0, 20, 40]], [[0, 0, 20, 40], [100, 0, 140, 20]], [[0, 0, 20, 40]], [], [[50, 50, 70, 90]],
              [[50, 50, 70, 90]]]
    ids = [[1], [1, 2], [1], [], [3], [3]]
    answers = _ask_and_observe(schedule, frames, people, ids)
    # The first frame, and the frame after one with nobody tracked, are whole.
    assert answers[0] is None and answers[4] is None
    # Each box grown by half its longer side on every side (still people: no motion to add).
    np.testing.assert_allclose(answers[1], [[-20, -20, 40, 60]])
    np.testing.assert_allclose(answers[2], [[-20, -20, 40, 60], [80, -20, 160, 40]])
    np.testing.assert_allclose(answers[3], [[-20, -20, 40, 60]])
    np.testing.assert_allclose(answers[5], [[30, 30, 90, 110]])


def test_region_schedule_adds_where_a_moving_person_will_be():
    schedule = RegionSchedule(full_interval_s=10.0, margin=0.5)
    frames = _frames(4)  # 10 fps
    people = [[[10 * n, 0, 10 * n + 20, 40]] for n in range(4)]  # 10 px a frame to the right
    answers = _ask_and_observe(schedule, frames, people, [[7]] * 4)
    # Frame 1: no velocity yet (one frame seen): the box of frame 0, grown by 20.
    np.testing.assert_allclose(answers[1], [[-20, -20, 40, 60]])
    # Frame n >= 2: the box of frame n - 1 and that box moved on by one frame's 10 px, grown by 20.
    for n in (2, 3):
        np.testing.assert_allclose(answers[n], [[10 * (n - 1) - 20, -20, 10 * n + 40, 60]])
    # Another person with the same box before does not lend its velocity (ids differ).
    schedule = RegionSchedule(full_interval_s=10.0, margin=0.5)
    answers = _ask_and_observe(schedule, frames, people, [[7], [8], [9], [10]])
    np.testing.assert_allclose(answers[3], [[0, -20, 60, 60]])


def test_region_schedule_looks_where_the_tracker_expects_unreported_people():
    schedule = RegionSchedule(full_interval_s=10.0, margin=0.25)
    frames = _frames(2)
    schedule.regions(frames[0], 0)
    tracks = _tracks([[0, 0, 40, 40]])
    tracks.info[UNREPORTED_BOXES] = np.array([[200, 100, 240, 180]], np.float32)  # e.g. a lost track
    schedule.observe(frames[0], tracks, True)
    np.testing.assert_allclose(schedule.regions(frames[1], 1), [[-10, -10, 50, 50], [180, 80, 260, 200]])


@pytest.mark.parametrize("fps, interval_s, expected_whole", [
    (10.0, 0.3, [0, 3, 6, 9]),
    (10.0, 1.0, [0, 10]),
    (7.0, 0.3, [0, 3, 5, 7, 9, 11]),
    (30.0, 0.3, [0, 9]),
    (10.0, 0.0, list(range(12))),     # 0: every frame whole
])
def test_region_schedule_runs_a_whole_frame_every_interval(fps, interval_s, expected_whole):
    schedule = RegionSchedule(full_interval_s=interval_s, margin=0.5)
    frames = _frames(12, fps)
    answers = _ask_and_observe(schedule, frames, [[[0, 0, 10, 10]]] * 12)
    assert [n for n, a in enumerate(answers) if a is None] == expected_whole


def test_region_schedule_is_undecided_about_windows_until_the_frame_before_is_tracked():
    schedule = RegionSchedule(full_interval_s=0.3, margin=0.5)
    frames = _frames(5)  # 10 fps: frame 3 starts a new 0.3 s stretch
    # A pipeline detecting three frames ahead asks about frames 0-3 before any is tracked.
    early = [schedule.regions(frame, n) for n, frame in enumerate(frames[:4])]
    assert early[0] is None and early[3] is None  # whole frames on the clock are known ahead
    assert early[1] is UNDECIDED and early[2] is UNDECIDED
    answers = []
    for n, frame in enumerate(frames):
        answers.append(schedule.regions(frame, n))  # at the frame's turn
        schedule.observe(frame, _tracks([[0, 0, 10, 10]]), True)
    assert answers[0] is None and answers[3] is None
    assert all(isinstance(answers[n], np.ndarray) for n in (1, 2, 4))


def test_region_schedule_restarts_on_a_new_sequence():
    schedule = RegionSchedule(full_interval_s=10.0, margin=0.0)
    frames = _frames(3)
    _ask_and_observe(schedule, frames, [[[1, 2, 3, 4]]] * 3)
    # The same frame 0 asked again keeps what was seen; a new sequence's frame 0 forgets it.
    assert schedule.regions(frames[0], 0) is None
    np.testing.assert_allclose(schedule.regions(frames[2], 2), [[1, 2, 3, 4]])
    new_sequence = _frames(2)
    assert schedule.regions(new_sequence[0], 0) is None
    assert schedule.regions(new_sequence[1], 1) is UNDECIDED  # nothing of the new sequence tracked yet


def test_region_schedule_keeps_a_few_frames_on_a_long_run():
    schedule = RegionSchedule(full_interval_s=1.0, margin=0.5)
    _ask_and_observe(schedule, _frames(500, fps=30.0), [[[0, 0, 10, 10]]] * 500)
    assert len(schedule._seen) <= 2 and len(schedule._times) <= TIMES_KEPT


@pytest.mark.parametrize("arguments", [dict(full_interval_s=-1.0), dict(margin=-0.1)])
def test_region_schedule_rejects_bad_settings(arguments):
    with pytest.raises(ValueError):
        RegionSchedule(**arguments)


def test_build_schedule_passes_the_roi_settings():
    schedule = build_schedule("roi", roi_full_interval_s=0.7, roi_margin=0.25)
    assert (schedule.full_interval_s, schedule.margin) == (0.7, 0.25)


def test_a_backend_that_does_not_run_windows_gets_the_whole_frame():
    # OpenVINO compiles each input shape, a GPU may tune its kernels per shape: they look at the whole frame.
    frame = _frame_with_people(PEOPLE)
    network = WhiteBoxNetwork()
    network.runs_windows = False
    found = YoloPoseDetector(network, input_size=640)(frame, np.array([[20, 40, 110, 220]], np.float32))
    assert network.shapes == [(480, 640)] and len(found) == 3


@pytest.mark.parametrize("overrides, expected", [
    (["detector.backend=onnxruntime", "detector.device=cpu"], "roi"),          # the default on a CPU
    (["detector.backend=onnxruntime", "detector.device=cpu", "detector.detect_every=2"], "fixed"),
    (["detector.backend=openvino", "detector.device=cpu"], "fixed"),           # compiles each input shape
    (["detector.backend=torch", "detector.device=cpu"], "fixed"),
    (["detector.backend=onnxruntime", "detector.device=cpu", "tracker.kind=iou"], "fixed"),  # no lost boxes
    (["detector.backend=onnxruntime", "detector.device=cpu", "tracker.kind=iou", "detector.schedule=roi"], "roi"),
    (["detector.backend=openvino", "detector.device=cpu", "detector.schedule=roi"], "roi"),  # as set
    (["detector.schedule=adaptive"], "adaptive"),
])
def test_schedule_auto_is_roi_where_the_detector_runs_windows(overrides, expected):
    from posetrack_app.build import resolve_schedule
    from posetrack_app.config import load_config

    assert resolve_schedule(load_config(None, overrides)) == expected


def test_a_callers_own_detector_gets_whole_frames_unless_roi_is_set():
    from posetrack_app.build import build_pipeline
    from posetrack_app.config import load_config
    from posetrack_app.detection.schedule import FixedSchedule

    def own_detector(frame):
        raise AssertionError("not called here")

    cpu = ["detector.backend=onnxruntime", "detector.device=cpu", "pose.model=detector"]
    assert isinstance(build_pipeline(load_config(None, cpu), detector=own_detector).schedule, FixedSchedule)
    roi = build_pipeline(load_config(None, cpu + ["detector.schedule=roi"]), detector=own_detector)
    assert isinstance(roi.schedule, RegionSchedule)
