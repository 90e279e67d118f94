"""The batcher under real load: coalescing, opportunistic latency, admission control, client
disconnects, a failing batch (a real ONNX Runtime error), and the fatal-error latch."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from jepa.contract import Embeddings
from jepa.formats.native import read_config
from service.backends.base import BackendInfo
from service.batcher import Batcher
from service.calibration import pick_batch_size, probe_batch_size, probe_sizes
from service.errors import InferenceFailed, NotReady
from service.image_queue import Entry
from service.metrics import Metrics
from service.plan import BatchLimits
from tests.service.helpers import encode, open_bytes, rel_err


def post(url: str, blob: bytes, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + "/embed", content=blob, headers={"Content-Type": "image/jpeg"}, timeout=timeout)


async def post_many(url: str, blobs: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        headers = {"Content-Type": "image/jpeg"}
        return await asyncio.gather(*(client.post(url + "/embed", content=b, headers=headers) for b in blobs))


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_concurrent_requests_are_coalesced(serve, tiny_model_dir, tiny_encoder, jpeg_bytes):
    srv = serve(tiny_model_dir, max_wait_ms=500, max_batch_size=8)
    blobs = [jpeg_bytes[i % 4] for i in range(8)]
    responses = asyncio.run(post_many(srv.url, blobs))
    assert all(r.status_code == 200 for r in responses)
    batches = srv.metric("jepa_batch_size_count")
    images = srv.metric("jepa_batch_size_sum")
    assert images == 8 and batches < 8, (batches, images)  # mean batch size > 1
    # and every result is the one for its own image, against jepa's own embed of that image
    reference = tiny_encoder.embed([open_bytes(b) for b in jpeg_bytes[:4]])["global"]
    for i, r in enumerate(responses):
        assert rel_err(np.array(r.json()["data"][0]["embedding"]), reference[i % 4]) < 1e-4, i


def timed_post(url: str, blob: bytes) -> float:
    start = time.perf_counter()
    assert post(url, blob).status_code == 200
    return time.perf_counter() - start


def test_lone_request_is_not_held_back(serve, tiny_model_dir, jpeg_bytes):
    eager = serve(tiny_model_dir, max_wait_ms=0)
    patient = serve(tiny_model_dir, max_wait_ms=2000)
    eager_s = min(timed_post(eager.url, jpeg_bytes[1]) for _ in range(3))  # best of 3: the machine is shared
    patient_s = timed_post(patient.url, jpeg_bytes[1])
    assert patient_s >= 2.0  # max_wait really waits for company...
    # ...and opportunistic batching does not (about 10 ms on an idle machine). Relative, so a loaded
    # machine slows both alike; only a lone request held back for company fails it.
    assert eager_s < patient_s - 1.0, (eager_s, patient_s)


def test_queue_full_answers_503_at_once(serve, tiny_model_dir, jpeg_bytes):
    srv = serve(tiny_model_dir, max_wait_ms=6000, max_queue=4, max_images_per_request=4, retry_after_s=2)
    files = [("image", ("a.jpg", jpeg_bytes[1], "image/jpeg"))] * 4
    first: list[httpx.Response] = []
    t = threading.Thread(target=lambda: first.append(httpx.post(srv.url + "/embed", files=files, timeout=30)))
    t.start()
    wait_for(lambda: srv.metric("jepa_queue_depth") == 4)
    start = time.perf_counter()
    r = post(srv.url, jpeg_bytes[1])
    elapsed = time.perf_counter() - start
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["type"] == "overloaded" and elapsed < 3.0  # not after the 6 s wait
    t.join()
    assert first[0].status_code == 200 and len(first[0].json()["data"]) == 4
    assert srv.metric("jepa_requests_total", 'outcome="overloaded"') == 1


def test_concurrent_request_limit(serve, tiny_model_dir, jpeg_bytes):
    srv = serve(tiny_model_dir, max_wait_ms=3000, max_concurrent_requests=1)
    first: list[httpx.Response] = []
    t = threading.Thread(target=lambda: first.append(post(srv.url, jpeg_bytes[1])))
    t.start()
    wait_for(lambda: srv.metric("jepa_queue_depth") == 1)
    r = post(srv.url, jpeg_bytes[2])
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "1 requests already" in r.text
    t.join()
    assert first[0].status_code == 200
    assert post(srv.url, jpeg_bytes[2]).status_code == 200  # the slot is free again


def test_client_disconnect_leaves_no_work(serve, tiny_model_dir, jpeg_bytes):
    srv = serve(tiny_model_dir, max_wait_ms=800)
    with pytest.raises(httpx.ReadTimeout):
        post(srv.url, jpeg_bytes[1], timeout=0.3)
    wait_for(lambda: srv.metric("jepa_requests_total", 'outcome="client_closed"') == 1)
    wait_for(lambda: srv.metric("jepa_queue_depth") == 0)
    time.sleep(0.9)  # past max_wait: the abandoned image must not have run
    assert srv.metric("jepa_batch_size_count") == 0
    assert post(srv.url, jpeg_bytes[1]).status_code == 200
    assert srv.metric("jepa_batch_size_sum") == 1


def white_jpeg() -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (64, 64), (255, 255, 255)), "JPEG")


def test_inference_error_fails_only_its_batch(serve, poison_model_dir, jpeg_bytes):
    srv = serve(poison_model_dir, backend="onnxruntime", max_wait_ms=1000, inference_workers=1)
    assert post(srv.url, jpeg_bytes[1]).status_code == 200
    r = post(srv.url, white_jpeg())
    assert r.status_code == 500 and r.json()["error"]["type"] == "inference_error"
    both = asyncio.run(post_many(srv.url, [white_jpeg(), jpeg_bytes[2]]))  # same batch: both fail
    assert [x.status_code for x in both] == [500, 500]
    assert httpx.get(srv.url + "/ready").status_code == 200  # not a fatal error: still serving
    assert post(srv.url, jpeg_bytes[2]).status_code == 200
    assert srv.metric("jepa_requests_total", 'outcome="inference_error"') == 3


def test_two_workers_split_a_batch_and_isolate_its_failure(serve, poison_model_dir, jpeg_bytes):
    """With 2 CPU workers, a batch that finds both idle is split over them: the poisoned image
    fails its half only. A lone image runs on the wide session (all threads)."""
    srv = serve(poison_model_dir, backend="onnxruntime", device="cpu", max_wait_ms=1000, inference_workers=2)
    assert post(srv.url, jpeg_bytes[1]).status_code == 200
    assert srv.metric("jepa_inference_runs_total", 'mode="wide"') == 1
    both = asyncio.run(post_many(srv.url, [white_jpeg(), jpeg_bytes[2]]))
    assert [x.status_code for x in both] == [500, 200]
    assert srv.metric("jepa_inference_runs_total", 'mode="narrow"') == 2
    assert srv.metric("jepa_batch_size_count") == 3 and srv.metric("jepa_batch_size_sum") == 3


def make_batcher(backend, limits: BatchLimits, *, workers: int = 1, wide: bool = False) -> Batcher:
    """A batcher over ``backend`` that only stacks (inside a running loop: it starts at once)."""
    return Batcher(backend, limits, np.stack, Metrics.create(limits.max_batch_size), workers=workers, wide=wide)


def test_batch_plan_with_a_wide_backend(tiny_model_dir):
    """The plan for a backend with a wide mode and 2 workers: a lone image with nothing queued runs
    wide; a batch that finds both workers idle is split in two; with one busy it runs whole."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        batcher = make_batcher(CudaFaultBackend(read_config(tiny_model_dir)), BatchLimits(8, 0.0, 16, 1),
                               workers=2, wide=True)  # fmt: skip
        entries = [Entry(np.zeros((32, 32, 3), np.uint8), loop.create_future()) for _ in range(5)]
        batch = np.arange(5)

        def plan(n: int, busy: int) -> list[tuple[int, list[int], bool]]:
            steps = batcher._plan(entries[:n], batch[:n], busy)
            return [(len(part), rows.tolist(), wide) for part, rows, wide in steps]

        assert plan(1, busy=0) == [(1, [0], True)]
        assert plan(5, busy=0) == [(3, [0, 1, 2], False), (2, [3, 4], False)]
        assert plan(5, busy=1) == [(5, [0, 1, 2, 3, 4], False)]
        batcher.queue.push([entries[4]])  # someone is waiting: the lone image leaves the CPUs to share
        assert plan(1, busy=0) == [(1, [0], False)]
        batcher.queue.take(1)
        batcher.wide = False  # no wide mode (GPU, torch): always whole
        assert plan(5, busy=0) == [(5, [0, 1, 2, 3, 4], False)]
        await batcher.close(1.0)

    asyncio.run(scenario())


