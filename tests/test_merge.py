"""tracking.merge.merge_detections: detector boxes always kept, propagated boxes only where they add a person."""
import numpy as np
import pytest

from posetrack_app.structures import DETECTOR, Detections
from posetrack_app.tracking.merge import merge_detections

DETECTION = [10, 30, 30, 90]


def _detections(boxes, scores, proposed_by=None):
    n = len(boxes)
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), scores, np.zeros((n, 17, 3), np.float32),
                      proposed_by)


@pytest.mark.parametrize("proposals, proposal_scores, expected_boxes, expected_provenance", [
    ([], [], [DETECTION], [DETECTOR]),                                         # nothing propagated
    ([[11, 31, 31, 91]], [0.99], [DETECTION], [DETECTOR]),                     # a duplicate: dropped even at 0.99
    ([[100, 30, 120, 90]], [0.5], [DETECTION, [100, 30, 120, 90]], [DETECTOR, 7]),   # a missed person: added
    ([[100, 30, 120, 90], [101, 30, 121, 90]], [0.5, 0.6],                     # two proposals of one person
     [DETECTION, [101, 30, 121, 90]], [DETECTOR, 8]),
])
def test_detections_win_by_priority_and_proposals_keep_their_provenance(proposals, proposal_scores, expected_boxes,
                                                                         expected_provenance):
    detections = _detections([DETECTION], [0.3])
    provenance = [7, 8][:len(proposals)]
    merged = merge_detections(detections, _detections(proposals, proposal_scores, provenance), iou_threshold=0.5)
    np.testing.assert_allclose(merged.boxes_xyxy, np.asarray(expected_boxes, np.float32).reshape(-1, 4))
    assert merged.proposed_by.tolist() == expected_provenance
    assert merged.keypoints is not None and merged.scores[0] == pytest.approx(0.3)


def test_no_detections_keeps_deduplicated_proposals_and_provenance_survives_select():
    merged = merge_detections(_detections([], []), _detections([[0, 0, 10, 10], [0, 0, 10, 11]], [0.4, 0.5], [3, 4]),
                              iou_threshold=0.5)
    assert merged.proposed_by.tolist() == [4]
    assert merged.select(np.array([0])).proposed_by.tolist() == [4]
    assert Detections(np.zeros((2, 4)), np.zeros(2)).proposed_by.tolist() == [DETECTOR, DETECTOR]
