"""What two stages share: one generated image set and the two bench indices ingest and query measure.

Query times searches over the documents ingest analyzed, so both work on one image set (`--images`) and one pair of
bench indices: one with the ingest pipeline, one without (the naive baseline writes its vectors there). A stage
says `shares_image_set=True`; the runner makes the set and the indices once, runs those stages first and together
(memory is sampled meanwhile: the report's memory section), and deletes the indices after them. Ingest marks the
set analyzed; query indexes the set itself when ingest did not run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.context import Context
    from bench.images import BenchImage


@dataclass
class ImageSet:
    images: list[BenchImage]
    os_index: str  # with the ingest pipeline: documents analyzed through OpenSearch
    naive_index: str  # without: the naive loop's vectors
    analyzed: bool = False  # the pipeline index holds the set's analyzed documents (ingest ran)

    @classmethod
    def generate(cls, base: str, count: int, tag: str) -> ImageSet:
        """The images, and the names of the indices (`base` is the product's index name); none created yet."""
        from bench.images import image_set

        return cls(image_set(count), f"{base}-bench-{tag}-opensearch", f"{base}-bench-{tag}-naive")

    def create_indices(self, ctx: Context) -> None:
        from bench.context import create_index, index_template_body

        create_index(ctx, self.os_index, index_template_body(ctx, with_ingest_pipeline=True))
        create_index(ctx, self.naive_index, index_template_body(ctx, with_ingest_pipeline=False))

    def describe(self) -> dict[str, Any]:
        from bench.images import describe

        return describe(self.images)

    def delete(self, ctx: Context) -> None:
        from bench.context import delete_index

        for name in (self.os_index, self.naive_index):
            with contextlib.suppress(Exception):
                delete_index(ctx, name)
