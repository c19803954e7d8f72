"""EncoderWorker + LocalEmbedder scheduling, on the real MiniLM (torch for the gated worker,
the default ONNX backend through LocalEmbedder).

Ordering, never timing: a gate (a threading.Event the first encoder call waits on) keeps
the worker busy while the test queues work behind it, so what shares a call and what runs
first is decided by the worker alone.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY

from rag_service.config import Settings
from rag_service.errors import ProviderUnavailable
from rag_service.providers.encoder_worker import (
    EncodeInterrupted,
    EncoderClosed,
    EncoderFailed,
    EncoderTimeout,
    EncoderWorker,
    RunControl,
)
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.providers.minilm_backends import TorchMiniLM
from rag_service.providers.tokenizer import minilm_model_dir

QUERIES = [f"how do I configure option {word}?" for word in "alpha beta gamma delta epsilon zeta eta theta".split()]


@pytest.fixture(scope="module")
def torch_minilm() -> TorchMiniLM:
    return TorchMiniLM(minilm_model_dir(), threads=1)


class GatedEncoder:
    """The real encoder, recording each call; the first call waits until `release()`."""

    def __init__(self, encode) -> None:  # noqa: ANN001
        self._encode = encode
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, texts: list[str], priority: str) -> list[list[float]]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.started.set()
            self._gate.wait(timeout=60)
        return self._encode(texts, priority)


async def wait_for(predicate) -> None:  # noqa: ANN001
    while not predicate():
        await asyncio.sleep(0.001)


async def test_concurrent_queries_share_one_encoder_call_and_match_one_by_one(torch_minilm):
    encoder = GatedEncoder(torch_minilm.encode)
    worker = EncoderWorker(encoder, max_query_batch=32, query_wait_seconds=0)
    try:
        busy = asyncio.create_task(worker.encode(["an ingestion sub-batch in progress"], "document"))
        await asyncio.to_thread(encoder.started.wait, 60)
        queries = [asyncio.create_task(worker.encode([q], "query")) for q in QUERIES]
        await wait_for(lambda: worker.queued("query") == len(QUERIES))
        encoder.release()
        results = await asyncio.gather(*queries)
        await busy
    finally:
        worker.close()
    assert len(encoder.calls) == 2 < 1 + len(QUERIES)
    assert encoder.calls[1] == QUERIES
    for [batched], query in zip(results, QUERIES, strict=True):
        [alone] = torch_minilm.encode([query])
        np.testing.assert_allclose(batched, alone, atol=1e-5)


async def test_a_query_batch_is_capped_at_max_query_batch(torch_minilm):
    encoder = GatedEncoder(torch_minilm.encode)
    worker = EncoderWorker(encoder, max_query_batch=3, query_wait_seconds=0)
    try:
        busy = asyncio.create_task(worker.encode(["busy"], "document"))
        await asyncio.to_thread(encoder.started.wait, 60)
        queries = [asyncio.create_task(worker.encode([q], "query")) for q in QUERIES]
        await wait_for(lambda: worker.queued("query") == len(QUERIES))
        encoder.release()
        await asyncio.gather(busy, *queries)
    finally:
        worker.close()
    assert [len(call) for call in encoder.calls[1:]] == [3, 3, 2]
    assert [text for call in encoder.calls[1:] for text in call] == QUERIES


async def test_a_query_overtakes_the_rest_of_an_ingestion(torch_minilm):
    encoder = GatedEncoder(torch_minilm.encode)
    worker = EncoderWorker(encoder, query_wait_seconds=0)
    chunks = [f"chunk {i} of a long document about storage engines" for i in range(4)]
    try:
        # The ingestion queues four sub-batches; the worker is inside the first one.
        ingestion = [asyncio.create_task(worker.encode([c], "document")) for c in chunks]
        await asyncio.to_thread(encoder.started.wait, 60)
        query = asyncio.create_task(worker.encode(["where is the storage engine configured?"], "query"))
        await wait_for(lambda: worker.queued("query") == 1)
        encoder.release()
        await query
        assert not ingestion[-1].done()
        await asyncio.gather(*ingestion)
    finally:
        worker.close()
    # The query ran right after the sub-batch in progress, before the three queued ones.
    assert encoder.calls == [[chunks[0]], ["where is the storage engine configured?"], *([c] for c in chunks[1:])]


async def test_with_a_query_lane_a_query_does_not_wait_for_the_ingestion_batch_in_progress(torch_minilm):
    encoder = GatedEncoder(torch_minilm.encode)
    threads: list[tuple[str, str]] = []

    def recording(texts: list[str], priority: str) -> list[list[float]]:
        threads.append((priority, threading.current_thread().name))
        return encoder(texts, priority)

    worker = EncoderWorker(recording, query_wait_seconds=0, query_lanes=1, name="enc")
    chunks = [f"chunk {i} of a long document about storage engines" for i in range(3)]
    try:
        ingestion = [asyncio.create_task(worker.encode([c], "document")) for c in chunks]
        await asyncio.to_thread(encoder.started.wait, 60)
        # The first lane is held inside the first sub-batch; the query lane answers anyway.
        [vector] = await worker.encode(["where is the storage engine configured?"], "query")
        assert not any(task.done() for task in ingestion)
        assert worker.queued("document") == 2  # the query lane never takes ingestion work
        encoder.release()
        await asyncio.gather(*ingestion)
    finally:
        worker.close()
    np.testing.assert_allclose(vector, torch_minilm.encode(["where is the storage engine configured?"])[0], atol=1e-5)
    assert ("query", "enc-query-1") in threads
    assert {name for priority, name in threads if priority == "document"} == {"enc"}


async def test_encoder_errors_reach_every_caller_of_the_batch():
    def broken(texts: list[str], priority: str) -> list[list[float]]:
        raise RuntimeError("weights unreadable")

    worker = EncoderWorker(broken, query_wait_seconds=0.05)
    try:
        results = await asyncio.gather(*(worker.encode([q], "query") for q in QUERIES[:3]), return_exceptions=True)
    finally:
        worker.close()
    assert [str(r) for r in results] == ["weights unreadable"] * 3


async def test_close_fails_queued_jobs_and_refuses_new_ones(torch_minilm):
    encoder = GatedEncoder(torch_minilm.encode)
    worker = EncoderWorker(encoder, query_wait_seconds=0)
    running = asyncio.create_task(worker.encode(["running"], "document"))
    await asyncio.to_thread(encoder.started.wait, 60)
    queued = asyncio.create_task(worker.encode(["queued"], "document"))
    await wait_for(lambda: worker.queued("document") == 1)
    worker.close()
    encoder.release()
    with pytest.raises(EncoderClosed):
        await queued
    assert len(await running) == 1  # the batch in progress still completes
    with pytest.raises(EncoderClosed):
        await worker.encode(["late"], "query")


def query_calls() -> float:
    return REGISTRY.get_sample_value("rag_local_encoder_batch_texts_count", {"priority": "query"}) or 0.0


async def test_local_embedder_micro_batches_concurrent_searches(tmp_path):
    # A long wait window, so that all searches started together land in one or two calls
    # even on a loaded machine (the window only ends early when the batch is full).
    embedder = LocalEmbedder(Settings(data_dir=tmp_path, embedding_query_batch_wait_ms=100))
    try:
        before = query_calls()
        results = await asyncio.gather(*(embedder.embed([q], task="query") for q in QUERIES))
        calls = query_calls() - before
        one_by_one = [await embedder.embed([q], task="query") for q in QUERIES]
    finally:
        await embedder.aclose()
    assert 1 <= calls < len(QUERIES)
    for [batched], [alone] in zip(results, one_by_one, strict=True):
        np.testing.assert_allclose(batched, alone, atol=1e-5)


async def test_queries_queued_together_run_on_both_idle_lanes_side_by_side(torch_minilm):
    """Parallel before batched: with a lane idle, a lane takes one query and leaves the next
    to it. Each call waits until both are running, which only two lanes at once can do."""
    both_running = threading.Barrier(2, timeout=30)
    threads: list[str] = []

    def meeting(texts: list[str], priority: str) -> list[list[float]]:
        threads.append(threading.current_thread().name)
        both_running.wait()  # BrokenBarrierError (the test fails) if the queries shared a call
        return torch_minilm.encode(texts, priority)

    worker = EncoderWorker(meeting, query_wait_seconds=0.05, query_lanes=1, name="enc")
    try:
        first, second = await asyncio.gather(worker.encode(QUERIES[:2], "query"), worker.encode(QUERIES[2:4], "query"))
    finally:
        worker.close()
    assert sorted(threads) == ["enc", "enc-query-1"]
    np.testing.assert_allclose([*first, *second], torch_minilm.encode(QUERIES[:4]), atol=1e-5)


async def test_local_embedder_splits_a_long_query_call_between_the_lanes(tmp_path):
    """An extractive answer embeds its question and 8 sentences at query priority: two
    parts, one per lane, with the same vectors as one call."""
    texts = [*QUERIES, "the ninth text"]
    embedder = LocalEmbedder(Settings(data_dir=tmp_path, embedding_query_workers=1))
    try:
        before = query_calls()
        vectors = await embedder.embed(texts, task="query")
        calls = query_calls() - before
        alone = [(await embedder.embed([text], task="query"))[0] for text in texts]
    finally:
        await embedder.aclose()
    assert calls == 2
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


async def test_local_embedder_after_close_is_unavailable(tmp_path):
    embedder = LocalEmbedder(Settings(data_dir=tmp_path))
    await embedder.aclose()
    with pytest.raises(ProviderUnavailable):
        await embedder.embed(["anything"], task="query")


# --- lanes borrowing ingestion, preemption, fairness, supervision ---------------------------

@pytest.fixture(scope="module")
def onnx_minilm(tmp_path_factory):  # noqa: ANN001, ANN201
    from rag_service.providers.local_embedder import build_backend

    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("onnx"), embedding_backend="onnx")
    return build_backend(settings, minilm_model_dir())


class InterruptibleProbe:
    """Wraps the real ONNX encoder: records (priority, thread, texts) per call; document calls
    whose first text is in `hold` wait until released; with `preemptible`, a held call also
    ends when the worker interrupts it (raising EncodeInterrupted, as ONNX Runtime's
    terminate flag does), once."""

    def __init__(self, backend) -> None:  # noqa: ANN001
        self.backend = backend
        self.calls: list[tuple[str, str, list[str]]] = []
        self.holding: dict[str, threading.Event] = {}
        self.released: dict[str, threading.Event] = {}
        self.interrupted: list[str] = []

    def hold(self, text: str) -> None:
        self.holding[text] = threading.Event()
        self.released[text] = threading.Event()

    def __call__(self, texts: list[str], priority: str, control=None) -> list[list[float]]:  # noqa: ANN001
        self.calls.append((priority, threading.current_thread().name, list(texts)))
        first = texts[0]
        if first in self.holding and first not in self.interrupted:
            self.holding[first].set()
            if control is not None:
                control.on_interrupt(self.released[first].set)
            self.released[first].wait(timeout=60)
            if control is not None and control.interrupted:
                self.interrupted.append(first)
                raise EncodeInterrupted
        return self.backend.encode(texts, priority, control=control)


async def test_an_idle_query_lane_borrows_ingestion_and_a_query_interrupts_it(onnx_minilm):
    probe = InterruptibleProbe(onnx_minilm)
    probe.hold("chunk 0")
    probe.hold("chunk 1")
    worker = EncoderWorker(probe, query_wait_seconds=0, query_lanes=1, interruptible=True, name="enc")
    chunks = [f"chunk {i}" for i in range(4)]
    try:
        ingestion = [asyncio.create_task(worker.encode([c], "document", account="a")) for c in chunks]
        # Both lanes are inside an ingestion sub-batch: the query lane borrowed one.
        await asyncio.to_thread(probe.holding["chunk 0"].wait, 60)
        await asyncio.to_thread(probe.holding["chunk 1"].wait, 60)
        assert {name for _, name, _ in probe.calls} == {"enc", "enc-query-1"}
        # No lane is idle: the query interrupts the borrowed sub-batch and runs at once,
        # while the first lane is still held inside its own.
        [vector] = await worker.encode(["where is the storage engine configured?"], "query")
        assert not ingestion[0].done() and not ingestion[1].done()
        for event in probe.released.values():
            event.set()
        results = await asyncio.gather(*ingestion)
    finally:
        worker.close()
    assert worker.stats()["restarts"] == 0
    [interrupted] = probe.interrupted
    first_lane = {}
    for priority, name, texts in probe.calls:
        first_lane.setdefault(texts[0], name)
    assert first_lane[interrupted] == "enc-query-1"  # the first lane is never interrupted
    np.testing.assert_allclose(vector, onnx_minilm.encode(["where is the storage engine configured?"])[0], atol=1e-5)
    # The interrupted sub-batch was run again: every chunk got its own vector.
    for [got], chunk in zip(results, chunks, strict=True):
        np.testing.assert_allclose(got, onnx_minilm.encode([chunk])[0], atol=1e-5)
    documents = [texts[0] for priority, _, texts in probe.calls if priority == "document"]
    assert documents.count(interrupted) == 2 and sorted(set(documents)) == chunks


async def test_a_query_lane_borrows_ingestion_only_after_a_quiet_spell_without_searches(onnx_minilm):
    """While searches keep arriving a borrowed sub-batch would be interrupted before it ends:
    the query lane leaves ingestion to the first lane until no query came for a while."""
    now = [1000.0]  # the worker's clock: moved by the test only
    probe = InterruptibleProbe(onnx_minilm)
    for text in ("busy 0", "quiet 0", "quiet 1"):
        probe.hold(text)
    worker = EncoderWorker(probe, query_wait_seconds=0, query_lanes=1, interruptible=True,
                           borrow_after_quiet_seconds=0.5, clock=lambda: now[0], name="enc")
    try:
        await worker.encode(["a search"], "query")
        busy = [asyncio.create_task(worker.encode([f"busy {i}"], "document", account="a")) for i in range(3)]
        await asyncio.to_thread(probe.holding["busy 0"].wait, 60)
        now[0] += 0.4  # still within the quiet spell: the idle query lane does not borrow
        probe.released["busy 0"].set()
        await asyncio.gather(*busy)
        assert {name for priority, name, _ in probe.calls if priority == "document"} == {"enc"}

        now[0] += 0.1  # half a second without a search: the query lane borrows again
        quiet = [asyncio.create_task(worker.encode([f"quiet {i}"], "document", account="a")) for i in range(2)]
        await asyncio.to_thread(probe.holding["quiet 0"].wait, 60)
        await asyncio.to_thread(probe.holding["quiet 1"].wait, 60)  # both lanes inside a sub-batch
        for text in ("quiet 0", "quiet 1"):
            probe.released[text].set()
        await asyncio.gather(*quiet)
    finally:
        worker.close()
    lanes = {texts[0]: name for priority, name, texts in probe.calls if priority == "document"}
    assert {lanes["quiet 0"], lanes["quiet 1"]} == {"enc", "enc-query-1"}


async def test_ingestion_sub_batches_of_two_accounts_share_the_lane_fairly(onnx_minilm):
    probe = InterruptibleProbe(onnx_minilm)
    probe.hold("flood 0")
    worker = EncoderWorker(probe, query_wait_seconds=0, query_lanes=0, interruptible=True)
    try:
        flood = [asyncio.create_task(worker.encode([f"flood {i}"], "document", account="flooder")) for i in range(6)]
        await asyncio.to_thread(probe.holding["flood 0"].wait, 60)
        small = asyncio.create_task(worker.encode(["small 0", "small 1"], "document", account="other"))
        await wait_for(lambda: worker.queued("document") == 6)
        probe.released["flood 0"].set()
        await small
        assert sum(task.done() for task in flood) <= 2  # the flood's sub-batch in progress, maybe one more
        await asyncio.gather(*flood)
    finally:
        worker.close()
    order = [texts[0] for _, _, texts in probe.calls]
    # The other account's document ran right after the sub-batch in progress (it had been
    # served nothing), not after the five sub-batches queued before it.
    assert order[:2] == ["flood 0", "small 0"]


async def test_a_onnx_run_interrupted_before_it_starts_raises_encode_interrupted(onnx_minilm):
    control = RunControl()
    control.interrupt()
    with pytest.raises(EncodeInterrupted):
        onnx_minilm.encode(["a long enough text " * 20], "document", control=control)
    assert len(onnx_minilm.encode(["still works"], "document", control=RunControl())) == 1


class LaneKiller(BaseException):
    """Escapes `except Exception`: what used to kill a lane silently."""


async def test_a_dead_lane_fails_its_jobs_with_503_and_is_restarted(torch_minilm):
    calls = []

    def dies_once(texts: list[str], priority: str) -> list[list[float]]:
        calls.append(list(texts))
        if len(calls) == 1:
            raise LaneKiller
        return torch_minilm.encode(texts, priority)

    worker = EncoderWorker(dies_once, query_wait_seconds=0, run_timeout_seconds=30)
    try:
        with pytest.raises(EncoderFailed):
            await worker.encode(["first"], "document")
        await wait_for(lambda: worker.stats()["restarts"] == 1 and worker.stats()["lanes_alive"] == 1)
        assert len(await worker.encode(["after the restart"], "query")) == 1
        assert worker.stats()["healthy"] is True
    finally:
        worker.close()


async def test_a_call_past_its_deadline_fails_and_its_lane_is_replaced(torch_minilm):
    stuck = threading.Event()

    def hangs_first(texts: list[str], priority: str) -> list[list[float]]:
        if texts == ["hangs"]:
            stuck.wait(timeout=60)
        return torch_minilm.encode(texts, priority)

    # Long enough for a real call on a busy shared machine, short enough for a test.
    worker = EncoderWorker(hangs_first, query_wait_seconds=0, run_timeout_seconds=3)
    try:
        with pytest.raises(EncoderTimeout):
            await worker.encode(["hangs"], "document")
        stats = worker.stats()
        assert stats["timeouts"] == 1 and stats["restarts"] == 1
        # A new thread serves the lane while the stuck call is still inside the encoder.
        assert len(await worker.encode(["served by the new thread"], "query")) == 1
    finally:
        stuck.set()
        worker.close()


async def test_local_embedder_deadline_is_a_503_and_health_reports_the_encoder(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, embedding_backend="onnx")
    embedder = LocalEmbedder(settings)
    try:
        stats = embedder.encoder_stats()
        assert stats["lanes"] == 2 and stats["lanes_alive"] == 2 and stats["healthy"] is True
        vectors = await embedder.embed([f"chunk number {i}" for i in range(40)], "document")
        assert len(vectors) == 40
    finally:
        await embedder.aclose()
    with pytest.raises(ProviderUnavailable):
        await embedder.embed(["after close"], "query")
    assert embedder.encoder_stats()["healthy"] is False
