"""How a wanted definition differs from what the cluster holds: fingerprints, index mappings, index settings. Pure.

Changed? is one string comparison for most objects: every managed object carries a fingerprint of its rendered
definition (in its description, or the index template's `_meta`). An index cannot carry one (what it holds
matters, not how it was asked for), so its mapping and settings are compared field by field, and each difference
is sorted by what it takes: a put-mapping or a settings update in place, a moment closed (the codec), a new version
of the index (a vector's dimension, its k-NN method, a field's type, the `_source` excludes, a static setting), or
nothing until the index is rebuilt anyway (the deferred settings and parameters: how the index stores what it
holds, not what it answers).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Settings an existing index can take in place; any other difference in the template's settings is a replacement.
DYNAMIC_SETTINGS = frozenset({
    "index.number_of_replicas", "index.auto_expand_replicas", "index.refresh_interval", "index.default_pipeline",
    "index.final_pipeline", "index.search.default_pipeline", "index.knn.algo_param.ef_search", "index.hidden",
    "index.max_result_window",
})
# Static settings OpenSearch takes on a closed index, so an existing one takes them in place (closed for a moment)
# instead of a rebuild: the codec applies to segments written from then on, older ones take it as they merge.
CLOSED_SETTINGS = frozenset({"index.codec"})
# Static settings that change only how an index stores what it holds, not what it answers: an existing index keeps
# its value until it is rebuilt (for another reason, or when the bootstrap may reindex), so an upgrade that changes
# one does not stop `make up` with a refused replacement.
DERIVED_SOURCE = "index.knn.derived_source.enabled"  # the k-NN plugin's derived source (config: index.derived_source)
DEFERRED_SETTINGS = frozenset({DERIVED_SOURCE})
# What an index reports for a setting it was created without (OpenSearch lists only the settings set explicitly): an
# index made before the template named the setting is not rebuilt for the value it already has.
SETTING_DEFAULTS = {"index.codec": "default", DERIVED_SOURCE: "false"}
# The same for mapping parameters, with the value an index created without them has: `_source` parameters, and
# parameters of a knn_vector field.
DEFERRED_SOURCE_PARAMETERS = {"recovery_source_enabled": True}
DEFERRED_VECTOR_PARAMETERS = {"doc_values": True}


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def stamp(description: str, fp: str) -> str:
    """A description carrying the fingerprint of the definition it describes."""
    return f"{description} [fp:{fp}]"


def stamped(existing: str | None, fp: str) -> bool:
    return f"[fp:{fp}]" in (existing or "")


def canon(value: Any) -> Any:
    """Values as comparable text: the cluster returns settings as strings and some mapping values as either."""
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return None
    return str(value)


@dataclass
class MappingDiff:
    """How a wanted mapping differs from an index's: what needs a new index, what a put-mapping does, and what waits
    for a rebuild (DEFERRED_SOURCE_PARAMETERS, DEFERRED_VECTOR_PARAMETERS)."""

    replace: list[str] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def compare_mapping(want: dict, have: dict) -> MappingDiff:
    out = MappingDiff()
    want_source, have_source = want.get("_source", {}), have.get("_source", {})
    want_excludes, have_excludes = sorted(want_source.get("excludes", [])), sorted(have_source.get("excludes", []))
    if want_excludes != have_excludes:
        out.replace.append(f"_source excludes {have_excludes} → {want_excludes}")
    _compare_deferred("_source", want_source, have_source, DEFERRED_SOURCE_PARAMETERS, out)
    if canon(want.get("dynamic_templates", [])) != canon(have.get("dynamic_templates", [])):
        out.inplace.append("dynamic templates")
    if "dynamic" in want and canon(want["dynamic"]) != canon(have.get("dynamic", True)):
        out.inplace.append("dynamic")
    _compare_properties(want.get("properties", {}), have.get("properties", {}), "", out)
    return out


def _compare_deferred(path: str, w: dict, h: dict, defaults: dict[str, Any], out: MappingDiff) -> None:
    for key, default in defaults.items():
        if key in w and canon(w[key]) != canon(h.get(key, default)):
            out.deferred.append(f"{path} {key} {canon(h.get(key, default))} → {canon(w[key])}")


def _field_type(definition: dict) -> str:
    return definition.get("type", "object")


def _compare_properties(want: dict, have: dict, prefix: str, out: MappingDiff) -> None:
    for name, w in want.items():
        path = f"{prefix}{name}"
        h = have.get(name)
        if h is None:
            out.inplace.append(f"new field {path}")
        else:
            _compare_field(path, w, h, out)


def _compare_field(path: str, w: dict, h: dict, out: MappingDiff) -> None:
    if _field_type(w) != _field_type(h):
        out.replace.append(f"{path}: type {_field_type(h)} → {_field_type(w)}")
    elif _field_type(w) == "knn_vector":
        _compare_vector(path, w, h, out)
    elif _field_type(w) in ("object", "nested"):
        if canon(w.get("enabled", True)) != canon(h.get("enabled", True)):
            out.replace.append(f"{path}: enabled {h.get('enabled', True)} → {w.get('enabled', True)}")
        _compare_properties(w.get("properties", {}), h.get("properties", {}), f"{path}.", out)
    else:
        _compare_leaf(path, w, h, out)


def _compare_vector(path: str, w: dict, h: dict, out: MappingDiff) -> None:
    """A knn_vector field: its dimension and method are fixed at creation, its doc values deferred."""
    if canon(w.get("dimension")) != canon(h.get("dimension")):
        out.replace.append(f"{path}: dimension {h.get('dimension')} → {w.get('dimension')}")
    wm, hm = w.get("method", {}), h.get("method", {})
    for key in ("name", "engine", "space_type"):
        if canon(wm.get(key)) != canon(hm.get(key)):
            out.replace.append(f"{path}: k-NN {key} {hm.get(key)} → {wm.get(key)}")
    if canon(wm.get("parameters", {})) != canon(hm.get("parameters", {})):
        out.replace.append(f"{path}: HNSW parameters {hm.get('parameters', {})} → {wm.get('parameters', {})}")
    _compare_deferred(f"{path}:", w, h, DEFERRED_VECTOR_PARAMETERS, out)
    for key in sorted(set(w) - {"type", "dimension", "method", *DEFERRED_VECTOR_PARAMETERS}):
        if canon(w[key]) != canon(h.get(key)):
            out.replace.append(f"{path}: {key} {h.get(key)} → {w[key]}")


def _compare_leaf(path: str, w: dict, h: dict, out: MappingDiff) -> None:
    """A field of another type: `ignore_above` changes in place, any other parameter needs a new index; multi-fields
    are compared as fields."""
    for key in sorted(set(w) - {"type", "fields"}):
        if canon(w[key]) != canon(h.get(key)):
            (out.inplace if key == "ignore_above" else out.replace).append(f"{path}: {key} {h.get(key)} → {w[key]}")
    for sub, sw in w.get("fields", {}).items():
        sh = h.get("fields", {}).get(sub)
        if sh is None:
            out.inplace.append(f"new multi-field {path}.{sub}")
        else:
            _compare_field(f"{path}.{sub}", sw, sh, out)


def in_place_mapping(want: dict, have: dict) -> dict:
    """The put-mapping body for an in-place change: the wanted mapping without `_source` (fixed at creation), its
    knn_vector fields keeping the deferred parameters the index has (OpenSearch refuses to change them on it)."""
    return {"properties": _keep_deferred(want.get("properties", {}), have.get("properties", {})),
            **{k: v for k, v in want.items() if k not in ("_source", "properties")}}


def _keep_deferred(want: dict, have: dict) -> dict:
    kept = {}
    for name, w in want.items():
        h = have.get(name, {})
        if _field_type(w) == "knn_vector" and h:
            w = {**w, **{k: h.get(k, default) for k, default in DEFERRED_VECTOR_PARAMETERS.items()}}
        elif "properties" in w:
            w = {**w, "properties": _keep_deferred(w["properties"], h.get("properties", {}))}
        kept[name] = w
    return kept


def flatten_settings(settings: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings as OpenSearch's dotted keys (how an index reports them with flat_settings)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compare_settings(want: dict, have_flat: dict) -> tuple[list[str], dict[str, Any], list[str]]:
    """(reasons to replace: static settings that differ, {setting: value} to put in place, deferred differences)."""
    replace: list[str] = []
    inplace: dict[str, Any] = {}
    deferred: list[str] = []
    for key, value in flatten_settings(want).items():
        key = key if key.startswith("index.") else f"index.{key}"
        have = have_flat.get(key, SETTING_DEFAULTS.get(key))
        if canon(have) != canon(value):
            if key in DYNAMIC_SETTINGS or key in CLOSED_SETTINGS:
                inplace[key] = value
            else:
                (deferred if key in DEFERRED_SETTINGS else replace).append(f"setting {key} {have} → {canon(value)}")
    if canon(have_flat.get("index.blocks.write")) == "true":
        inplace["index.blocks.write"] = None  # left by a replacement that was interrupted: the index serves again
    return replace, inplace, deferred

