"""`/health` reports the parts the service needs; `/metrics` exposes request counts."""

from __future__ import annotations

import dataclasses

from rag_service.storage.db import create_engine_and_sessionmaker
from rag_service.storage.factory import build_vector_store


async def test_health_ok_on_both_databases(db_client, db_settings):
    response = await db_client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    encoder = body["services"].pop("encoder")
    assert body == {
        "status": "ok",
        "services": {
            "database": True,
            "qdrant": True,
            "embeddings": f"local/{db_settings.local_embedding_model}",
            "llm": "extractive",
        },
    }
    # The local encoder's lanes: all alive, none past its deadline.
    lanes = 1 + db_settings.embedding_query_workers
    assert encoder["healthy"] is True and encoder["lanes"] == encoder["lanes_alive"] == lanes
    assert {"lanes_busy", "oldest_run_seconds", "queued_queries", "queued_documents", "restarts",
            "timeouts"} <= set(encoder)


async def test_health_is_503_when_the_local_encoder_is_down(app_factory, make_settings, runtime):
    from rag_service.providers.local_embedder import LocalEmbedder

    settings = make_settings()
    stopped = LocalEmbedder(settings)
    await stopped.aclose()  # its lanes are gone: every search would fail
    broken = dataclasses.replace(runtime, settings=settings, embedder=stopped)
    async with app_factory(settings, runtime=broken) as (_, client):
        response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["services"]["encoder"]["healthy"] is False
    assert body["services"]["database"] is True and body["services"]["qdrant"] is True


async def test_health_is_503_when_the_database_is_unreachable(app_factory, make_settings, runtime):
    settings = make_settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    broken = dataclasses.replace(runtime, settings=settings, engine=engine, sessionmaker=sessionmaker)
    try:
        async with app_factory(settings, runtime=broken) as (_, client):
            response = await client.get("/health")
    finally:
        await engine.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"]["database"] is False
    assert body["services"]["qdrant"] is True


async def test_health_is_503_when_the_qdrant_server_is_unreachable(app_factory, make_settings, runtime):
    settings = make_settings(qdrant_url="http://127.0.0.1:1")
    unreachable = build_vector_store(settings, model_name=runtime.embedder.model_name,
                                     dimension=runtime.embedder.dimension)
    broken = dataclasses.replace(runtime, settings=settings, vector_store=unreachable)
    try:
        async with app_factory(settings, runtime=broken) as (_, client):
            response = await client.get("/health")
    finally:
        await unreachable.close()
    assert response.status_code == 503
    services = response.json()["services"]
    assert services["database"] is True and services["qdrant"] is False


async def test_metrics_expose_request_counts(make_settings, app_factory):
    token = "metrics-token-for-tests"
    async with app_factory(make_settings(metrics_token=token)) as (_app, client):
        for _ in range(3):
            await client.get("/health")
        await client.get("/no/such/route")
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    text = response.text
    health_lines = [line for line in text.splitlines()
                    if line.startswith("http_requests_total{") and 'handler="/health"' in line]
    assert health_lines and sum(float(line.rsplit(" ", 1)[1]) for line in health_lines) >= 3


def metric_value(exposition: str, sample: str) -> float:
    """The value of one sample line (`name{labels} value`) of a /metrics page; 0 if absent."""
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_stored_chunks_and_embedded_texts(make_settings, app_factory, auth_headers):
    token = "metrics-token-for-tests"
    async with app_factory(make_settings(metrics_token=token)) as (_app, client):
        await _count_stored_chunks_and_embedded_texts(client, auth_headers, {"Authorization": f"Bearer {token}"})


async def _count_stored_chunks_and_embedded_texts(client, auth_headers, metrics_headers):
    chunks, embedded = "rag_ingested_chunks_total", 'rag_embedded_texts_total{provider="local"}'
    headers = auth_headers()
    before = (await client.get("/metrics", headers=metrics_headers)).text

    saved = await client.post("/save-document", headers=headers, json={
        "title": "Metrics", "content": "Counting what the service embeds. " * 200})
    assert saved.status_code == 201, saved.text
    detail = (await client.get(f"/documents/{saved.json()['document_id']}", headers=headers)).json()
    assert detail["chunk_count"] > 1
    after_save = (await client.get("/metrics", headers=metrics_headers)).text
    assert metric_value(after_save, chunks) - metric_value(before, chunks) == detail["chunk_count"]
    assert metric_value(after_save, embedded) - metric_value(before, embedded) == detail["chunk_count"]

    searched = await client.post("/search", headers=headers, json={"query": "counting", "mode": "dense"})
    assert searched.status_code == 200, searched.text
    after_search = (await client.get("/metrics", headers=metrics_headers)).text
    assert metric_value(after_search, embedded) - metric_value(after_save, embedded) == 1  # the query
    assert metric_value(after_search, chunks) == metric_value(after_save, chunks)
