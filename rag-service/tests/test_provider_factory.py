"""build_embedder / build_generator follow the settings (auto, forced, default)."""

from __future__ import annotations

import pytest

from rag_service.config import Settings
from rag_service.providers.extractive import ExtractiveGenerator
from rag_service.providers.factory import build_embedder, build_generator
from rag_service.providers.gemini_embedder import GeminiEmbedder
from rag_service.providers.gemini_generator import GeminiGenerator
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.providers.openai_generator import OpenAIGenerator


def settings(tmp_path, **values) -> Settings:
    # Explicit None overrides any GEMINI_API_KEY in the environment of the test run.
    values.setdefault("gemini_api_key", None)
    return Settings(data_dir=tmp_path, **values)


def test_defaults_are_local_embedder_and_extractive_answers(tmp_path):
    embedder = build_embedder(settings(tmp_path))
    assert isinstance(embedder, LocalEmbedder)
    assert (embedder.model_name, embedder.dimension) == ("all-MiniLM-L6-v2", 384)
    generator = build_generator(settings(tmp_path), embedder)
    # The extractive answers compare meanings with the service's own embedder: no second model.
    assert isinstance(generator, ExtractiveGenerator) and generator.embedder is embedder


def test_a_gemini_key_switches_both_to_gemini(tmp_path):
    configured = settings(tmp_path, gemini_api_key="key", gemini_embedding_dimension=1536)
    embedder = build_embedder(configured)
    assert isinstance(embedder, GeminiEmbedder)
    assert (embedder.model_name, embedder.dimension) == ("gemini-embedding-001", 1536)
    generator = build_generator(configured, embedder)
    assert isinstance(generator, GeminiGenerator) and generator.name == "gemini:gemini-2.5-flash"


def test_forced_choices_win_over_auto(tmp_path):
    configured = settings(tmp_path, gemini_api_key="key", embedding_provider="local", llm_provider="openai",
                          openai_model="qwen2.5")
    embedder = build_embedder(configured)
    assert isinstance(embedder, LocalEmbedder)
    generator = build_generator(configured, embedder)
    assert isinstance(generator, OpenAIGenerator) and generator.name == "openai:qwen2.5"
    assert isinstance(build_generator(settings(tmp_path, gemini_api_key="key", llm_provider="extractive"), embedder),
                      ExtractiveGenerator)


def test_forcing_gemini_without_a_key_fails_at_start_up(tmp_path):
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        build_embedder(settings(tmp_path, embedding_provider="gemini"))
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        build_generator(settings(tmp_path, llm_provider="gemini"), build_embedder(settings(tmp_path)))
