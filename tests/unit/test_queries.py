"""The query builders (one per README mode, with filters and paging) and how results are drawn and refused."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from client import queries
from client.queries import Filters, search_body
from client.results import contact_sheet, line, opensearch_reason, view

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_bodies() -> list[dict]:
    """The JSON bodies of the README's `GET images/_search` examples."""
    blocks = re.findall(r"```\nGET images/_search\n(.*?)```", README.read_text(), flags=re.S)
    return [json.loads(block) for block in blocks]


def without_size(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "size"}


def test_the_readme_examples_are_what_the_builders_build():
    bodies = readme_bodies()
    built = [
        queries.text_query("a red circle"),
        queries.object_query("a blue star"),
        queries.hybrid_query("a green triangle", "triangle"),
        queries.one_per_picture(queries.text_query("shapes", filters=Filters(counts=(
            queries.Count.parse("circle>=2"), queries.Count.parse("star=0"))))),
        queries.like_object_query([0.12, -0.03, 0.5], exclude_id="photo-1"),
    ]
    assert len(bodies) == len(built)
    for readme, body in zip(bodies, built, strict=True):
        assert readme == without_size(body)


def test_the_readme_filtered_mode_keeps_its_body():
    body = queries.filtered_query("shapes", "circle", 0.5, "2020-01-01", k=7)
    neural = body["query"]["neural"]["global_image_embedding"]
    assert body["size"] == 7 and neural["k"] == 100
    assert neural["filter"] == {"bool": {"filter": [
        {"nested": {"path": "detected_objects", "query": {"bool": {"filter": [
            {"term": {"detected_objects.class_name": "circle"}},
            {"range": {"detected_objects.confidence": {"gte": 0.5}}}]}}}},
        {"range": {"upload_date": {"gte": "2020-01-01"}}}]}}


def test_image_query_sends_the_file_as_base64():
    body = queries.image_query(b"\xff\xd8jpeg bytes", k=3)
    neural = body["query"]["neural"]["global_image_embedding"]
    assert base64.b64decode(neural["query_image"]) == b"\xff\xd8jpeg bytes" and neural["k"] == 3
    assert body["_source"] == queries.HIDE_VECTORS


@pytest.mark.parametrize("builder", [queries.text_query, queries.object_query])
def test_paging_asks_for_enough_candidates(builder):
    body = builder("x", 10, offset=190)
    assert body["from"] == 190 and body["size"] == 10
    neural = json.dumps(body)
    assert '"k": 200' in neural
    assert "from" not in builder("x", 10)


def test_candidates_never_below_the_page():
    neural = queries.text_query("x", 10, offset=20, candidates=100)["query"]["neural"]["global_image_embedding"]
    assert neural["k"] == 100
    neural = queries.text_query("x", 10, offset=200, candidates=100)["query"]["neural"]["global_image_embedding"]
    assert neural["k"] == 210


def test_filters():
    assert not Filters() and Filters().for_images() is None
    f = Filters(classes=("circle", "star"), tags=("a", "b"), until="now")
    assert f.object_clauses() == [{"terms": {"detected_objects.class_name": ["circle", "star"]}}]
    assert f.image_clauses() == [{"range": {"upload_date": {"lte": "now"}}}, {"term": {"tags": "a"}},
                                 {"term": {"tags": "b"}}]
    either = {"terms": {"detected_objects.class_name": ["circle", "star"]}}
    assert f.for_images() == {"bool": {"filter": [{"nested": {"path": "detected_objects", "query": either}},
                                                  *f.image_clauses()]}}
    unfiltered = queries.text_query("x")["query"]["neural"]["global_image_embedding"]
    assert "filter" not in unfiltered


def nested(body: dict) -> dict:
    return body["query"]["nested"]


def test_object_level_filters_on_the_matched_object_efficiently():
    body = queries.object_query("x", filters=Filters(classes=("star",), min_confidence=0.4))
    neural = nested(body)["query"]["neural"]["detected_objects.object_embedding"]
    assert neural["filter"] == {"bool": {"filter": [{"term": {"detected_objects.class_name": "star"}},
                                                     {"range": {"detected_objects.confidence": {"gte": 0.4}}}]}}
    assert neural["k"] == queries.OBJECT_CANDIDATES
    assert nested(body)["inner_hits"]["size"] == 1


