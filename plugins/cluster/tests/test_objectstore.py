"""``--object-store``: a cluster whose machines share no directory, on an S3-compatible server.

Two front-ends and two workers each have their own input, output and temp
folders; the only things they share are the NATS server, the database and a
bucket on moto's S3 server (which checks every request's signature).
"""

from __future__ import annotations

import datetime
import io
import os
import time

import pytest
from cluster_helpers import OTHER_PLUGINS, NatsServer, S3Server, WorkerProcess, install_pack, wait_history
from comfy_kernel_cluster.objectstore import EMPTY_SHA256, Credentials, ObjectStore, ObjectStoreError, sign

from comfy_kernel.testing import TEST_POSTGRES, ServerProcess, database_for

PLUGINS_OFF = ",".join(p for p in OTHER_PLUGINS.split(",") if p != "core_nodes")


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> tuple[tuple[int, int], tuple[int, ...]]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size, img.convert("RGB").getpixel((0, 0))


def test_requests_are_signed_as_the_published_sigv4_example():
    """AWS's documented S3 example: GET /test.txt with a Range header, 24 May 2013."""
    headers = sign("GET", "examplebucket.s3.amazonaws.com", "/test.txt", {}, {"Range": "bytes=0-9"}, EMPTY_SHA256,
                   Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "us-east-1",
                   datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC))
    assert headers["Authorization"].endswith(
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        yield server.start()
    finally:
        server.stop()


def test_store_operations_on_an_s3_server(s3, tmp_path):
    store = ObjectStore(s3.client(), "ops")
    assert store.put_new("input", "a b+c.png", b"one")
    assert not store.put_new("input", "a b+c.png", b"two")  # If-None-Match: the first stays
    assert store.holds("input", "a b+c.png", b"one") and not store.holds("input", "a b+c.png", b"two")
    assert store.put_new("output", "sub/x_00001_.png")  # a claim: an empty object, not a file yet
    assert not store.fetch("output", "sub/x_00001_.png", str(tmp_path / "claimed.png"))
    source = tmp_path / "x.png"
    source.write_bytes(b"image")
    store.put("output", "sub/x_00001_.png", str(source))
    assert store.fetch("output", "sub/x_00001_.png", str(tmp_path / "got" / "x.png"))
    assert (tmp_path / "got" / "x.png").read_bytes() == b"image"
    assert not store.fetch("output", "sub/missing.png", str(tmp_path / "missing.png"))
    for i in range(5):
        store.put_new("output", f"sub/deep/y_{i}.png", b"y")
    assert store.names("output", "sub/x_") == ["sub/x_00001_.png"]
    assert len(store.names("output", "sub/")) == 6
    assert store.top_level("input") == ["a b+c.png"]
    with pytest.raises(ObjectStoreError) as refused:
        ObjectStore(s3.client(secret="not the key"), "ops").names("input")
    assert refused.value.status == 403


def test_listing_pages_are_followed(s3):
    client = s3.client()
    for i in range(7):
        client.put(f"pages/k{i}", b"")
    assert client.list("pages/", page_size=3) == [f"pages/k{i}" for i in range(7)]


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """NATS, two front-ends and two workers with nothing shared but NATS, the database and the bucket."""
    root = str(tmp_path_factory.mktemp("s3-cluster"))
    server = os.environ.get(TEST_POSTGRES)
    database = database_for(server, os.path.join(root, "db")) if server else os.path.join(root, "comfy-kernel.db")
    store = ["--object-store", f"s3://{s3.bucket}/cluster", "--object-store-endpoint", s3.endpoint]
    nats = NatsServer(os.path.join(root, "nats")).start()
    fronts: list[ServerProcess] = []
    workers: list[WorkerProcess] = []
    try:
        for i in range(2):
            base = os.path.join(root, f"worker{i}")
            worker = WorkerProcess(base, nats.url, database, os.path.join(base, "output"), *store,
                                   "--disable-plugins", PLUGINS_OFF, env=s3.env)
            worker.cmd = [a if a != OTHER_PLUGINS else PLUGINS_OFF for a in worker.cmd]
            workers.append(worker.start().wait_ready())
        for i in range(2):
            base = os.path.join(root, f"front{i}")
            install_pack(base)
            front = ServerProcess(base, "--role", "api", "--nats", nats.url, "--database", database, *store,
                                  "--disable-plugins", PLUGINS_OFF, env=s3.env, startup_timeout=120)
            fronts.append(front.start())
        yield fronts, workers
    finally:
        for front in fronts:
            front.stop()
            front.client.close()
        for worker in workers:
            worker.stop()
        nats.stop()


def upload(front: ServerProcess, name: str, data: bytes) -> str:
    r = front.client.post("/upload/image", files={"image": (name, data, "image/png")})
    assert r.status_code == 200, r.text
    return r.json()["name"]


def bucket_object(s3: S3Server, key: str) -> bytes:
    """Read through boto3, a client independent of the one under test."""
    import boto3

    s3c = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                       aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"])
    return s3c.get_object(Bucket=s3.bucket, Key=key)["Body"].read()


@pytest.mark.slow
def test_uploads_through_two_front_ends_never_share_a_name(cluster, s3):
    (a, b), _ = cluster
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    assert upload(a, "shared.png", red) == "shared.png"
    assert upload(b, "shared.png", blue) == "shared (1).png"  # b's folder has no shared.png, the bucket has
    assert upload(b, "shared.png", red) == "shared.png"  # the same bytes keep their name
    assert bucket_object(s3, "cluster/input/shared.png") == red
    assert bucket_object(s3, "cluster/input/shared (1).png") == blue
    deadline = time.monotonic() + 15  # a's LoadImage lists what only b received
    while "shared (1).png" not in a.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]:
        assert time.monotonic() < deadline, "a never listed b's upload"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_prompt_reads_an_upload_from_one_front_end_and_the_other_serves_its_output(cluster, s3):
    (a, b), _ = cluster
    green = png((0, 200, 0), (10, 7))
    name = upload(a, "green.png", green)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s3/green"}}}
    r = b.post("/prompt", json={"prompt": prompt})
    assert r.status_code == 200, r.text
    result = wait_history(a, r.json()["prompt_id"], timeout=60)
    assert result["status"]["status_str"] == "success", result["status"]
    [image] = result["outputs"]["2"]["images"]
    assert image["subfolder"] == "s3" and image["type"] == "output"
    for front in (a, b):  # neither front-end saved it: both fetch it from the bucket
        view = front.get("/view", params={"filename": image["filename"], "subfolder": "s3", "type": "output"})
        assert view.status_code == 200 and pixels(view.content) == ((10, 7), (0, 200, 0))
        assert view.content == bucket_object(s3, f"cluster/output/s3/{image['filename']}")
    missing = a.get("/view", params={"filename": "nothing.png", "type": "output"})
    assert missing.status_code == 404


