"""The self-contained HTML page: embedded figures, and a real render in headless Chromium.

The Chromium tests need Debian's ``chromium`` package (``apt-get install -y chromium``); they
are skipped where it is missing.
"""

from __future__ import annotations

import base64
import html.parser
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from report_rows import shared_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = 7
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found; install it with: apt-get install -y chromium",
)


class _PageParser(html.parser.HTMLParser):
    """Collects the page's <img> sources, <figure> kinds and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.figures: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "figure":
            self.figures.append(values.get("data-kind") or "")
        if "src" in values and not (values["src"] or "").startswith("data:"):
            self.external.append(values["src"] or "")
        if (values.get("href") or "").startswith(("http:", "https:", "//")):
            self.external.append(values["href"] or "")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_report(tmp_path_factory) / "report.html"


def _parse(text: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(text)
    return parser


def test_page_embeds_every_figure(page: Path) -> None:
    parser = _parse(page.read_text(encoding="utf-8"))
    assert len(parser.images) == FIGURES
    assert len(parser.figures) == FIGURES
    for source in parser.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == PNG_MAGIC


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    parser = _parse(text)
    assert parser.external == []
    assert "<link" not in text
    assert "<script" not in text


def test_page_has_tables_and_verdicts(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert '<table class="summary">' in text
    assert '<table class="latency">' in text
    assert '<td class="text verdict-within-noise">within noise</td>' in text
    assert '<td class="text verdict-worse">worse</td>' in text
    assert "MethodError: lam must be &gt; 0" in text


def _chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@needs_chromium
def test_chromium_decodes_every_figure(page: Path, tmp_path: Path) -> None:
    # A copy of the page with a script that counts images the browser decoded, so the check
    # covers rendering, not only the markup.
    probe = tmp_path / "probe.html"
    counter = (
        "<script>window.addEventListener('load', () => { document.body.dataset.decoded = "
        "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>"
    )
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", counter + "</body>"), encoding="utf-8"
    )

    done = _chromium(
        "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "profile"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'data-decoded="{FIGURES}"' in done.stdout
    assert done.stdout.count("data:image/png;base64,") == FIGURES


@needs_chromium
def test_chromium_screenshot_not_blank(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    done = _chromium(
        "--window-size=1400,2400",
        f"--screenshot={shot}",
        page.as_uri(),
        profile=tmp_path / "profile",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file()

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1400)
    ink = np.any(pixels < 0.9, axis=-1)
    colour = np.ptp(pixels, axis=-1) > 0.2
    # Text and tables alone give ink; the embedded plots add coloured pixels.
    assert ink.mean() > 0.02
    assert colour.mean() > 0.002