def test_object_level_image_filters_go_to_the_parent_efficiently():
    body = queries.object_query("x", filters=Filters(tags=("t",)))
    neural = nested(body)["query"]["neural"]["detected_objects.object_embedding"]
    assert neural["filter"] == {"bool": {"filter": [{"term": {"tags": "t"}}]}}


def test_object_level_with_both_kinds_never_mixes_them_in_one_knn_filter():
    body = queries.object_query("x", filters=Filters(classes=("star",), tags=("t",)))
    outer = body["query"]["bool"]
    neural = outer["must"][0]["nested"]["query"]["neural"]["detected_objects.object_embedding"]
    assert neural["filter"] == {"bool": {"filter": [{"term": {"detected_objects.class_name": "star"}}]}}
    assert outer["filter"] == [{"term": {"tags": "t"}}]
    assert neural["k"] > queries.OBJECT_CANDIDATES  # more candidates for the images filtered afterwards


def test_object_image_query():
    body = queries.object_image_query(b"img", 4)
    neural = nested(body)["query"]["neural"]["detected_objects.object_embedding"]
    assert base64.b64decode(neural["query_image"]) == b"img" and body["size"] == 4


def test_search_body_picks_the_mode():
    def mode(body: dict) -> tuple[str, str]:
        text = json.dumps(body)
        return ("object" if "nested" in body["query"] else "image",
                "image" if "query_image" in text else "text")

    assert mode(search_body(text="x")) == ("image", "text")
    assert mode(search_body(text="x", objects=True)) == ("object", "text")
    assert mode(search_body(text="x", image=b"i")) == ("image", "image")  # the image wins
    assert mode(search_body(image=b"i", objects=True)) == ("object", "image")
    assert search_body(text="x", objects=True)["_source"] == queries.HIDE_VECTORS  # the page draws every object
    with pytest.raises(ValueError):
        search_body(text="  ")


def test_hybrid_filters_each_sub_query_alike():
    body = queries.hybrid_query("x", "y", filters=Filters(tags=("t",)))
    lexical, neural = body["query"]["hybrid"]["queries"]
    expected = {"bool": {"filter": [{"term": {"tags": "t"}}]}}
    assert lexical["bool"]["filter"] == [expected]
    assert neural["neural"]["global_image_embedding"]["filter"] == expected


SHARD_FAILURE = {"error": {
    "root_cause": [{"type": "parse_exception", "reason": "failed to parse date field [not-a-date]"}],
    "type": "search_phase_execution_exception", "reason": "all shards failed", "phase": "query",
    "failed_shards": [{"shard": 0, "index": "images", "reason": {
        "type": "parse_exception", "reason": "failed to parse date field [not-a-date]",
        "caused_by": {"type": "illegal_argument_exception", "reason": "no date in not-a-date"}}}]},
    "status": 400}


def test_the_reason_of_a_refused_search_names_what_was_wrong():
    assert opensearch_reason(SHARD_FAILURE, "x") == ("parse_exception: failed to parse date field [not-a-date] "
                                                     "(caused by illegal_argument_exception: no date in not-a-date)")
    assert opensearch_reason({"error": {"type": "t", "reason": "r"}}, "x") == "t: r"
    assert opensearch_reason("plain", "x") == "plain" and opensearch_reason(None, "x") == "x"


HIT = {"_id": "doc-1", "_score": 0.8123,
       "_source": {"image_id": "doc-1", "filename": "<b>f.jpg</b>", "width": 640, "height": 480, "tags": ["t"],
                   "thumbnail": "QUJD", "detected_objects": [
                       {"class_name": "circle", "class_id": 0, "confidence": 0.9,
                        "bbox": {"x1": 64, "y1": 48, "x2": 128, "y2": 96}},
                       {"class_name": "star", "class_id": 3, "confidence": 0.5,
                        "bbox": {"x1": 320, "y1": 240, "x2": 640, "y2": 480}}]},
       "inner_hits": {"detected_objects": {"hits": {"hits": [{"_nested": {"field": "detected_objects", "offset": 1},
                                                              "_source": {"class_name": "star"}}]}}}}


