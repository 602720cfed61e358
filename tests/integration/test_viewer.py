"""Results you can see: the viewer page in a real headless Chromium, its API, and the CLI's contact sheet, against
the real OpenSearch of the test session with generated shape images indexed through the real pipeline.

What the page draws is checked against the documents themselves: one `.box` per detected object, in the
document's order and classes, placed where the box's original pixels scale to; for object-level queries exactly
one `.matched` box, the one OpenSearch's inner_hits names.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from client.queries import HIDE_VECTORS, Filters, search_body
from common.config import REPO_ROOT, Settings
from export.shapes.dataset import render
from localstack.processes import free_port

pytestmark = pytest.mark.integration

SEED = 7311  # not the training seed, not another test's
COUNT = 10
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1400,1100")


@dataclass
class Corpus:
    tag: str
    ids: list[str]
    sources: dict[str, dict]
    images: dict[str, bytes]


@pytest.fixture(scope="module")
def corpus(bootstrapped, os_client, stack_settings: Settings) -> Corpus:
    """COUNT generated shape images indexed through the ingest pipeline, under ids and a tag no other test uses."""
    token = uuid.uuid4().hex[:8]
    tag = f"viewer-{token}"
    lines: list[dict] = []
    images: dict[str, bytes] = {}
    for i in range(COUNT):
        picture, _ = render(SEED, i)
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=90)
        doc_id = f"viewer-{token}-{i}"
        images[doc_id] = out.getvalue()
        lines += [{"index": {"_index": stack_settings.index.name, "_id": doc_id}},
                  {"image_id": doc_id, "filename": f"viewer_{i:02d}.jpg", "upload_date": f"2026-{1 + i:02d}-15",
                   "tags": [tag, f"{tag}-{'even' if i % 2 == 0 else 'odd'}"],
                   "image_b64": base64.b64encode(images[doc_id]).decode()}]
    response = os_client.bulk(body=lines, refresh="wait_for", request_timeout=600)
    items = [next(iter(item.values())) for item in response["items"]]
    assert [item["_index"] for item in items] == [stack_settings.index.name] * COUNT, items
    ids = list(images)
    sources = {doc_id: os_client.get(index=stack_settings.index.name, id=doc_id)["_source"] for doc_id in ids}
    assert sum(bool(s.get("detected_objects")) for s in sources.values()) >= COUNT // 2, "the detector found little"
    return Corpus(tag, ids, sources, images)


@pytest.fixture(scope="module")
def viewer(stack_settings: Settings, corpus: Corpus) -> Iterator[str]:
    """The viewer app served by uvicorn in this process, on a free port."""
    import uvicorn

    from viewer.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(stack_settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="viewer", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the viewer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium / chromium-driver not installed: `make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(60)
    try:
        yield session
    finally:
        session.quit()


def console_errors(browser) -> list[dict]:
    """The browser log's errors since the last call (reading the log empties it)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(browser, url: str) -> str:
    """Loads `url` and waits for its search to finish; returns the page's state (done or error)."""
    from selenium.webdriver.support.ui import WebDriverWait

    console_errors(browser)
    browser.get(url)
    return str(WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("const s = document.body.dataset.state; return s === 'done' || s === 'error' "
                                   "? s : null")))


def results(browser) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, ".result")


def drawn(result) -> list:
    from selenium.webdriver.common.by import By

    return result.find_elements(By.CSS_SELECTOR, ".box")


def test_the_page_loads_without_console_errors(browser, viewer):
    console_errors(browser)
    browser.get(f"{viewer}/")
    time.sleep(1)  # the class suggestions are fetched after load
    assert browser.title == "Visual search"
    assert not console_errors(browser)