@pytest.mark.slow
def test_workers_with_their_own_output_folders_never_reuse_a_name(cluster, s3):
    (a, _b), workers = cluster
    ids = []
    for i in range(6):  # each holds its worker 0.4 s, so both workers take some
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1,
                                                               "color": 10 * i + 1}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "race"}},
                  "3": {"class_type": "TestSyncSleep", "inputs": {"value": i, "seconds": 0.4}},
                  "4": {"class_type": "TestOutput", "inputs": {"value": ["3", 0]}}}
        r = a.post("/prompt", json={"prompt": prompt})
        assert r.status_code == 200, r.text
        ids.append(r.json()["prompt_id"])
    names = []
    for i, pid in enumerate(ids):
        result = wait_history(a, pid, timeout=60)
        assert result["status"]["status_str"] == "success", result["status"]
        [image] = result["outputs"]["2"]["images"]
        names.append(image["filename"])
        assert pixels(bucket_object(s3, f"cluster/output/{image['filename']}"))[1] == (0, 0, 10 * i + 1)
    assert len(set(names)) == 6
    saved = [sorted(f for f in os.listdir(os.path.join(w.base, "output")) if f.startswith("race_")) for w in workers]
    assert all(saved), f"one worker took every prompt: {saved}"
    assert sorted(saved[0] + saved[1]) == sorted(names)


@pytest.mark.slow
def test_a_store_that_cannot_serve_stops_the_process(s3, tmp_path):
    store = ["--object-store", f"s3://{s3.bucket}/x", "--object-store-endpoint", s3.endpoint]
    single = ServerProcess(tmp_path / "single", *store, "--disable-plugins", PLUGINS_OFF, env=s3.env)
    with pytest.raises(RuntimeError, match="is for a cluster's machines"):
        single.start()
    single.client.close()
    nats = NatsServer(tmp_path / "nats").start()
    try:
        wrong = {**s3.env, "AWS_SECRET_ACCESS_KEY": "not the key"}
        worker = WorkerProcess(tmp_path / "worker", nats.url, str(tmp_path / "db.sqlite"), str(tmp_path / "out"),
                               *store, env=wrong).start()
        with pytest.raises(RuntimeError, match="403"):
            worker.wait_ready()
    finally:
        nats.stop()


def test_large_files_pass_in_blocks(s3, tmp_path):
    """A file of several transfer blocks goes up and comes back byte for byte (streamed both ways)."""
    from comfy_kernel_cluster.objectstore import BLOCK

    store = ObjectStore(s3.client(), "large")
    source = tmp_path / "video.mp4"
    data = os.urandom(3 * BLOCK + 12345)
    source.write_bytes(data)
    store.put("output", "clips/video.mp4", str(source))
    assert store.holds("output", "clips/video.mp4", data)
    target = tmp_path / "fetched" / "video.mp4"
    assert store.fetch("output", "clips/video.mp4", str(target))
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["video.mp4"]  # no partial file left behind


def test_an_unchanged_file_is_stored_once(s3, tmp_path):
    """A cached node's ``executed`` names its files again: the process does not send them twice."""
    store = ObjectStore(s3.client(), "once")
    source = tmp_path / "a.png"
    source.write_bytes(b"first")
    store.put("output", "a.png", str(source))
    s3.client().request("DELETE", "once/output/a.png", ok=(204,))  # gone from the bucket behind its back
    store.put("output", "a.png", str(source))
    assert not store.holds("output", "a.png", b"first")  # unchanged here: not sent again
    source.write_bytes(b"second, longer")
    store.put("output", "a.png", str(source))
    assert store.holds("output", "a.png", b"second, longer")
