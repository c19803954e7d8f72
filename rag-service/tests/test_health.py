"""`/health` reports the parts the service needs; `/metrics` exposes request counts."""

from __future__ import annotations

import dataclasses

from rag_service.storage.db import create_engine_and_sessionmaker
from rag_service.storage.factory import build_vector_store


async def test_health_ok_on_both_databases(db_client, db_settings):
    response = await db_client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "services": {
            "database": True,
            "qdrant": True,
            "embeddings": f"local/{db_settings.local_embedding_model}",
            "llm": "extractive",
        },
    }


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
    assert "rag_ingested_chunks_total" in text
    assert "rag_embedded_texts_total" in text or "# HELP rag_embedded_texts" in text