def test_a_hit_as_it_is_drawn():
    result = view(HIT)
    assert result["matched"] == 1 and [o["class_name"] for o in result["objects"]] == ["circle", "star"]
    assert (result["width"], result["height"], result["thumbnail"]) == (640, 480, "QUJD")
    assert view({"_id": "bare", "_score": 1.0})["objects"] == []
    assert line(result) == "0.8123  doc-1  (<b>f.jpg</b>)  → star 0.50 at [320, 240, 640, 480]"


def test_the_contact_sheet_is_self_contained_and_escaped():
    sheet = contact_sheet([view(HIT)], "images like 'a <circle>'")
    assert 'src="data:image/jpeg;base64,QUJD"' in sheet
    assert "<b>f.jpg</b>" not in sheet and "&lt;b&gt;f.jpg&lt;/b&gt;" in sheet
    assert "a &lt;circle&gt;" in sheet
    assert sheet.count('class="box') == 2 and sheet.count('class="box matched"') == 1
    assert "left:10.000%;top:10.000%;width:10.000%;height:10.000%" in sheet  # original pixels → percentages
    assert "http" not in sheet


@pytest.mark.parametrize(("text", "least", "most"), [
    ("circle>=2", 2, None), ("circle > 1", 2, None), ("star=0", 0, 0), ("star==3", 3, 3), ("square<=1", None, 1),
    ("square<2", None, 1), ("traffic light>=1", 1, None)])
def test_counts_parse_into_bounds(text, least, most):
    count = queries.Count.parse(text)
    assert (count.least, count.most) == (least, most) and count.class_name == text.split("<")[0].split(">")[0] \
        .split("=")[0].strip()


@pytest.mark.parametrize("text", ["circle", ">=2", "circle>=two", "circle=>2"])
def test_a_count_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError, match="not a count"):
        queries.Count.parse(text)


def test_at_least_two_circles_and_no_star_treats_a_missing_count_as_zero():
    body = queries.text_query("shapes", filters=Filters(counts=(queries.Count.parse("circle>=2"),
                                                                 queries.Count.parse("star=0"))))
    clauses = body["query"]["neural"]["global_image_embedding"]["filter"]["bool"]["filter"]
    assert clauses == [{"range": {"object_counts.circle": {"gte": 2}}},
                       {"bool": {"must_not": [{"range": {"object_counts.star": {"gte": 1}}}]}}]


def test_like_object_is_a_nested_knn_with_the_stored_vector_without_its_own_image():
    document = {"_id": "d1", "_source": {"detected_objects": [{"object_embedding": [0.1, 0.2]},
                                                              {"object_embedding": [0.3, 0.4]}]}}
    vector = queries.stored_object_vector(document, 1)
    body = queries.like_object_query(vector, 10, exclude_id="d1")
    nested = body["query"]["bool"]["must"][0]["nested"]
    assert nested["query"] == {"knn": {"detected_objects.object_embedding": {
        "vector": [0.3, 0.4], **queries.knn_options(queries.OBJECT_CANDIDATES)}}}
    assert nested["inner_hits"]["size"] == 1
    assert body["query"]["bool"]["must_not"] == [{"ids": {"values": ["d1"]}}]
    with pytest.raises(IndexError, match="no object 2"):
        queries.stored_object_vector(document, 2)


def test_one_per_picture_collapses_on_the_group_and_facets_read_back():
    body = queries.one_per_picture(queries.with_class_facets(queries.text_query("a red circle")))
    assert body["collapse"] == {"field": "duplicate_group"} and "classes" in body["aggs"]
    answer = {"aggregations": {"classes": {"doc_count": 9, "names": {"buckets": [
        {"key": "circle", "doc_count": 5, "images": {"doc_count": 3}},
        {"key": "star", "doc_count": 1, "images": {"doc_count": 1}}]}}}}
    assert queries.class_facets(answer) == {"circle": 3, "star": 1}
    assert queries.class_facets({}) == {}
