"""Pure logic the python-backend models call: batching, letterbox inversion, crop windows."""

from __future__ import annotations

import numpy as np

from triton_repo.runtime.batching import chunks, split_rows, stack_requests
from triton_repo.runtime.boxes import crop_window, to_original, valid_detections


def test_stack_and_split_round_trip():
    arrays = [np.full((n, 3), n, dtype=np.float32) for n in (1, 3, 2)]
    batch, counts = stack_requests(arrays)
    assert batch.shape == (6, 3) and counts == [1, 3, 2]
    for original, part in zip(arrays, split_rows(batch, counts), strict=True):
        np.testing.assert_array_equal(original, part)


def test_chunks_cover_everything_within_the_limit():
    assert chunks(0, 16) == []
    parts = chunks(100, 16)
    assert sum(p.stop - p.start for p in parts) == 100
    assert max(p.stop - p.start for p in parts) == 16


def test_valid_detections_drops_padding():
    rows = np.zeros((5, 6), dtype=np.float32)
    rows[0] = [10, 10, 50, 60, 0.9, 2]
    rows[1] = [5, 5, 5, 9, 0.8, 1]  # zero width
    assert valid_detections(rows).tolist() == [rows[0].tolist()]


def test_to_original_inverts_the_letterbox():
    # a 1280x640 (w x h) image letterboxed to 640: r = 0.5, new 640x320, top padding 160
    box = np.array([[100.0, 200.0, 300.0, 400.0]])
    out = to_original(box, np.array([0.5, 0.0, 160.0]), np.array([640, 1280]))
    np.testing.assert_allclose(out, [[200.0, 80.0, 600.0, 480.0]])
    clipped = to_original(np.array([[-20.0, 100.0, 700.0, 700.0]]), np.array([0.5, 0.0, 160.0]),
                          np.array([640, 1280]))
    np.testing.assert_allclose(clipped, [[0.0, 0.0, 1280.0, 640.0]])


def test_crop_window_rounds_and_keeps_one_pixel():
    assert crop_window(np.array([10.4, 20.6, 30.5, 40.2]), (100, 100)) == (10, 21, 30, 40)
    assert crop_window(np.array([99.9, 99.9, 100.0, 100.0]), (100, 100)) == (99, 99, 100, 100)
    assert crop_window(np.array([-5, -5, 0.2, 0.2]), (50, 60)) == (0, 0, 1, 1)
