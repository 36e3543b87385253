"""The clinician page in a real headless browser (Debian's chromium) against a live server with fake models.

Skipped when chromium is absent: `make browser` (run by `make test`) installs it with apt-get.
The screenshot is kept in .cds/test-artifacts/ for a reviewer to look at.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from rag.assistant import Assistant
from rag.config import load_config
from serve.api import create_app
from serve.engine import Engine
from tests.fakes import HashEmbedder, LexicalVerifier, ScriptedGenerator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make browser` "
                                                         "installs it: apt-get install chromium)")
ARTIFACTS = Path(__file__).resolve().parent.parent / ".cds" / "test-artifacts"
SUPPORTED = ("SGLT2 inhibitors (dapagliflozin or empagliflozin) are recommended in symptomatic chronic HFrEF to "
             "reduce cardiovascular death and heart failure hospitalisation")


class RoutedGenerator(ScriptedGenerator):
    """Answers the HFrEF question from source 1, abstains on anything else; streams word by word."""

    def __init__(self) -> None:
        super().__init__(f"{SUPPORTED} [1].")

    def generate(self, messages: Any, max_new_tokens: int, temperature: float = 0.0, on_text: Any = None) -> Any:
        from rag.generate import ABSTAIN_TOKEN, Generation

        question = messages[-1]["content"].split("Question:")[-1]
        reply = self.reply if "HFrEF" in question else ABSTAIN_TOKEN
        new_tokens = 8
        if "cut short" in question:  # a reply stopped at the token limit inside its last sentence
            reply = f"{reply} SGLT2 inhibitors are recommended in chronic HFrEF to reduce [1]"
            new_tokens = max_new_tokens
        if on_text is not None:
            for w in reply.split(" "):
                on_text(w + " ")
        return Generation(reply, [0.9] * 8, 100, new_tokens, 1.0, 2.0)


@pytest.fixture(scope="module")
def server(hash_index):
    import uvicorn

    root, _ = hash_index
    cfg = load_config(overrides=[f"index.dir={root}", "index.auto_build_demo=false", "verifier.answerable_min=0.0",
                                 "confidence.abstain_below=0.0"])
    eng = Engine(cfg, assistant=Assistant(cfg, embedder=HashEmbedder(), generator=RoutedGenerator(),  # type: ignore[arg-type]
                                          verifier=LexicalVerifier()))  # type: ignore[arg-type]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(cfg, engine=eng), host="127.0.0.1", port=port, log_config=None,
                                        access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if urllib.request.urlopen(base + "/readyz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.1)
    yield base
    srv.should_exit = True
    thread.join(10)


class Browser:
    """Headless chromium driven over the DevTools protocol (a websocket): navigate, evaluate, screenshot."""

    def __init__(self, tmp: Path):
        import json

        import websocket

        assert CHROMIUM is not None
        self._json = json
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", f"--remote-debugging-port={port}", f"--user-data-dir={tmp}",
             "--window-size=1200,1500", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pages: list[dict[str, Any]] = []
        for _ in range(300):
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1).read())
                pages = [p for p in pages if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert pages, "chromium did not open its DevTools port"
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(self._json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = self._json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def ask(self, url: str, timeout: float = 60.0) -> None:
        self.evaluate("document.body && delete document.body.dataset.state")
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.evaluate("document.body && document.body.dataset.state") == "done":
                return
            time.sleep(0.1)
        raise AssertionError("the page never finished asking: " + str(self.evaluate("document.body.innerText")))

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png",
                                                    captureBeyondViewport=True)["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


def _text(html: str, element_id: str) -> str:
    m = re.search(rf'<[^>]+id="{element_id}"[^>]*>(.*?)</(p|h2|div|section)>', html, re.S)
    assert m, f"#{element_id} not in the page"
    return unescape(re.sub(r"<[^>]+>", "", m.group(1)))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("websocket", reason="websocket-client (dev extras) drives chromium")
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


def test_page_asks_and_shows_a_cited_answer_with_the_span_highlighted(server, browser):
    q = urllib.parse.quote("Which drugs reduce cardiovascular death in HFrEF?")
    browser.ask(f"{server}/?q={q}&ask=1")  # streamed: the draft, then the checked answer
    dom = browser.html()
    assert "Not a medical device" in dom
    assert _text(dom, "verdict") == "Answer"
    answer = _text(dom, "answer")
    assert "SGLT2 inhibitors" in answer
    n = re.search(r"\[(\d+)\*?\]", answer)
    assert n, answer
    assert re.search(rf'<a class="cite" href="#src-{n.group(1)}" data-n="{n.group(1)}">{n.group(1)}\*?</a>', dom), \
        "each [n] is a link to its source panel"
    panel = re.search(rf'<section class="source cited" id="src-{n.group(1)}">(.*?)</section>', dom, re.S)
    assert panel, "the cited source's panel"
    span = re.search(r'<mark class="span" data-start="(\d+)" data-end="(\d+)">(.*?)</mark>', panel.group(1), re.S)
    assert span and int(span.group(2)) > int(span.group(1))
    assert "SGLT2" in unescape(span.group(3)), "the highlighted span is the passage that supports the sentence"
    assert dom.count('<mark class="span"') == len(set(re.findall(r'class="cite" href="#src-(\d+)"', dom))), \
        "only cited sources are highlighted"
    conf = re.search(r'<p id="confidence" class="confidence (high|medium|low)"[^>]*title="([^"]*)"[^>]*>(.*?)</p>',
                     dom, re.S)
    assert conf and re.match(r"Confidence 0\.\d\d \((high|medium|low)\)", unescape(conf.group(3)))
    assert "support" in unescape(conf.group(2)), "the signals are in the hover text"
    assert browser.evaluate("document.getElementById('draft-box').hidden") is True, \
        "the unchecked draft is gone once the answer is checked"
    browser.evaluate(f"document.querySelector('a.cite[data-n=\"{n.group(1)}\"]').click()")
    assert browser.evaluate(f"document.getElementById('src-{n.group(1)}').classList.contains('active')") is True
    # The highlighted text is now the passage behind the clicked sentence (its per-sentence span).
    shown = browser.evaluate(f"document.querySelector('#src-{n.group(1)} mark.span').textContent")
    assert "SGLT2" in shown, "the clicked sentence's supporting passage is highlighted"


def test_page_shows_an_abstention_as_such(server, browser):
    q = urllib.parse.quote("How long should a sourdough loaf bake in a home oven?")
    browser.ask(f"{server}/?q={q}&ask=1&stream=0")
    dom = browser.html()
    assert _text(dom, "verdict") == "No supported answer"
    assert "Abstained:" in _text(dom, "reason")
    assert _text(dom, "sources-title") == "Closest sources"
    assert "(low)" in _text(dom, "confidence")
    assert '<mark class="span"' not in dom and 'class="cite"' not in dom, "an abstention cites nothing"


def test_page_marks_a_sentence_cut_off_at_the_token_limit(server, browser):
    q = urllib.parse.quote("Which drugs reduce death in HFrEF? (cut short)")
    browser.ask(f"{server}/?q={q}&ask=1&stream=0")
    dom = browser.html()
    answer = _text(dom, "answer")
    assert re.search(r"to reduce\u2026 \[\d+\*?\]$", answer), answer
    assert browser.evaluate("document.getElementById('cut-note').hidden") is False
    q = urllib.parse.quote("Which drugs reduce cardiovascular death in HFrEF?")
    browser.ask(f"{server}/?q={q}&ask=1&stream=0")
    assert browser.evaluate("document.getElementById('cut-note').hidden") is True
    assert "\u2026" not in _text(browser.html(), "answer")


def test_page_screenshot(server, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "serve-page.png"
    shot.unlink(missing_ok=True)
    q = urllib.parse.quote("Which drugs reduce cardiovascular death in HFrEF?")
    browser.ask(f"{server}/?q={q}&ask=1&patient=P002")
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
