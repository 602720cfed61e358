"""A small detector trained offline on generated images of coloured shapes: without real weights, the
detector must still find what is in an image for the relevance tests to mean anything.

`dataset.py` generates the images, `train.py` trains `yolo11n` on them; the resulting checkpoint
`shapes_yolo11n.pt` and its `classes.json` live beside them and are the default detector offline.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "shapes_yolo11n.pt"
CLASSES_FILE = HERE / "classes.json"
