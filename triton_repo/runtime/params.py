"""Reads the `parameters` block that the templates render into each config.pbtxt."""

from __future__ import annotations

import json
from typing import Any


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
