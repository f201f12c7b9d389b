"""Dynamic batching: batches form under concurrency, answers go to their requests, the queue
is bounded, and stopping answers what was submitted."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from visionops.serving.batcher import BatchRecord, DynamicBatcher, QueueFull


def _identity_model(delay_s: float = 0.0):  # type: ignore[no-untyped-def]
    """Each output row is its input image's id (the value it was filled with)."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        time.sleep(delay_s)
        return images.flatten(1)[:, :1].clone()

    return predict


def _images(*ids: int) -> torch.Tensor:
    return torch.stack([torch.full((3, 2, 2), float(i)) for i in ids])


def test_concurrent_requests_share_batches_and_each_gets_its_own_answers() -> None:
    records: list[BatchRecord] = []
    # 24 requests of 1 to 3 images each, every image filled with its own id.
    requests = [_images(*range(10 * r, 10 * r + 1 + r % 3)) for r in range(24)]

    async def main() -> list[torch.Tensor]:
        batcher = DynamicBatcher(_identity_model(0.01), 8, 20, 256, on_batch=records.append)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(images) for images in requests))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    for answer, images in zip(answers, requests, strict=True):
        assert answer.flatten().tolist() == images[:, 0, 0, 0].tolist()  # its own, in order
    sizes = [r.size for r in records]
    assert sum(sizes) == sum(len(images) for images in requests)
    assert max(sizes) == 8 and len(sizes) < len(requests)  # requests shared forward passes
    assert all(wait >= 0 for r in records for wait in r.queue_waits_s)


def test_a_lone_request_waits_at_most_max_wait() -> None:
    records: list[BatchRecord] = []

    async def main() -> float:
        batcher = DynamicBatcher(_identity_model(), 32, 50, 64, on_batch=records.append)
        batcher.start()
        start = time.monotonic()
        await batcher.submit(_images(1))
        elapsed = time.monotonic() - start
        await batcher.stop()
        return elapsed

    elapsed = asyncio.run(main())
    assert [r.size for r in records] == [1]
    assert records[0].queue_waits_s[0] >= 0.04 and elapsed < 2.0


def test_a_full_queue_refuses_at_once_and_recovers() -> None:
    release = threading.Event()

    def blocked(images: torch.Tensor) -> torch.Tensor:
        release.wait(5)
        return images.flatten(1)[:, :1]

    async def main() -> None:
        batcher = DynamicBatcher(blocked, 2, 0, 4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_images(1, 2, 3, 4)))
        await asyncio.sleep(0.05)
        assert batcher.pending == 4
        with pytest.raises(QueueFull) as caught:
            await batcher.submit(_images(5))
        assert caught.value.retry_after_s >= 1 and "limit 4" in str(caught.value)
        release.set()
        assert (await first).flatten().tolist() == [1, 2, 3, 4]
        assert batcher.pending == 0
        assert (await batcher.submit(_images(6))).flatten().tolist() == [6]
        await batcher.stop()

    asyncio.run(main())


def test_a_model_error_reaches_the_requests_of_its_batch_and_the_next_batch_runs() -> None:
    calls = 0

    def flaky(images: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return images.flatten(1)[:, :1]

    async def main() -> None:
        batcher = DynamicBatcher(flaky, 4, 0, 16)
        batcher.start()
        with pytest.raises(RuntimeError, match="model exploded"):
            await batcher.submit(_images(1))
        assert (await batcher.submit(_images(2))).flatten().tolist() == [2]
        assert batcher.pending == 0
        await batcher.stop()

    asyncio.run(main())


def test_stop_answers_what_was_submitted() -> None:
    async def main() -> list[float]:
        batcher = DynamicBatcher(_identity_model(0.02), 2, 5, 64)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(_images(i))) for i in range(6)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [float(p.result()) for p in pending]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("size", "wait", "queue"), [(0, 5, 8), (8, 5, 4), (4, -1, 8)])
def test_bad_limits_are_refused(size: int, wait: float, queue: int) -> None:
    with pytest.raises(ValueError, match="max_batch_size >= 1"):
        DynamicBatcher(_identity_model(), size, wait, queue)
