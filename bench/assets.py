"""Asset library benchmark: listing over 100,000 assets, and seeding 10,000 files.

Listing: rows are inserted straight through the plugin's store into a fresh
database, then pages are timed both in-process (the store's query) and over
HTTP against a real server using that database. Target: under 50 ms a page.

Seeding: 10,000 small files in a server's input folder; ``POST
/api/assets/seed`` is timed until its status says completed, and compared
with a single-thread blake3 pass over the same files measured in the same
run. A second seed shows the incremental path (nothing re-hashed).

    python bench/assets.py [--assets 100000] [--files 10000] [--file-size 16384]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "kernel"))
sys.path.insert(0, str(ROOT / "plugins" / "assets"))

import blake3  # noqa: E402

from comfy_kernel.testing import ServerProcess  # noqa: E402
from comfy_kernel_assets.store import AssetFilter, AssetStore  # noqa: E402

WORDS = ["portrait", "landscape", "anime", "photo", "sketch", "render", "pixel", "noir", "vivid", "dream"]
CATEGORIES = [f"cat-{i}" for i in range(50)]


def ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:6.2f} ms, max {max(samples) * 1000:6.2f} ms"


async def fill(db_path: str, count: int, owner: str) -> None:
    store = AssetStore(db_path)
    await store.open()
    rng = random.Random(1)
    start = time.perf_counter()
    now = time.time()
    batch = []
    for i in range(count):
        tags = [rng.choice(CATEGORIES), "models" if i % 2 else "input"]
        batch.append({"id": str(uuid.UUID(int=rng.getrandbits(128))), "owner": owner,
                      "name": f"{rng.choice(WORDS)}-{i:06d}.safetensors", "hash": f"blake3:{i:064x}",
                      "size": rng.randint(1, 1 << 30), "mime_type": "application/octet-stream",
                      "user_metadata": {"i": i % 10}, "tags": tags, "created_at": now - count + i})
        if len(batch) == 5000:
            await store.insert_many(batch)
            batch = []
    if batch:
        await store.insert_many(batch)
    print(f"inserted {count:,} assets in {time.perf_counter() - start:.1f} s")
    queries = {
        "tag filter (1 of 50 tags)": AssetFilter(owner=owner, include_tags=["cat-7"]),
        "tag filter (half the rows)": AssetFilter(owner=owner, include_tags=["models"]),
        "name filter": AssetFilter(owner=owner, name_contains="anime-01"),
        "tag + name + exclude": AssetFilter(owner=owner, include_tags=["models"], exclude_tags=["cat-3"],
                                            name_contains="photo"),
        "no filter": AssetFilter(owner=owner),
    }
    print("\nstore.list, 50 per page (in-process):")
    for label, flt in queries.items():
        samples = []
        for page in range(10):
            t = time.perf_counter()
            rows, total, _ = await store.list(flt, limit=50, offset=page * 50)
            samples.append(time.perf_counter() - t)
        print(f"  {label:30s} total {total:>7,}  {ms(samples)}")
    await store.close()


def http_listing(base: Path) -> None:
    params = {
        "tag filter (1 of 50 tags)": {"include_tags": "cat-7"},
        "tag filter (half the rows)": {"include_tags": "models"},
        "name filter": {"name_contains": "anime-01"},
        "tag + name + exclude": {"include_tags": "models", "exclude_tags": "cat-3", "name_contains": "photo"},
        "cursor paging (tag filter)": None,
    }
    with ServerProcess(base) as srv:
        print("\nGET /api/assets, 50 per page (HTTP, end to end):")
        for label, query in params.items():
            samples = []
            if query is None:
                cursor = None
                for _ in range(10):
                    q = {"include_tags": "cat-7", "limit": 50, **({"after": cursor} if cursor else {})}
                    t = time.perf_counter()
                    body = srv.get("/api/assets", params=q).json()
                    samples.append(time.perf_counter() - t)
                    cursor = body.get("next_cursor")
                total = body["total"]
            else:
                for page in range(10):
                    t = time.perf_counter()
                    body = srv.get("/api/assets", params={**query, "limit": 50, "offset": page * 50}).json()
                    samples.append(time.perf_counter() - t)
                total = body["total"]
            ok = "ok" if statistics.median(samples) < 0.05 else "OVER TARGET"
            print(f"  {label:30s} total {total:>7,}  {ms(samples)}  [{ok}]")


def seeding(workdir: Path, files: int, size: int) -> None:
    base = workdir / "seed"
    inputs = base / "input"
    inputs.mkdir(parents=True)
    rng = random.Random(2)
    for i in range(files):
        sub = inputs / f"d{i % 100:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(rng.randbytes(size))
    paths = sorted(str(p) for p in inputs.rglob("*.bin"))
    total_mb = files * size / 1e6

    t = time.perf_counter()
    for p in paths:
        h = blake3.blake3()
        with open(p, "rb") as f:
            h.update(f.read())
        h.hexdigest()
    base_s = time.perf_counter() - t
    print(f"\nseeding {files:,} files of {size // 1024} KiB ({total_mb:.0f} MB), {os.cpu_count()} CPUs")
    print(f"  single-thread blake3 baseline: {files / base_s:9,.0f} files/s  {total_mb / base_s:8.1f} MB/s")

    with ServerProcess(base) as srv:
        for label in ("first seed", "re-seed (unchanged)"):
            t = time.perf_counter()
            assert srv.post("/api/assets/seed", json={"roots": ["input"]}).json()["status"] == "started"
            while True:
                status = srv.get("/api/assets/seed/status").json()
                if status["status"] != "running":
                    break
                time.sleep(0.02)
            took = time.perf_counter() - t
            hashed_mb = status["bytes_hashed"] / 1e6
            print(f"  {label:29s}: {files / took:9,.0f} files/s  {hashed_mb / took:8.1f} MB/s hashed"
                  f"  ({took:.2f} s, hashed {status['files_hashed']:,}, skipped {status['files_skipped']:,},"
                  f" {status['status']}; listing {status.get('seconds_listing')} s, comparing {status.get('seconds_comparing')} s, hashing+recording {status.get('seconds_hashing')} s)")
        total = srv.get("/api/assets", params={"include_tags": "input", "limit": 1}).json()["total"]
        print(f"  assets recorded: {total:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--file-size", type=int, default=16 * 1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="assets-bench-") as tmp:
        work = Path(tmp)
        base = work / "list"
        (base / "user").mkdir(parents=True)
        asyncio.run(fill(str(base / "user" / "comfy-kernel.db"), args.assets, "default"))
        http_listing(base)
        seeding(work, args.files, args.file_size)


if __name__ == "__main__":
    main()
