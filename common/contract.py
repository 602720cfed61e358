"""The contracts between the rooms, written once: what the adapter answers, what ML Commons retries, what a
dead letter holds. The adapter, the pipeline templates, the clients and the tests read these names from here.
"""

from __future__ import annotations

# --- Triton: the ensembles the adapter calls and their tensors (docs/design.md#triton-models) -----------------

ANALYZE_MODEL = "analyze_image"
EMBED_IMAGE_MODEL = "embed_image"
EMBED_TEXT_MODEL = "embed_text"
ENCODED_IMAGE = "encoded_image"  # UINT8 [1, n]: the image file's bytes
TEXT = "text"  # BYTES [1, 1]: UTF-8 query text
EMBEDDING = "embedding"  # FP32 [1, D], L2-normalized
ANALYZE_OUTPUTS = (EMBEDDING, "image_size", "boxes", "scores", "class_ids", "class_names", "object_embeddings")

# --- how the adapter tells ML Commons (and so the ingest pipeline) what kind of failure happened -----------

# ML Commons 2.19 retries a remote call (with the connector's client_config backoff) only when the error
# response carries this header with a value starting "ThrottlingException"; every other error fails at once.
THROTTLING_HEADER = "x-amzn-ErrorType"
THROTTLING_VALUE = "ThrottlingException"

# Every adapter error body is {"error": <code>, "detail": <text>, "retryable": <bool>}. ML Commons copies the
# body into the failure message, so the dead-letter route can read the verdict from the text it receives.
RETRYABLE_FIELD = "retryable"
PERMANENT_MARK = f'"{RETRYABLE_FIELD}":false'

# Codes the preprocessing gives an image it cannot use (Triton error messages start "<code>: "). Only these
# make a Triton error permanent; any other Triton error is treated as transient, so an outage is never
# reported as a bad image.
IMAGE_ERROR_CODES = ("empty", "not_an_image", "truncated", "too_large", "decode_failed")

# The pipeline's own size guard words its refusal like the adapter's, so both read "larger than".
TOO_LARGE_TEXT = "larger than the"
# The pipeline's refusal of a raw image in a field that is not `image_b64` (a misspelling, say).
STRAY_IMAGE_TEXT = "looks like a raw image"
# A failure message holding any of these is the input's fault: retrying the same document cannot succeed.
PERMANENT_TEXTS = (PERMANENT_MARK, TOO_LARGE_TEXT, STRAY_IMAGE_TEXT)

# --- the documents -----------------------------------------------------------------------------------------

IMAGE_FIELD = "image_b64"  # base64 image bytes in a document sent to the images index
# Never kept in the images index's _source, whatever pipeline a request names (even ?pipeline=_none): the image
# field and the usual misspellings of it. The default pipeline also refuses any other field holding an image.
RAW_IMAGE_PATTERNS = (IMAGE_FIELD, "*b64*", "*B64*", "*base64*", "*Base64*", "*BASE64*")
IMAGE_URL_FIELD = "image_url"
FAILURE_FIELD = "failure"  # in a dead letter: {reason, processor, index, doc_id, retryable, image_dropped}
FAILED_AT_FIELD = "failed_at"
# The small JPEG (base64) the adapter makes for results pages; stored, never indexed. The pipeline writes it, so
# its raw-image guard lets it pass when a document comes through again (a reindex, an update).
THUMBNAIL_FIELD = "thumbnail"
# Duplicates. The digest of an image's bytes, and its perceptual hash (256 bits, hex): what the adapter computes
# from the image it analyzes. A picture's group is the content hash of the first copy indexed; later copies (exact,
# resized, recompressed) join it (connectors/adapter/duplicates.py). The group is kept when a document comes through
# the pipeline again with one (a rebuild, a replay, a re-sent document that carries it): it is not an analysis field.
CONTENT_HASH_FIELD = "content_hash"
PERCEPTUAL_HASH_FIELD = "perceptual_hash"
DUPLICATE_GROUP_FIELD = "duplicate_group"
# class name → number of detected objects of that class, written by the ingest pipeline from detected_objects
OBJECT_COUNTS_FIELD = "object_counts"
# Index field ← the adapter's /v1/analyze response field: what the ingest pipeline writes from the analysis.
ANALYSIS_OUTPUT = {"global_image_embedding": "embedding", "detected_objects": "objects", "width": "width",
                   "height": "height", "model": "model", THUMBNAIL_FIELD: "thumbnail",
                   CONTENT_HASH_FIELD: CONTENT_HASH_FIELD, PERCEPTUAL_HASH_FIELD: PERCEPTUAL_HASH_FIELD}
# Where ml_inference puts the whole response, for one script to move into ANALYSIS_OUTPUT's fields. One output_map
# entry, not one per field: ML Commons 2.19 serializes the whole model output to JSON and parses it back for every
# entry (ModelExecutor.getModelOutputValue), and with four vectors in it that was most of OpenSearch's cost per
# document (bench --only ceiling).
ANALYSIS_STAGING_FIELD = "vs_analysis"
# How the analyze connector asks for its vectors: base64 of little-endian float32 instead of JSON numbers. ML Commons
# parses an answer twice and writes it out once more before the document is built (bench --only ceiling: most of its
# CPU per document went to the vectors' digits); a base64 string is one token, and the ingest pipeline's script turns
# it back into the same float32 values. Other callers get JSON numbers unless they ask.
VECTORS_FIELD = "vectors"
BASE64_VECTORS = "base64"
# Where ML Commons keeps a connector's answer that a response_filter selected: the analyze connector's filter is "$"
# (the whole answer, parsed once), so its output is {"response": <the adapter's JSON>}.
CONNECTOR_RESPONSE_KEY = "response"
# Fields the ingest pipeline writes from the analysis; dropped from a dead letter (a half-written result).
ANALYSIS_FIELDS = (*ANALYSIS_OUTPUT, OBJECT_COUNTS_FIELD, ANALYSIS_STAGING_FIELD)
# What the pipeline tells the adapter for the duplicate lookup (AnalyzeRequest): where to look, and the group the
# document already carries (then there is nothing to look up)
DUPLICATES_INDEX_PARAM = "duplicates_index"
