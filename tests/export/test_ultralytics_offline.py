"""Ultralytics never reaches the network nor installs packages: these machines reach only package
registries, and a hidden download would hang the export.

A fresh Python process (ultralytics' import-time probes only run once per process) blocks and records every
IPv4/IPv6 connect, DNS lookup and subprocess, then goes through `export.ultralytics_offline`: import,
a requirement check for a package that does not exist (would pip-install it if auto-install were on),
the font lookup the plotting and dataset code use, loading the bundled checkpoint, `predict`, and a full
`ensure_yolo` ONNX export (NMS inside) into a temporary cache with a fresh ultralytics config dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from common.config import REPO_ROOT

CHILD = textwrap.dedent(
    r'''
    import json, os, socket, subprocess, sys

    attempts, spawned = [], []

    def _block(kind):
        def blocked(*args, **kwargs):
            attempts.append(f"{kind} {args[:2]!r}")
            raise OSError(f"network disabled by the test ({kind})")
        return blocked

    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect {address!r}")
            raise OSError("network disabled by the test (connect)")
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect_ex {address!r}")
            raise OSError("network disabled by the test (connect_ex)")
        return _connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.create_connection = _block("create_connection")
    socket.getaddrinfo = _block("getaddrinfo")
    socket.gethostbyname = _block("gethostbyname")
    socket.gethostbyname_ex = _block("gethostbyname_ex")

    _popen_init = subprocess.Popen.__init__

    def popen_init(self, args, *a, **k):
        cmd = args if isinstance(args, str) else " ".join(map(str, args))
        spawned.append(cmd)
        words = cmd.replace("/", " ").split()
        if "pip" in words or "uv" in words or "install" in words:
            raise OSError(f"package installation blocked by the test: {cmd}")
        return _popen_init(self, args, *a, **k)

    subprocess.Popen.__init__ = popen_init
    _system = os.system
    os.system = lambda cmd: (spawned.append(cmd), 1)[1]

    try:  # the guard is live
        socket.getaddrinfo("example.com", 80)
        raise SystemExit("the socket guard does not work")
    except OSError:
        attempts.clear()

    import numpy as np
    from PIL import Image

    from export.ultralytics_offline import load_yolo_class

    YOLO = load_yolo_class()
    import ultralytics.utils as ul_utils
    import ultralytics.utils.checks as checks

    report = {"online_flag": ul_utils.ONLINE, "autoinstall_flag": ul_utils.AUTOINSTALL,
              "sync": ul_utils.SETTINGS["sync"], "config_dir": str(ul_utils.USER_CONFIG_DIR)}
    report["missing_requirement_ok"] = checks.check_requirements("visual-search-no-such-package-xyz>=1.0")
    report["font"] = str(checks.check_font("Arial.ttf"))

    from common.config import load_config
    from export.shapes import CHECKPOINT
    from export.shapes.dataset import render
    from export.yolo import ensure_yolo

    image, truth = render(7, 0)
    model = YOLO(str(CHECKPOINT))
    result = model.predict(np.asarray(image)[:, :, ::-1].copy(), imgsz=640, conf=0.25, device="cpu",
                           verbose=False)[0]
    report["predict_boxes"] = len(result.boxes)
    report["truth_boxes"] = len(truth)

    facts = ensure_yolo(load_config())
    report["exported"] = facts.weights
    report["attempts"] = attempts
    report["spawned"] = spawned
    print("REPORT " + json.dumps(report))
    '''
)


def test_no_network_and_no_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_", "VS_"))}
    env.update({
        "VS_CACHE_DIR": str(tmp_path / "cache"),  # fresh ultralytics config dir and model folder
        "VS_TRITON__MAX_BATCH_SIZE": "2",  # a smaller export graph: faster
        "PYTHONPATH": str(REPO_ROOT),
    })
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                           f"{proc.stderr[-6000:]}"
    report = json.loads(lines[-1][len("REPORT "):])
    print(f"\nultralytics offline: network attempts {report['attempts']}, subprocesses {report['spawned']}, "
          f"ONLINE={report['online_flag']}, AUTOINSTALL={report['autoinstall_flag']}, sync={report['sync']}, "
          f"font {report['font']}, predict {report['predict_boxes']} boxes "
          f"(truth {report['truth_boxes']}), export {report['exported']}")
    assert report["attempts"] == []
    assert not any("pip" in cmd.split() or "uv" in cmd.split() for cmd in report["spawned"])
    assert report["online_flag"] is False and report["autoinstall_flag"] is False and report["sync"] is False
    assert report["missing_requirement_ok"] is False  # reported missing, not installed
    assert report["font"].startswith(str(tmp_path))
    assert report["config_dir"].startswith(str(tmp_path))
    assert report["predict_boxes"] > 0
    assert report["exported"].startswith("checkpoint:")


def test_weights_resolution_is_local(tmp_path):
    """Which weights `ensure_yolo` uses is decided without network access or ultralytics."""
    from common.config import load_config
    from export.shapes import CHECKPOINT
    from export.yolo import resolve_weights

    def choice(weights, variant="yolo11s"):
        settings = load_config()
        models = settings.models.model_copy(update={"yolo_weights": weights, "yolo_variant": variant})
        return resolve_weights(settings.model_copy(update={"models": models}))

    local = tmp_path / "mine.pt"
    local.write_bytes(b"not really a checkpoint")
    assert (choice(None).kind, choice(None).source) == ("bundled", str(CHECKPOINT))
    assert (choice("random", "yolo11m").kind, choice("random", "yolo11m").source) == ("random", "yolo11m.yaml")
    assert choice("yolo11x.yaml").source == "yolo11x.yaml"
    assert choice("yolo11x.yaml").label == "random-init (offline): yolo11x.yaml"
    assert (choice(str(local)).kind, choice(str(local)).source) == ("checkpoint", str(local.resolve()))
    assert (choice("yolo11s.pt").kind, choice("yolo11s.pt").label) == ("hub", "hub:yolo11s.pt")
    for bad in ("no/such/file.pt", "yolo12q.yaml"):
        with pytest.raises((FileNotFoundError, ValueError)):
            choice(bad)
