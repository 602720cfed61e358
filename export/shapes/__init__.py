"""Small models trained offline on generated images of coloured shapes: without real weights, the detector
must still find what is in an image, and the CLIP must still understand it, for search to mean anything.

`dataset.py` generates the images, `train.py` trains `yolo11n` on them; the resulting checkpoint
`shapes_yolo11n.pt` and its `classes.json` live beside them and are the default detector offline.
`captions.py` describes the scenes in words, `train_clip.py` trains a small CLIP on scenes, object crops and
captions; its open_clip folder `shapes_clip/` (config, weights, training record) is the default CLIP offline.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "shapes_yolo11n.pt"
CLASSES_FILE = HERE / "classes.json"
# the bundled CLIP, as an open_clip local folder (config + weights), trained by `train_clip.py`
CLIP_DIR = HERE / "shapes_clip"
