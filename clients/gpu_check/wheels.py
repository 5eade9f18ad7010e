"""The wheels that `make gpu-check` needs on the GPU machine, cut to fit the device tool.

The lent GPU machine (docs/gpu.md) has no network and runs Python 3.12 with its own
torch, scikit-learn and a CPU-only `onnxruntime`. What the service needs beside those is
downloaded here (`prepare`, needs PyPI), every file larger than one carry is split into
numbered parts, and everything is packed into folders `.gpu-wheels/carry-1`, `carry-2`, …
each small enough for one `run` call's `carry` (the whole working tree must stay under
64 MiB a call). Every carry folder holds the same `MANIFEST.json`: each file's size and
sha256, and which part lies in which carry.

    python -m clients.gpu_check.wheels prepare      # download, split, pack, print the calls
    python -m clients.gpu_check.wheels pack         # split and pack again (no download)
    python -m clients.gpu_check.wheels --check      # reassemble into a temp dir, verify
    python -m clients.gpu_check.wheels reassemble --src /tmp/gpu-wheels --out DIR  # device

Standard library only: `reassemble` runs under the GPU machine's own Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
# The device tool carries at most 64 MiB a call, the working tree included (~3 MiB now).
DEFAULT_CARRY_MIB = 58
TREE_LIMIT = 64 * MiB
MANIFEST = "MANIFEST.json"
DEFAULT_DIR = Path(".gpu-wheels")
# What pip should accept for CPython 3.12 on x86-64 Linux; pip matches manylinux_2_N exactly.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux1_x86_64",
    "manylinux2010_x86_64",
)

# Pins from pyproject.toml (and what they pull in) that the GPU image lacks or may hold at
# another version. Not torch, numpy, scipy, psutil, ml-dtypes: the image's are used.
CORE_PINS = (
    "onnxruntime-gpu==1.31.1",  # the image has plain onnxruntime 1.30 (CPU only)
    "grpcio==1.81.1",
    "grpcio-health-checking==1.81.1",
    "grpcio-reflection==1.81.1",
    "protobuf==6.33.6",  # service/gen was generated against protobuf 6
    "prometheus-client==0.26.0",
    "pydantic-settings==2.16.3",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
    "python-dotenv==1.2.4",
    "tqdm==4.70.1",
    "nvidia-ml-py==13.615.71",
    "scikit-learn==1.9.1",
    "narwhals==2.29.0",  # scikit-learn 1.9 needs >=2.0.1; the image's version is unread
    "joblib==1.6.0",
    "threadpoolctl==3.8.0",
    "onnx==1.23.2",  # the image has 1.23.1
    "skl2onnx==1.20.0",
    "skops==0.16.0",
    "prettytable==3.18.0",
    "wcwidth==0.9.4",
)
# Optional: classical models on the GPU through hummingbird's torch backend
# (clients/gpu_check/classical_gpu.py). Its metadata pins onnx<=1.16.1 for the ONNX
# backend, which we do not use; --no-deps keeps the image's onnx.
HUMMINGBIRD_PINS = (
    "hummingbird-ml==0.4.12",
    "onnxconverter-common==1.16.0",
    "dill==0.4.1",
)


@dataclass
class Part:
    name: str
    carry: int
    size: int
    sha256: str


@dataclass
class Entry:
    name: str
    size: int
    sha256: str
    parts: list[Part] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def download(pins: Iterable[str], dest: Path) -> None:
    """pip download each pin for cp312 manylinux x86-64, without dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    for pin in pins:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        cmd += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        cmd += ["-d", str(dest), pin]
        print(f"download {pin}", flush=True)
        subprocess.run(cmd, check=True)
    wanted = {_key(*pin.split("==")) for pin in pins}
    for old in dest.iterdir():  # two versions of one package stop the whole install
        parts = old.name.split("-")
        if old.suffix == ".whl" and _key(parts[0], parts[1]) not in wanted:
            print(f"remove {old.name} (not pinned)")
            old.unlink()


def _key(name: str, version: str) -> tuple[str, str]:
    return name.lower().replace("_", "-").replace(".", "-"), version


