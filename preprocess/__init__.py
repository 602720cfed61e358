"""Serving-time preprocessing that the Triton models import: the DALI graph both profiles run (`graph`), the
per-item input validation (`validate`) and the cpu profile's runtime (`runtime`).

Nothing here imports `export/`: a Triton server needs this package and `common/`, never the offline export
toolchain (torch, open_clip, ultralytics) that `export/` pulls in.
"""
