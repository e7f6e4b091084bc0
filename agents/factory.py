"""The one factory: every service Attune runs (`agents.services.Services`), built from
`Settings`. API, CLI, evals and tests all build through here, so what is tested is what is
served."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from agents.chat.graph import build_chat_graph
from agents.chat.memory import Chat, Checkpoints, PostgresCheckpoints
from agents.collector import settle as settle  # where start-up code has always found it
from agents.decide.graph import build_decide_graph
from agents.llm.breaker import CircuitBreaker
from agents.llm.client import LLMClient
from agents.llm.retry import RetryPolicy
from agents.metrics import Metrics
from agents.services import Services, collab_folder, load_itemitem
from agents.settings import Settings
from agents.tracing import build_tracer
from agents.writing.llm_writer import OpenAIWriter
from agents.writing.writer import OfflineWriter, Writer
from policies.engine import PolicyEngine
from policies.pii import PIIGuard
from policies.rules import load_policy
from retrieval.collab import CollabModel
from retrieval.edge import EdgeIndex
from retrieval.embedder import CachedEmbedder, limit_torch_threads, load_embedder
from retrieval.index import VectorIndex
from retrieval.server import QdrantServerIndex
from store.db import Database
from tools.bandit import ThompsonSampling
from tools.context import ToolDeps
from tools.contextual import ContextualBandits
from tools.offer_book import OfferBook

log = logging.getLogger("attune")


def build_index(settings: Settings, dim: int) -> VectorIndex:
    collab = settings.collab_dim
    if settings.vector_backend == "qdrant":
        if settings.qdrant_url:
            return QdrantServerIndex(
                url=settings.qdrant_url,
                collection=settings.collection,
                dim=dim,
                collab_dim=collab,
                shards=settings.qdrant_shards,
                replication_factor=settings.qdrant_replication_factor,
            )
        path = settings.qdrant_path or settings.home / "qdrant-local"
        return QdrantServerIndex(
            path=str(path), collection=settings.collection, dim=dim, collab_dim=collab
        )
    return EdgeIndex(settings.home / "qdrant-edge", dim=dim, collab_dim=collab)


def build_llm(settings: Settings, metrics: Metrics | None = None) -> LLMClient | None:
    """The LLM client with its retry policy and circuit breaker; None without an LLM configured."""
    if not settings.llm_configured:
        return None
    assert settings.openai_base_url and settings.openai_model  # checked by Settings
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return LLMClient(
        base_url=settings.openai_base_url,
        api_key=key,
        model=settings.openai_model,
        timeout_s=settings.openai_timeout_s,
        retry=RetryPolicy(max_retries=settings.openai_max_retries),
        breaker=CircuitBreaker(
            failures=settings.openai_breaker_failures,
            cooldown_s=settings.openai_breaker_cooldown_s,
        ),
        metrics=metrics,
    )


def build_writer(settings: Settings, llm: LLMClient | None = None) -> Writer:
    llm = llm or build_llm(settings)
    return OpenAIWriter(llm) if llm is not None else OfflineWriter()


def export_embedder(settings: Settings) -> Path | None:
    """The settings' embedding model exported to ONNX for their backend (`attune export-onnx`,
    a no-op while the export is intact); None when the backend is torch."""
    from retrieval.onnx_embedder import export_model

    if settings.embedding_backend == "torch":
        return None
    return export_model(
        settings.embedding_model,
        settings.resolved_embedding_export_dir,
        settings.embedding_backend,
        settings.embedding_sha256,
    )


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    limit_torch_threads(settings.torch_threads)
    # numpy's BLAS too, process-wide: the PII guard's NER multiplies with it (policies.pii.ner).
    threadpool_limits(settings.torch_threads, user_api="blas")
    embedder = CachedEmbedder(
        load_embedder(
            settings.embedding_model,
            fallback_dim=settings.embedding_dim,
            allow_download=settings.model_downloads,
            sha256=settings.embedding_sha256,
            backend=settings.embedding_backend,
            export_root=settings.resolved_embedding_export_dir,
            threads=settings.torch_threads,
        ),
        size=settings.query_cache_size,
    )
    index = build_index(settings, embedder.dim)
    rules = load_policy(settings.policy_path)
    policy = PolicyEngine(rules)
    pii = PIIGuard(
        spacy_model=settings.spacy_model,
        redact=rules.pii.redact,
        phone_regions=rules.pii.phone_regions,
    )
    bandit = ThompsonSampling(np.random.default_rng(settings.seed), draws=settings.propensity_draws)
    degraded = [
        reason for reason in (embedder.degraded, pii.degraded and f"pii: {pii.degraded}") if reason
    ]
    for reason in degraded:
        log.warning("degraded: %s", reason)
    metrics = Metrics()
    llm = build_llm(settings, metrics)
    checkpoints: Checkpoints | PostgresCheckpoints = (
        PostgresCheckpoints(settings.resolved_database_url)
        if settings.resolved_database_url.startswith("postgresql")
        else Checkpoints(settings.home / "checkpoints.db")
    )
    chat = Chat(checkpoints, build_chat_graph(checkpoints.saver))
    services = Services(
        settings=settings,
        db=db,
        embedder=embedder,
        index=index,
        policy=policy,
        pii=pii,
        writer=build_writer(settings, llm),
        offline_writer=OfflineWriter(),
        tools=ToolDeps(
            db=db,
            embedder=embedder,
            index=index,
            policy=policy,
            bandit=bandit,
            offers=OfferBook(db),
            collab=CollabModel.load(collab_folder(settings)),
            itemitem=load_itemitem(settings),
            contextual=ContextualBandits(np.random.default_rng(settings.seed)),
            shadow_policy=PolicyEngine(load_policy(settings.shadow_policy_path))
            if settings.shadow_policy_path
            else None,
            challenger_policy=PolicyEngine(load_policy(rules.experiment.challenger))
            if rules.experiment is not None and rules.experiment.challenger is not None
            else None,
        ),
        graph=build_decide_graph(),
        degraded=degraded,
        llm=llm,
        chat=chat,
        metrics=metrics,
        tracer=build_tracer(settings),
    )
    services.erasers.append(chat.erase)
    return services
