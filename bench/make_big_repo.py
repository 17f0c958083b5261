"""A large generated repository with the shape of a big real project, built once.

~50,000 source files in a few hundred directories and ~3,000 commits spread over 20
years: the project grows from a few thousand files to its full size over the first
two thirds of its history, and every commit also edits a handful of existing files.
Content is deterministic pseudo-code (seeded), so every machine builds the same
repository. Built with one `git fast-import` stream (about a minute on 2 cores) into
a bare repository cached under `.switchboard/bench/`, and reused after that.

    python -m bench.make_big_repo [--files N] [--commits N] [--out PATH]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bench._env import CACHE_DIR

FILES = 50_000
COMMITS = 3_000
YEARS = 20
SEED = 50_000
EDITS_PER_COMMIT = 8
VERSION = 1
"""Bump to rebuild cached repositories when the shape changes."""

_WORDS = [
    "parse",
    "token",
    "value",
    "buffer",
    "index",
    "state",
    "config",
    "request",
    "response",
    "handler",
    "cache",
    "stream",
    "offset",
    "record",
    "schema",
    "field",
    "batch",
    "queue",
    "worker",
    "result",
    "error",
    "retry",
    "limit",
    "count",
    "total",
    "name",
    "path",
    "node",
    "tree",
    "item",
    "entry",
    "block",
    "page",
    "frame",
    "packet",
]
_EPOCH = 1_104_537_600  # 2005-01-01


def default_path(files: int = FILES, commits: int = COMMITS) -> Path:
    return CACHE_DIR / f"big-repo-v{VERSION}-{files}f-{commits}c.git"


def ensure_big_repo(
    files: int = FILES, commits: int = COMMITS, path: Path | None = None, log: bool = True
) -> Path:
    """The bare repository at `path` (built if missing or incomplete); returns its path."""
    path = path or default_path(files, commits)
    if (path / "switchboard-bench-complete").is_file():
        return path
    started = time.monotonic()
    if log:
        print(f"building {files:,} files / {commits:,} commits at {path} (once)...", flush=True)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp)], check=True)
    importer = subprocess.Popen(
        ["git", "-C", str(tmp), "fast-import", "--quiet", "--done"],
        stdin=subprocess.PIPE,
    )
    assert importer.stdin is not None
    _write_history(importer.stdin, files, commits)
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    (tmp / "switchboard-bench-complete").write_text(f"{files} files, {commits} commits\n")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    if log:
        print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    return path


def _write_history(out: IO[bytes], files: int, commits: int) -> None:
    rng = random.Random(SEED)
    dirs = max(10, files // 180)
    paths = [_path(rng, i, dirs) for i in range(files)]
    initial = min(files, max(1, files // 10))
    grow_until = max(1, (commits * 2) // 3)
    per_commit = (files - initial) / grow_until
    present = 0
    span = YEARS * 365 * 24 * 3600
    for n in range(commits):
        target = files if n >= grow_until else initial + int(per_commit * n)
        changes: list[tuple[str, bytes]] = []
        while present < target:
            changes.append((paths[present], _content(rng, present, 0)))
            present += 1
        for _ in range(min(EDITS_PER_COMMIT, present)):
            i = rng.randrange(present)
            changes.append((paths[i], _content(rng, i, n)))
        when = _EPOCH + (span * n) // commits
        message = f"change {n}: {rng.choice(_WORDS)} {rng.choice(_WORDS)}\n".encode()
        out.write(b"commit refs/heads/main\n")
        out.write(f"author Dev {n % 37} <dev{n % 37}@example.com> {when} +0000\n".encode())
        out.write(f"committer Dev {n % 37} <dev{n % 37}@example.com> {when} +0000\n".encode())
        out.write(f"data {len(message)}\n".encode() + message)
        for name, body in changes:
            out.write(f"M 100644 inline {name}\ndata {len(body)}\n".encode())
            out.write(body + b"\n")
        out.write(b"\n")
    out.write(b"done\n")


def _path(rng: random.Random, i: int, dirs: int) -> str:
    top = ("src", "lib", "tests", "tools", "docs")[i % 5]
    return f"{top}/{rng.choice(_WORDS)}_{i % dirs}/{rng.choice(_WORDS)}_{i}.py"


def _content(rng: random.Random, index: int, revision: int) -> bytes:
    lines = [f'"""Module {index}, revision {revision}."""', ""]
    for f in range(rng.randint(3, 12)):
        a, b = rng.choice(_WORDS), rng.choice(_WORDS)
        lines += [
            f"def {a}_{b}_{f}({a}, {b}=None):",
            f"    {a}_{f} = {b} or {rng.randint(0, 999)}",
            f"    return {a} + {a}_{f}",
            "",
        ]
    return "\n".join(lines).encode()


def iter_paths(repo: Path) -> Iterator[str]:
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "main"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    yield from listing.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=FILES)
    parser.add_argument("--commits", type=int, default=COMMITS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    path = ensure_big_repo(args.files, args.commits, args.out)
    count = sum(1 for _ in iter_paths(path))
    print(f"{path}: {count:,} files at main")


if __name__ == "__main__":
    main()