def test_a_text_query_draws_every_box_of_every_result(browser, viewer, corpus, tmp_path):
    from selenium.webdriver.common.by import By

    assert open_page(browser, f"{viewer}/?q=a+red+circle&tags={corpus.tag}") == "done"
    shown = results(browser)
    assert {r.get_attribute("data-id") for r in shown} == set(corpus.ids)  # efficient filtering: all of them
    for result in shown:
        source = corpus.sources[result.get_attribute("data-id")]
        img = result.find_element(By.CSS_SELECTOR, ".frame img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        boxes = drawn(result)
        objects = source.get("detected_objects", [])
        assert len(boxes) == len(objects)
        assert [b.get_attribute("data-class") for b in boxes] == [o["class_name"] for o in objects]
        for box, obj in zip(boxes, objects, strict=True):
            assert float(box.get_attribute("data-confidence")) == pytest.approx(obj["confidence"], abs=1e-3)
        # boxes are in original pixels: drawn where they scale to on the thumbnail
        frame = result.find_element(By.CSS_SELECTOR, ".frame").rect
        sx, sy = frame["width"] / source["width"], frame["height"] / source["height"]
        for box, obj in zip(boxes, objects, strict=True):
            where, b = box.rect, obj["bbox"]
            assert where["x"] - frame["x"] == pytest.approx(b["x1"] * sx, abs=1.5)
            assert where["y"] - frame["y"] == pytest.approx(b["y1"] * sy, abs=1.5)
            assert where["width"] == pytest.approx((b["x2"] - b["x1"]) * sx, abs=1.5)
        assert not result.find_elements(By.CSS_SELECTOR, ".box.matched")
    screenshot = tmp_path / "viewer-text-query.png"
    browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot of the text query: {screenshot}")
    assert not console_errors(browser)


def test_an_object_level_query_marks_the_matched_object(browser, viewer, corpus, os_client, stack_settings,
                                                         tmp_path):
    from selenium.webdriver.common.by import By

    body = search_body(text="a blue star", objects=True, filters=Filters(tags=(corpus.tag,)), k=12, candidates=100,
                       source=HIDE_VECTORS)
    hits = os_client.search(index=stack_settings.index.name, body=body)["hits"]["hits"]
    expected = {h["_id"]: h["inner_hits"]["detected_objects"]["hits"]["hits"][0]["_nested"]["offset"] for h in hits}
    assert expected, "no object-level result to look at"

    assert open_page(browser, f"{viewer}/?q=a+blue+star&objects=1&tags={corpus.tag}") == "done"
    shown = results(browser)
    assert [r.get_attribute("data-id") for r in shown] == [h["_id"] for h in hits]
    for result in shown:
        boxes = drawn(result)
        matched = result.find_elements(By.CSS_SELECTOR, ".box.matched")
        assert len(matched) == 1
        assert boxes.index(matched[0]) == expected[result.get_attribute("data-id")]
    screenshot = tmp_path / "viewer-object-query.png"
    browser.save_screenshot(str(screenshot))
    print(f"\nscreenshot of the object-level query: {screenshot}")
    assert not console_errors(browser)


def test_a_malformed_query_shows_the_reason(browser, viewer, corpus):
    from selenium.webdriver.common.by import By

    assert open_page(browser, f"{viewer}/?q=a+red+circle&since=not-a-date&tags={corpus.tag}") == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "OpenSearch refused the search (400)" in error.text and "not-a-date" in error.text, error.text
    assert not results(browser)


def test_paging_walks_through_every_result_once(browser, viewer, corpus):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert open_page(browser, f"{viewer}/?q=shapes&size=6&tags={corpus.tag}") == "done"
    pages = [[r.get_attribute("data-id") for r in results(browser)]]
    browser.find_element(By.ID, "next").click()
    WebDriverWait(browser, 60).until(lambda d: "page=2" in d.current_url and d.execute_script(
        "return document.body.dataset.state") == "done")
    pages.append([r.get_attribute("data-id") for r in results(browser)])
    assert [len(p) for p in pages] == [6, COUNT - 6]
    assert sorted(pages[0] + pages[1]) == sorted(corpus.ids)
    assert not browser.find_element(By.ID, "next").is_enabled()


def test_search_by_an_uploaded_image_finds_that_image_first(browser, viewer, corpus, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wanted = corpus.ids[3]
    query = tmp_path / "query.jpg"
    query.write_bytes(corpus.images[wanted])
    browser.get(f"{viewer}/?tags={corpus.tag}")  # no query in the URL: nothing is searched yet
    assert not results(browser)
    browser.find_element(By.ID, "image").send_keys(str(query))
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.state") == "done")
    assert results(browser)[0].get_attribute("data-id") == wanted
    assert "image by image" in browser.find_element(By.ID, "status").text


def api(viewer: str, **request) -> httpx.Response:
    return httpx.post(f"{viewer}/api/search", json=request, timeout=60)


def found(viewer: str, **request) -> dict:
    response = api(viewer, **request)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_object_level_class_filter_constrains_the_matched_object(viewer, corpus):
    classes = sorted({o["class_name"] for s in corpus.sources.values() for o in s.get("detected_objects", [])})
    for name in classes:
        answer = found(viewer, q="a shape", objects=True, classes=[name], tags=[corpus.tag], size=20)
        expected = {i for i, s in corpus.sources.items() if any(o["class_name"] == name
                                                                 for o in s.get("detected_objects", []))}
        assert {h["id"] for h in answer["hits"]} == expected, name
        for hit in answer["hits"]:
            assert hit["objects"][hit["matched"]]["class_name"] == name


def test_image_filters_select_exactly_what_they_say(viewer, corpus):
    even = {i for i in corpus.ids if f"{corpus.tag}-even" in corpus.sources[i]["tags"]}
    answer = found(viewer, q="shapes", tags=[corpus.tag, f"{corpus.tag}-even"], size=20)
    assert {h["id"] for h in answer["hits"]} == even
    answer = found(viewer, q="shapes", tags=[corpus.tag], since="2026-03-01", until="2026-06-30", size=20)
    assert {h["id"] for h in answer["hits"]} == {i for i in corpus.ids
                                                 if "2026-03-01" <= corpus.sources[i]["upload_date"] <= "2026-06-30"}
    confident = {i for i, s in corpus.sources.items() if any(o["confidence"] >= 0.5
                                                             for o in s.get("detected_objects", []))}
    answer = found(viewer, q="shapes", tags=[corpus.tag], min_confidence=0.5, size=20)
    assert {h["id"] for h in answer["hits"]} == confident
    answer = found(viewer, q="shapes", objects=True, tags=[corpus.tag, f"{corpus.tag}-odd"], size=20)
    assert answer["hits"] and {h["id"] for h in answer["hits"]} <= set(corpus.ids) - even


def test_the_api_refuses_bad_requests_with_a_message(viewer):
    assert api(viewer, q="").status_code == 400
    refused = api(viewer, q="x", min_confidence=3)
    assert refused.status_code == 400 and "min_confidence" in refused.json()["error"]
    assert api(viewer, image="%%%not base64").status_code == 400
    assert httpx.get(f"{viewer}/health", timeout=10).json()["opensearch"] == "up"


def test_documents_keep_a_thumbnail_oriented_like_their_boxes(corpus):
    for doc_id, source in corpus.sources.items():
        thumbnail = Image.open(io.BytesIO(base64.b64decode(source["thumbnail"], validate=True)))
        assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 320
        assert thumbnail.width / thumbnail.height == pytest.approx(source["width"] / source["height"], rel=0.02)
        assert "image_b64" not in source, doc_id


def test_the_cli_prints_results_and_writes_a_contact_sheet(browser, corpus, stack_settings, tmp_path):
    from selenium.webdriver.common.by import By

    sheet = tmp_path / "sheet.html"
    env = {**os.environ, "VS_OPENSEARCH__URL": stack_settings.opensearch.url}
    run = subprocess.run([sys.executable, "-m", "cli", "search", "a red circle", "-k", "5", "--tag", corpus.tag,
                          "--objects", "--html", str(sheet)], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stdout.splitlines() if line.split("  ")[-1].startswith("→")]
    assert len(printed) == 5 and all(line.split()[1] in corpus.ids for line in printed), run.stdout
    text = sheet.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    browser.get(Path(sheet).as_uri())
    shown = results(browser)
    assert [r.get_attribute("data-id") for r in shown] == [line.split()[1] for line in printed]
    for result in shown:
        objects = corpus.sources[result.get_attribute("data-id")].get("detected_objects", [])
        assert [b.get_attribute("data-class") for b in drawn(result)] == [o["class_name"] for o in objects]
        assert len(result.find_elements(By.CSS_SELECTOR, ".box.matched")) == 1
        img = result.find_element(By.CSS_SELECTOR, "img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)



def holding(corpus: Corpus, name: str) -> set[str]:
    return {i for i, s in corpus.sources.items() if any(o["class_name"] == name for o in s.get("detected_objects", []))}


def test_class_facets_count_the_results_and_filter_when_clicked(browser, viewer, corpus):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    classes = sorted({o["class_name"] for s in corpus.sources.values() for o in s.get("detected_objects", [])})
    answer = found(viewer, q="shapes", tags=[corpus.tag], size=20)
    assert answer["facets"] == {name: len(holding(corpus, name)) for name in classes}

    assert open_page(browser, f"{viewer}/?q=shapes&size=24&tags={corpus.tag}") == "done"
    name = max(classes, key=lambda c: (0 < len(holding(corpus, c)) < COUNT, len(holding(corpus, c))))
    facet = browser.find_element(By.CSS_SELECTOR, f'.facet[data-class="{name}"]')
    assert facet.text == f"{name} ({len(holding(corpus, name))})"
    facet.click()
    WebDriverWait(browser, 60).until(lambda d: "counts=" in d.current_url and d.execute_script(
        "return document.body.dataset.state") == "done")
    assert {r.get_attribute("data-id") for r in results(browser)} == holding(corpus, name)
    assert browser.find_element(By.ID, "counts").get_attribute("value") == f"{name}>=1"
    assert "active" in browser.find_element(By.CSS_SELECTOR, f'.facet[data-class="{name}"]').get_attribute("class")
    assert not console_errors(browser)


def test_how_many_filter_selects_exactly_the_counted_images(viewer, corpus):
    counted = {i: {n: sum(o["class_name"] == n for o in s.get("detected_objects", [])) for n in
                   {o["class_name"] for o in s.get("detected_objects", [])}} for i, s in corpus.sources.items()}
    for i, source in corpus.sources.items():
        assert source["object_counts"] == counted[i], i
    name = max({n for c in counted.values() for n in c}, key=lambda n: sum(c.get(n, 0) for c in counted.values()))
    for expression, keep in ((f"{name}>=2", lambda c: c.get(name, 0) >= 2), (f"{name}=0", lambda c: name not in c),
                             (f"{name}<=1", lambda c: c.get(name, 0) <= 1)):
        answer = found(viewer, q="shapes", tags=[corpus.tag], counts=[expression], size=20)
        assert {h["id"] for h in answer["hits"]} == {i for i, c in counted.items() if keep(c)}, expression
    assert api(viewer, q="shapes", counts=["circle>=two"]).status_code == 400


def test_clicking_a_box_finds_objects_like_it(browser, viewer, corpus, os_client, stack_settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from client.queries import like_object_query, stored_object_vector

    assert open_page(browser, f"{viewer}/?q=shapes&size=24&tags={corpus.tag}") == "done"
    card = next(r for r in results(browser) if drawn(r))
    clicked_id = card.get_attribute("data-id")
    box = drawn(card)[0]
    clicked_class = box.get_attribute("data-class")
    box.click()
    WebDriverWait(browser, 60).until(lambda d: "like=" in d.current_url and d.execute_script(
        "return document.body.dataset.state") == "done")
    assert f"like={clicked_id}%3A0" in browser.current_url or f"like={clicked_id}:0" in browser.current_url
    assert "object like object" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "like-label").text.startswith(f"objects like {clicked_class}")

    document = os_client.get(index=stack_settings.index.name, id=clicked_id)
    body = like_object_query(stored_object_vector(document, 0), 24, exclude_id=clicked_id,
                             filters=Filters(tags=(corpus.tag,)), candidates=100, source=HIDE_VECTORS)
    expected = [h["_id"] for h in os_client.search(index=stack_settings.index.name, body=body)["hits"]["hits"]]
    shown = results(browser)
    assert [r.get_attribute("data-id") for r in shown] == expected and clicked_id not in expected
    assert all(len(r.find_elements(By.CSS_SELECTOR, ".box.matched")) == 1 for r in shown)
    assert not console_errors(browser)


def test_duplicates_show_once_until_asked_for(browser, viewer, os_client, stack_settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tag = f"dups-{uuid.uuid4().hex[:8]}"
    picture, _ = render(SEED + 1, 0)
    original = io.BytesIO()
    picture.save(original, "JPEG", quality=90)
    smaller = io.BytesIO()
    picture.resize((picture.width * 2 // 3, picture.height * 2 // 3)).save(smaller, "JPEG", quality=70)
    for n, data in enumerate((original.getvalue(), original.getvalue(), smaller.getvalue())):
        os_client.index(index=stack_settings.index.name, id=f"{tag}-{n}", refresh="wait_for",
                        body={"image_id": f"{tag}-{n}", "tags": [tag], "image_b64": base64.b64encode(data).decode()})
    groups = {os_client.get(index=stack_settings.index.name, id=f"{tag}-{n}")["_source"]["duplicate_group"]
              for n in range(3)}
    assert len(groups) == 1
    assert len(found(viewer, q="shapes", tags=[tag])["hits"]) == 1
    assert len(found(viewer, q="shapes", tags=[tag], all_copies=True)["hits"]) == 3

    assert open_page(browser, f"{viewer}/?q=shapes&tags={tag}") == "done"
    assert len(results(browser)) == 1
    browser.find_element(By.ID, "all_copies").click()
    WebDriverWait(browser, 60).until(lambda d: "all=1" in d.current_url and d.execute_script(
        "return document.body.dataset.state") == "done")
    assert sorted(r.get_attribute("data-id") for r in results(browser)) == [f"{tag}-{n}" for n in range(3)]
