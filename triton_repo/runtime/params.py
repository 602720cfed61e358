"""Reads the `parameters` block that the templates render into each config.pbtxt."""

from __future__ import annotations

import json
import os
from typing import Any

LOCAL_DIR = "local-dir:"  # open_clip's prefix for a model folder of its own


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def in_version_folder(open_clip_name: str, args: dict[str, str]) -> str:
    """`local-dir:<relative folder>` made absolute against the model's version folder, where the renderer copied
    what the folder needs; a variant name or an absolute folder as it is."""
    folder = open_clip_name.removeprefix(LOCAL_DIR)
    if folder == open_clip_name or os.path.isabs(folder):
        return open_clip_name
    return LOCAL_DIR + os.path.normpath(os.path.join(args["model_repository"], args["model_version"], folder))