def pack(source: Path, dest: Path, carry_bytes: int) -> list[Entry]:
    """Split and pack every file in `source` into `dest/carry-N` folders of <= carry_bytes.

    Whole files go first (largest first, into the first folder with room); files larger
    than a carry are then cut to fill the room left and new folders after it, so the
    number of folders is the least the total size allows.
    """
    budget = carry_bytes - 64 * 1024  # room for MANIFEST.json
    files = sorted((p for p in source.iterdir() if p.is_file()), key=lambda p: -p.stat().st_size)
    if not files:
        raise SystemExit(f"nothing to pack in {source}")
    for old in dest.glob("carry-*"):
        shutil.rmtree(old)
    used: list[int] = []
    entries: list[Entry] = []

    def folder(k: int) -> Path:
        path = dest / f"carry-{k + 1}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    small = [p for p in files if p.stat().st_size <= budget]
    large = [p for p in files if p.stat().st_size > budget]
    for path in small:
        size = path.stat().st_size
        k = next((i for i, u in enumerate(used) if u + size <= budget), len(used))
        if k == len(used):
            used.append(0)
        used[k] += size
        shutil.copyfile(path, folder(k) / path.name)
        digest = sha256_of(path)
        entries.append(Entry(path.name, size, digest, [Part(path.name, k + 1, size, digest)]))
    for path in large:
        entry = Entry(path.name, path.stat().st_size, sha256_of(path))
        with path.open("rb") as f:
            k = 0
            least = min(MiB, budget // 8)  # do not cut parts smaller than this
            while True:
                while k < len(used) and budget - used[k] < least:
                    k += 1
                if k == len(used):
                    used.append(0)
                chunk = f.read(budget - used[k])
                if not chunk:
                    break
                name = f"{path.name}.part-{len(entry.parts):03d}"
                (folder(k) / name).write_bytes(chunk)
                used[k] += len(chunk)
                digest = hashlib.sha256(chunk).hexdigest()
                entry.parts.append(Part(name, k + 1, len(chunk), digest))
        entries.append(entry)
    manifest = {
        "format": 1,
        "carries": len(used),
        "carry_bytes": carry_bytes,
        "files": [
            {
                "name": e.name,
                "size": e.size,
                "sha256": e.sha256,
                "parts": [vars(p) for p in e.parts],
            }
            for e in sorted(entries, key=lambda e: e.name)
        ],
    }
    text = json.dumps(manifest, indent=1) + "\n"
    for k in range(len(used)):
        (folder(k) / MANIFEST).write_text(text)
    return entries


def read_manifest(roots: Sequence[Path]) -> tuple[dict[str, object], list[Path]]:
    """The manifest found in any carry folder under `roots`, and every carry folder."""
    folders = sorted(
        {c for r in roots if r.is_dir() for c in r.glob("carry-*") if c.is_dir()},
        key=lambda p: (p.name, str(p)),
    )
    folders += [r for r in roots if (r / MANIFEST).is_file()]  # a root that is a carry
    for carry in folders:
        if (carry / MANIFEST).is_file():
            return json.loads((carry / MANIFEST).read_text()), folders
    raise FileNotFoundError(f"no carry-*/{MANIFEST} under {', '.join(map(str, roots))}")


def reassemble(roots: Sequence[Path], out: Path) -> list[str]:
    """Rebuild every file of the manifest into `out`, verified; return the problems."""
    manifest, folders = read_manifest(roots)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    files = manifest["files"]
    assert isinstance(files, list)
    for item in files:
        name = str(item["name"])
        target = out / name
        partial = out / f".{name}.partial"
        missing = []
        digest = hashlib.sha256()
        with partial.open("wb") as w:
            for part in item["parts"]:
                found = next(
                    (f / part["name"] for f in folders if (f / part["name"]).is_file()), None
                )
                if found is None:
                    missing.append(f"{part['name']} (carry-{part['carry']})")
                    continue
                data = found.read_bytes()
                if hashlib.sha256(data).hexdigest() != part["sha256"]:
                    problems.append(f"{name}: part {part['name']} has the wrong sha256")
                digest.update(data)
                w.write(data)
        if missing:
            problems.append(f"{name}: missing {', '.join(missing)}")
            partial.unlink()
        elif digest.hexdigest() != item["sha256"]:
            problems.append(f"{name}: sha256 of the whole file does not match the manifest")
            partial.unlink()
        else:
            partial.replace(target)
    return problems


def tree_bytes(repo: Path) -> int:
    """Size of what the device tool sends besides carries: tracked + untracked-not-ignored."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in listing.decode().split("\0"):
        path = repo / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def run_calls(carries: int, root: Path = DEFAULT_DIR) -> list[str]:
    """The `run` tool calls that bring the carries over, the last one running the check."""
    calls = []
    for k in range(1, carries + 1):
        copy = f"mkdir -p /tmp/gpu-wheels && cp -r {root}/carry-{k} /tmp/gpu-wheels/"
        if k < carries:
            command, timeout = f"{copy} && du -sh /tmp/gpu-wheels", 120
        else:
            check = "{ if command -v make >/dev/null; then make gpu-check;"
            check += " else bash clients/gpu_check/run.sh; fi; }"
            command, timeout = f"{copy} && {check}", 600
        args = {"command": command, "carry": [f"{root}/carry-{k}"], "timeout_s": timeout}
        calls.append(f"run {json.dumps(args)}")
    return calls


def describe(dest: Path, carry_bytes: int) -> None:
    manifest, _ = read_manifest([dest])
    carries = int(str(manifest["carries"]))
    tree = tree_bytes(Path.cwd())
    print(f"\n{carries} carries in {dest} (each <= {carry_bytes / MiB:.0f} MiB):")
    for k in range(1, carries + 1):
        size = sum(p.stat().st_size for p in (dest / f"carry-{k}").iterdir())
        note = "" if size + tree <= TREE_LIMIT else "  <-- with the tree, over 64 MiB!"
        print(f"  carry-{k}: {size / MiB:6.1f} MiB{note}")
    print(f"working tree sent with each call: {tree / MiB:.1f} MiB")
    print("\nMake these calls in quick succession (the machine stays warm ~30 s after each):")
    for call in run_calls(carries, dest):
        print(f"  {call}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "command",
        nargs="?",
        default="prepare",
        choices=["prepare", "pack", "check", "reassemble", "calls"],
    )
    parser.add_argument("--check", action="store_true", help="same as the command `check`")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the wheels go")
    parser.add_argument("--carry-mib", type=float, default=DEFAULT_CARRY_MIB)
    parser.add_argument("--no-hummingbird", action="store_true", help="leave out hummingbird")
    parser.add_argument("--src", type=Path, action="append", help="reassemble: carry roots")
    parser.add_argument("--out", type=Path, help="reassemble: where the whole wheels go")
    args = parser.parse_args(argv)
    command = "check" if args.check else args.command
    carry_bytes = int(args.carry_mib * MiB)
    downloads = args.dir / "download"

    if command == "prepare":
        pins = CORE_PINS if args.no_hummingbird else CORE_PINS + HUMMINGBIRD_PINS
        download(pins, downloads)
    if command in ("prepare", "pack"):
        pack(downloads, args.dir, carry_bytes)
        describe(args.dir, carry_bytes)
        command = "check"
    if command == "calls":
        describe(args.dir, carry_bytes)
        return 0
    if command == "check":
        with tempfile.TemporaryDirectory(prefix="gpu-wheels-check-") as tmp:
            problems = reassemble([args.dir], Path(tmp))
            count = len(list(Path(tmp).iterdir()))
        for problem in problems:
            print(f"FAIL {problem}")
        print(f"check: {count} files reassembled, sha256 verified, {len(problems)} problems")
        return 1 if problems else 0
    # reassemble (on the device)
    if not args.out:
        parser.error("reassemble needs --out")
    roots = args.src or [Path("/tmp/gpu-wheels"), args.dir]
    problems = reassemble(roots, args.out)
    for problem in problems:
        print(f"FAIL {problem}")
    done = sorted(p.name for p in args.out.iterdir() if not p.name.startswith("."))
    print(f"reassembled into {args.out}: {len(done)} files, {len(problems)} problems")
    for name in done:
        print(f"  {name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
