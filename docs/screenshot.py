"""Make docs/serve-page.png: serve.py's page in Debian's chromium after uploading two real images and a text file.

python docs/screenshot.py --ckpt <run>/checkpoints/<best>.ckpt [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import expect, sync_playwright

from trustthepixels.serving.app import create_app
from trustthepixels.serving.backends import TorchBackend

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TTP_SHARED_DIR", REPO.parent / "shared"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "serve-page.png")
    args = parser.parse_args()

    server = uvicorn.Server(uvicorn.Config(create_app(TorchBackend(args.ckpt, "cpu")), port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    fake = Path(tempfile.mkdtemp()) / "notes.jpg"
    fake.write_text("A text file with a .jpg name.\n")
    # A FLUX/SDXL image from poidh (a source the model never saw), a photo, an AI image of its own test split.
    images = [
        SHARED / "data" / "holdout-poidh" / "AI" / "ai_0003.jpg",
        SHARED / "data" / "real-vs-ai" / "Real" / "real_0007.jpg",
        SHARED / "data" / "real-vs-ai" / "AI" / "ai_0306.jpg",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 1200})
        page.goto(url)
        expect(page.locator("#model-line")).to_contain_text("threshold")
        for path in [fake, *images]:  # newest first on the page
            page.set_input_files("#picker", str(path))
            expect(page.locator(".card").first.locator(".verdict")).not_to_have_text("Checking…")
        page.check("#heatmap-toggle")
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