class FakeClock:
    """A clock that moves only when a fake batch "runs": the probe sees exactly ``cost(b)`` seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("cost", "cap"),
    [
        (lambda b: 0.004 * b * b, 1),  # twice the cost per image at batch 2: stay at 1
        (lambda b: 0.004 * b * (1 if b <= 2 else 3), 2),  # flat to 2, then 3x: cap at 2
        (lambda b: 0.004 * b * {1: 1, 2: 1, 4: 1.02}.get(b, 3), 4),  # 2% dearer at 4 is within the 3% tolerance
        (lambda b: 0.02 + 0.0005 * b, 16),  # cheaper per image all the way: keep max_batch_size
    ],
)
def test_batch_probe_caps_where_bigger_batches_stop_paying(cost, cap):
    clock = FakeClock()

    def batch_of(b: int):
        def run() -> None:
            clock.now += cost(b)

        return run

    costs, rose = probe_sizes(batch_of, 16, clock=clock)
    assert pick_batch_size(costs, rose, 16) == cap
    assert min(costs) == 1 and costs[1] == pytest.approx(1000 * cost(1))


class SleepBackend:
    """A backend that takes a little real time per batch (for calibration through real threads)."""

    def __init__(self, config) -> None:
        self.config = config
        self.info = BackendInfo("sleep", "cpu", "float32", "test")
        self.outputs = frozenset({"global"})
        self.calls: list[int] = []

    def run(self, batch: np.ndarray, outputs: frozenset, alone: bool = False) -> Embeddings:
        self.calls.append(len(batch))
        time.sleep(0.001 * len(batch))
        return Embeddings(np.zeros((len(batch), 4), np.float32))

    def close(self) -> None:
        pass


def test_probe_runs_the_backend_at_each_size(tiny_model_dir):
    """The probe through a real thread pool: batches of 1, 2, 4, ... up to the cap, three calls each."""
    from concurrent.futures import ThreadPoolExecutor

    backend = SleepBackend(read_config(tiny_model_dir))
    with ThreadPoolExecutor(1) as pool:
        found = asyncio.run(probe_batch_size(backend, np.stack, pool, 8))
    assert backend.calls[:9] == [1, 1, 1, 2, 2, 2, 4, 4, 4] and set(found.ms_per_image) <= {1, 2, 4, 8}
    assert 1 <= found.batch_size <= 8


class CudaFaultBackend:
    """A backend whose device fails the way a dead GPU does (for the fatal latch; no GPU needed)."""

    def __init__(self, config) -> None:
        self.config = config
        self.info = BackendInfo("fault", "cuda", "float32", "test")
        self.outputs = frozenset({"global", "patch"})
        self.calls = 0

    def run(self, batch: np.ndarray, outputs: frozenset, alone: bool = False) -> Embeddings:
        self.calls += 1
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def close(self) -> None:
        pass


def test_fatal_device_error_latches_not_ready(tiny_model_dir):
    backend = CudaFaultBackend(read_config(tiny_model_dir))

    async def scenario() -> None:
        batcher = make_batcher(backend, BatchLimits(4, 0.0, 8, 1))
        with pytest.raises(InferenceFailed):
            await asyncio.gather(*batcher.submit([np.zeros((32, 32, 3), np.uint8)]))
        assert batcher.fatal is not None
        with pytest.raises(NotReady):
            batcher.submit([np.zeros((32, 32, 3), np.uint8)])
        await batcher.close(1.0)

    asyncio.run(scenario())
    assert backend.calls == 1


class HungBackend(CudaFaultBackend):
    """A backend whose call does not come back until released (a hung driver)."""

    release = threading.Event()

    def run(self, batch: np.ndarray, outputs: frozenset, alone: bool = False) -> Embeddings:
        self.calls += 1
        self.release.wait(30)
        raise AssertionError("released only after the test")


def test_hung_inference_times_out_and_latches(tiny_model_dir):
    """A call that never returns fails its batch at ``inference_timeout_s`` (not whenever the call
    ends: it only ends when the test releases it) and latches not-ready."""
    backend = HungBackend(read_config(tiny_model_dir))

    async def scenario() -> None:
        batcher = make_batcher(backend, BatchLimits(4, 0.0, 8, 1, inference_timeout_s=0.3))
        with pytest.raises(InferenceFailed):
            await asyncio.gather(*batcher.submit([np.zeros((32, 32, 3), np.uint8)]))
        assert type(batcher.fatal).__name__ == "InferenceTimeout"
        assert backend.calls == 1 and not backend.release.is_set()  # the call is still hung
        backend.release.set()
        await batcher.close(1.0)

    asyncio.run(scenario())


def test_patch_grids_only_leave_the_backend_when_asked(tiny_model_dir):
    """A batch mixing global-only and patch requests: only the latter get a grid, and a batch of
    global-only requests asks the backend for none (it stays on the device)."""
    from service.backends.torch import TorchBackend
    from service.plan import resolve_plan
    from service.settings import Settings

    backend = TorchBackend(resolve_plan(Settings(model="x", device="cpu", dtype="float32"), str(tiny_model_dir)))
    seen: list[frozenset] = []
    run = backend.run
    backend.run = lambda batch, outputs, alone=False: (seen.append(outputs), run(batch, outputs))[1]  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    patch = frozenset({"global", "patch"})

    async def scenario() -> tuple[list, list]:
        assert backend.info.input_kind == "uint8"  # it normalises on its device: the batcher only stacks
        batcher = make_batcher(backend, BatchLimits(8, 0.05, 16, 1))
        mixed = await asyncio.gather(*batcher.submit(images[:2]), *batcher.submit(images[2:], patch))
        lone = await asyncio.gather(*batcher.submit(images[:1]))
        await batcher.close(1.0)
        return mixed, lone

    mixed, lone = asyncio.run(scenario())
    assert [r.patch_embeddings is None for r in mixed] == [True, True, False]
    assert mixed[2].patch_embeddings.shape == (16, 192)
    assert lone[0].patch_embeddings is None and seen == [patch, frozenset({"global"})]
