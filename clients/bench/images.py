"""Image archive ingestion: images per second, against Pillow decoding the same files.

`python -m clients.bench.images` (or `make bench-images`), in one run: N PNG files (64x64
RGB drawings of circles and squares, 10 classes of colour) are zipped as class folders and
uploaded to a real server (upload to ready: stream, decode with Pillow in the worker, resize
to 32x32, store), against a loop in this process that opens, converts and resizes the same
files with Pillow straight from the zip.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from clients.client import ParadigmClient
from clients.harness import paradigm_server
from clients.machine import machine_info

COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128),
]  # fmt: skip


def png(rng: np.random.Generator, colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x, y = (int(v) for v in rng.integers(4, 28, 2))
    size = int(rng.integers(16, 32))
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape((x, y, x + size, y + size), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_zip(path: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(n):
            label = i % len(COLOURS)
            name = f"shapes/colour{label}/{i:05d}.png"
            archive.writestr(name, png(rng, COLOURS[label]))
            names.append(name)
    return names


def pillow_loop(path: Path, size: int) -> float:
    started = time.perf_counter()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with Image.open(io.BytesIO(archive.read(info))) as image:
                np.asarray(image.convert("RGB").resize((size, size)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradigm-images-") as tmp:
        workdir = Path(tmp)
        archive = workdir / "shapes.zip"
        write_zip(archive, args.images)
        loop_s = pillow_loop(archive, args.size)
        with (
            paradigm_server(workdir, "images-server", workdir / "data", metrics=False) as server,
            ParadigmClient(server.target, timeout=600) as client,
        ):
            started = time.perf_counter()
            dataset = client.upload_dataset("shapes", archive, image_size=args.size)
            ours_s = time.perf_counter() - started
        report: dict[str, Any] = {
            "machine": machine_info(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "images": args.images,
            "archive_mib": round(archive.stat().st_size / 2**20, 1),
            "size": args.size,
            "classes": int(dataset.n_classes),
            "ours_upload_to_ready_s": round(ours_s, 3),
            "ours_images_per_s": round(args.images / ours_s),
            "pillow_loop_s": round(loop_s, 3),
            "pillow_images_per_s": round(args.images / loop_s),
            "ours_vs_pillow_loop": round(loop_s / ours_s, 3),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "images-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    text = "\n".join(
        [
            "# Image archive ingestion",
            "",
            f"`python -m clients.bench.images` on {report['machine']['cpu']} "
            f"({report['machine']['cores']} cores), {report['when']}: {args.images} PNG files "
            f"(64x64 RGB, {report['classes']} class folders, a {report['archive_mib']} MiB zip), "
            f"resized to {args.size}x{args.size}.",
            "",
            "| reader | seconds | images/s |",
            "|---|---:|---:|",
            f"| Paradigm upload to ready (stream, worker decode + resize, store) | "
            f"{report['ours_upload_to_ready_s']} | {report['ours_images_per_s']} |",
            f"| Pillow in a loop in-process (open, convert, resize) | {report['pillow_loop_s']} "
            f"| {report['pillow_images_per_s']} |",
            "",
            f"Ours / the Pillow loop: {report['ours_vs_pillow_loop']}x the throughput.",
        ]
    )
    (args.out / "images-cpu.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
