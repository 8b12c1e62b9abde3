#!/usr/bin/env python3
"""Checks a `resnorm study` report in a real browser (headless Chromium).

    python3 tools/check_report.py STUDY_DIR/report.html [--png out.png]

Renders the page twice with Debian's `chromium` (apt-get install -y chromium): once with
--dump-dom, to read the DOM the browser built, and once with --screenshot. Fails (exit 1)
when the report has no plot, when any <svg> lacks a line or bar with points (a
<polyline> with at least two points or a <path> with a drawing command), when it
references anything outside the file (the report must be readable offline), or when the
screenshot is blank (a single colour). Standard library only, plus Pillow when installed
for the PNG check (otherwise the PNG is decoded with zlib).
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium(args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:
        cmd = ["chromium", *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout


class Svgs(HTMLParser):
    """Counts, per <svg>, the polylines with >= 2 points and paths with a drawing command."""

    def __init__(self):
        super().__init__()
        self.svgs, self.current, self.external = [], None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("#", "data:")):
                self.external.append(f"<{tag} {key}={value}>")
        if tag == "svg":
            self.current = {"marks": 0}
            self.svgs.append(self.current)
        elif self.current is not None and tag == "polyline":
            if len(re.findall(r"[-\d.]+,[-\d.]+", attrs.get("points", ""))) >= 2:
                self.current["marks"] += 1
        elif self.current is not None and tag == "path":
            if re.search(r"[LlHhVvCcAaQqZz]", attrs.get("d", "")):
                self.current["marks"] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self.current = None


def png_colours(path):
    """Number of distinct colours in the PNG (capped), via Pillow or a small decoder."""
    try:
        from PIL import Image
        with Image.open(path) as img:
            colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
            return len(colours) if colours is not None else 1 << 16
    except ImportError:
        data = open(path, "rb").read()
        idat, pos = b"", 8
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            if kind == b"IDAT":
                idat += data[pos + 8:pos + 8 + length]
            pos += 12 + length
        raw = zlib.decompress(idat)
        return len(set(raw[i:i + 64] for i in range(0, min(len(raw), 1 << 22), 4096)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--png", default=None, help="where to keep the screenshot")
    args = parser.parse_args()
    url = "file://" + os.path.abspath(args.report)
    dom = chromium(["--dump-dom", url])
    svgs = Svgs()
    svgs.feed(dom)
    problems = []
    if not svgs.svgs:
        problems.append("the report has no <svg> plot")
    for i, svg in enumerate(svgs.svgs):
        if svg["marks"] == 0:
            problems.append(f"plot {i + 1} of {len(svgs.svgs)} is empty (no polyline/path with points)")
    problems += [f"external reference {e}" for e in svgs.external]
    png = args.png or os.path.join(tempfile.mkdtemp(), "report.png")
    chromium([f"--screenshot={png}", "--window-size=1200,3000", url])
    colours = png_colours(png)
    if colours < 3:
        problems.append(f"the screenshot {png} is blank ({colours} colour(s))")
    for p in problems:
        print("FAIL:", p)
    print(f"{len(svgs.svgs)} plots, {sum(s['marks'] for s in svgs.svgs)} lines/bars, "
          f"screenshot {png} with {colours} colours: {'FAIL' if problems else 'OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
