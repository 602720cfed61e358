"""The connector contract: what ML Commons sends the adapter and what its post-processing reads back.

ML Commons substitutes `${parameters.x}` into the connector's request body as strings; a parameter the
caller did not give arrives as the connector's default ("") or, for an image-only multimodal query, as the
string "null". Those all mean "absent" here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_ABSENT = {"", "null", "none"}


def _present(value: str | list[str] | None) -> list[str]:
    values = [value] if isinstance(value, str) else list(value or [])
    return [v for v in values if v.strip().lower() not in _ABSENT and not v.startswith("${parameters.")]


class EmbedRequest(BaseModel):
    """Text and/or base64 image(s); both given → one joint vector (the normalized mean), like Titan multimodal."""

    model_config = ConfigDict(extra="ignore")

    text: str | list[str] | None = None
    image: str | list[str] | None = Field(None, description="base64-encoded image bytes")

    @property
    def texts(self) -> list[str]:
        return _present(self.text)

    @property
    def images(self) -> list[str]:
        return _present(self.image)


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="first (or joint) vector: what bedrock.embedding post-processing reads")
    embeddings: list[list[float]] = Field(description="one vector per input, texts first then images")
    dimension: int
    model: str


class AnalyzeRequest(BaseModel):
    """One image, as base64 (`image`) or as a URL (`image_url`) the adapter fetches under guard."""

    model_config = ConfigDict(extra="ignore")

    image: str | None = Field(None, description="base64-encoded image bytes")
    image_url: str | None = None
    vectors: Literal["json", "base64"] = Field("json", description="how vectors are written: JSON numbers, or "
                                                                    "base64 of little-endian float32 (the ingest "
                                                                    "pipeline's connector asks for this)")
    duplicates_index: str | None = Field(None, description="the index the document is written to: where earlier "
                                                           "copies of the image are looked for")
    duplicate_group: str | None = Field(None, description="the group the document already carries (a rebuild, a "
                                                          "replay): kept, nothing looked up")

    @property
    def lookup_index(self) -> str | None:
        found = _present(self.duplicates_index)
        return found[0] if found else None

    @property
    def known_group(self) -> str | None:
        found = _present(self.duplicate_group)
        return found[0] if found else None

    @property
    def source(self) -> tuple[str, str] | None:
        """("image", b64) or ("image_url", url): the first one actually given."""
        for kind, value in (("image", self.image), ("image_url", self.image_url)):
            if value is not None and _present(value):
                return kind, value.strip()
        return None


class BBox(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


# a vector: JSON numbers, or (vectors="base64") base64 of its little-endian float32 bytes
Vector = list[float] | str


class DetectedObject(BaseModel):
    bbox: BBox
    class_id: int
    class_name: str
    confidence: float
    object_embedding: Vector


class ModelInfo(BaseModel):
    clip_variant: str
    clip_weights: str
    detector: str
    detector_weights: str


class AnalyzeResponse(BaseModel):
    """What the ingest pipeline's script moves into the index's fields (common.contract.ANALYSIS_OUTPUT)."""

    embedding: Vector
    width: int
    height: int
    objects: list[DetectedObject]
    model: ModelInfo
    thumbnail: str | None = Field(None, description="base64 JPEG, at most 320 px a side, oriented like the boxes; "
                                                    "null when it could not be made (the analysis still counts)")
    content_hash: str = Field(description="SHA-256 of the image's bytes, hex")
    perceptual_hash: str | None = Field(None, description="256-bit pHash, hex; null when Pillow cannot read it")
    duplicate_group: str = Field(description="the group of an earlier copy of this picture, else its content hash")
