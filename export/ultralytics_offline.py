"""The one place that imports ultralytics, made safe for machines without network access.

Ultralytics (8.4.x) reaches out on its own in several places; each is switched off here, before and
right after the import, so nothing in this project ever talks to the network or runs pip behind our back:

* `ultralytics.utils.ONLINE` is computed at import time by resolving `one.one.one.one` / `dns.google`
  (a DNS lookup on every import) unless `YOLO_OFFLINE` is true.  ONLINE also gates the PyPI
  "new version available" check (`check_pip_update_available`, run by `train()`), the Google Analytics
  events and Sentry.
* `checks.check_requirements` pip/uv-installs missing packages unless `YOLO_AUTOINSTALL` is false.
* `checks.check_font` downloads Arial.ttf / Arial.Unicode.ttf from GitHub when the font is not in the
  user config dir (called by dataset checks during training and by the plotting code).  A local font
  (matplotlib's DejaVuSans) is put there under those names, so the lookup succeeds locally.
* settings `sync` (analytics), the experiment trackers (clearml, comet, dvc, mlflow, raytune,
  tensorboard, wandb) and the Platform `api_key` (training metrics streaming) are turned off.
* the settings file, runs and weights folders live under the project cache (`YOLO_CONFIG_DIR`), not in
  the user's home directory.

What is *not* blocked: a weights name that is not a local file (for example `yolo11s.pt`) is downloaded
by ultralytics from its GitHub release assets.  That is the online path users choose explicitly by
configuring such a name; the offline defaults never take it.

Always get `YOLO` through `load_yolo_class()`; never `import ultralytics` directly elsewhere.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Environment read by ultralytics at import time.
_ENV = {
    "YOLO_OFFLINE": "true",  # no DNS probe; ONLINE = False (analytics, pip update check, auto-install off)
    "YOLO_AUTOINSTALL": "false",  # check_requirements never runs pip / uv
}
# Settings written into ultralytics' settings.json (in our config dir).
_SETTINGS: dict[str, Any] = {
    "sync": False,
    "api_key": "",
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")

_configured_dir: Path | None = None


def default_config_dir() -> Path:
    """`<cache_dir>/ultralytics` from the project config (falls back to `<repo>/.cache/ultralytics`)."""
    try:
        from common.config import load_config

        return load_config().cache / "ultralytics"
    except Exception:  # a broken config must not stop the offline guard itself
        from common.config import REPO_ROOT

        return REPO_ROOT / ".cache" / "ultralytics"


def _install_local_fonts(config_dir: Path) -> None:
    """Gives check_font a local file under each name it looks for, so it never downloads one."""
    missing = [name for name in _FONT_NAMES if not (config_dir / name).exists()]
    if not missing:
        return
    try:
        import matplotlib

        source = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    except ImportError:  # ultralytics depends on matplotlib; keep going without it anyway
        source = None
    for name in missing:
        if source is not None and source.exists():
            shutil.copyfile(source, config_dir / name)
        else:
            log.warning("no local font for ultralytics' %s; plotting may try to download it", name)


def _patch_module_constants() -> None:
    """Applies the offline switches to the already-imported modules (covers an earlier plain import)."""
    import ultralytics.utils as ul_utils
    import ultralytics.utils.checks as ul_checks

    ul_utils.ONLINE = False
    ul_utils.AUTOINSTALL = False
    ul_checks.ONLINE = False
    ul_checks.AUTOINSTALL = False
    ul_utils.SETTINGS.update(_SETTINGS)
    events: Any = sys.modules.get("ultralytics.utils.events")  # untyped like the rest of ultralytics
    if events is not None:
        events.ONLINE = False
        events.events.enabled = False


def configure(config_dir: Path | None = None) -> Path:
    """Sets the environment ultralytics reads at import time, imports it, and switches off the rest.

    Idempotent; the first call decides the config dir for the process. Returns that directory.
    """
    global _configured_dir
    if _configured_dir is not None:
        return _configured_dir

    already_imported = "ultralytics" in sys.modules
    if already_imported:
        log.warning("ultralytics was imported before the offline guard; patching its constants afterwards")

    env_dir = os.environ.get("YOLO_CONFIG_DIR")
    directory = Path(env_dir) if env_dir else Path(config_dir or default_config_dir())
    # ultralytics appends "Ultralytics" to YOLO_CONFIG_DIR for its user config folder
    user_dir = directory / "Ultralytics"
    user_dir.mkdir(parents=True, exist_ok=True)
    _install_local_fonts(user_dir)

    os.environ.update(_ENV)
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    # keys that would turn on Platform streaming of training runs
    os.environ.pop("ULTRALYTICS_API_KEY", None)

    import ultralytics.utils as ul_utils  # the import itself reads the environment above

    runs = directory / "runs"
    ul_utils.SETTINGS.update(
        {
            **_SETTINGS,
            "runs_dir": str(runs),
            "weights_dir": str(directory / "weights"),
            "datasets_dir": str(directory / "datasets"),
        }
    )
    _patch_module_constants()
    _configured_dir = directory
    log.debug("ultralytics configured offline (config dir %s)", directory)
    return directory


def load_yolo_class(config_dir: Path | None = None) -> type:
    """Returns ultralytics' `YOLO` class after making ultralytics offline-safe."""
    configure(config_dir)
    from ultralytics import YOLO

    return YOLO
