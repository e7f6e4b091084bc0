"""SQLAlchemy 2.0 tables. Portable SQL only: SQLite today, PostgreSQL by URL later."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored as UTC and always come back timezone-aware, on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)  # PII: never copied into decisions
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Consent(Base):
    __tablename__ = "consents"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    granted: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IdentityLink(Base):
    """An anonymous id or a device id that is known to belong to a user."""

    __tablename__ = "identity_links"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "anonymous" | "device"
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogItem(Base):
    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    category: Mapped[str] = mapped_column(String(64), index=True)
    price: Mapped[float] = mapped_column(Float)
    stock: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: unknown
    min_age: Mapped[int] = mapped_column(Integer)
    popularity: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CatalogOffer(Base):
    __tablename__ = "offers"

    offer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EventRow(Base):
    __tablename__ = "events"
    # A person's latest events, newest first, read by an index range whatever their history's
    # length (`retrieval.sequence.person_history`; migration 0005).
    __table_args__ = (
        Index("ix_events_user_recent", "user_id", "ts", "event_id"),
        Index("ix_events_anonymous_recent", "anonymous_id", "ts", "event_id"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime]
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    anonymous_id: Mapped[str | None] = mapped_column(String(128), index=True)
    device_id: Mapped[str | None] = mapped_column(String(128))
    item_id: Mapped[str] = mapped_column(String(128), index=True)
    value: Mapped[float | None] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class DecisionRow(Base):
    """The decision log: everything needed to replay a decision, and no PII."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_user_offer_time", "user_id", "offer_id", "created_at"),
        # The offers shown to a person within the frequency caps' window (migration 0005).
        Index("ix_decisions_subject_time", "subject_key", "created_at"),
    )

    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128))
    subject_key: Mapped[str] = mapped_column(String(160))  # ix_decisions_subject_time
    channel: Mapped[str] = mapped_column(String(16))
    segment: Mapped[str] = mapped_column(String(64))
    offer_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)


class RewardRow(Base):
    __tablename__ = "rewards"

    decision_id: Mapped[str] = mapped_column(
        ForeignKey("decisions.decision_id", ondelete="CASCADE"), primary_key=True
    )
    reward: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BanditArm(Base):
    """Beta posterior of one offer in one segment, for one bandit policy."""

    __tablename__ = "bandit_arms"

    policy: Mapped[str] = mapped_column(String(32), primary_key=True)
    segment: Mapped[str] = mapped_column(String(64), primary_key=True)
    offer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    alpha: Mapped[float] = mapped_column(Float)
    beta: Mapped[float] = mapped_column(Float)
    pulls: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LinearObservation(Base):
    """One rewarded decision of a linear contextual bandit: its feature vector and its reward.

    Rows are only ever inserted, never updated, so concurrent feedback from several workers cannot
    lose an update; the posterior is the sum over the rows (`store.linear.load_state`).
    """

    __tablename__ = "linear_observations"
    __table_args__ = (
        Index("ix_linear_observations_policy_segment_id", "policy", "segment", "id"),
        # A decision is rewarded once, so it is observed at most once by each policy.
        Index("ux_linear_observations_policy_decision", "policy", "decision_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(32))
    segment: Mapped[str] = mapped_column(String(64))
    offer_id: Mapped[str | None] = mapped_column(String(128))
    decision_id: Mapped[str | None] = mapped_column(String(64))
    x: Mapped[list[float]] = mapped_column(JSON)  # the feature vector, as a list of floats
    reward: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key: only a hash of its secret is stored; scopes and an optional bound subject."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    subject_user_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEntry(Base):
    """The append-only audit log of administrative actions and erasures (nothing updates rows)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Tombstone(Base):
    """An erased identifier, as a keyed hash (the audit log's pseudonym): no load may bring back
    the person it names. Holds no identifier itself."""

    __tablename__ = "tombstones"

    ref: Mapped[str] = mapped_column(String(64), primary_key=True)  # user#… or anon#…
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)


class Maintenance(Base):
    """One-time work on the stored data, done once per database: when, and what it found
    (counts; no identifier). See migration 0007."""

    __tablename__ = "maintenance"

    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    done_at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobRow(Base):
    """A background job (a large copy request) and its progress, so that any worker can answer.

    Copy requests that ran inline are stored the same way, already done, so that their variants
    can be fetched and registered by the same id.
    """

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|done|failed
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated request; no PII
    created_by: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # claims
    segments_total: Mapped[int] = mapped_column(Integer, default=0)
    segments_done: Mapped[int] = mapped_column(Integer, default=0)
    members_total: Mapped[int] = mapped_column(Integer, default=0)
    members_scanned: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)


class CopyVariantRow(Base):
    """One generated copy variant of a campaign (a copy request or job), as it was returned."""

    __tablename__ = "copy_variants"

    campaign_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    segment: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CopyArmRow(Base):
    """A copy variant registered as a bandit arm of its segment; its Beta posterior lives in
    `bandit_arms` under the policy `copy:<campaign id>`."""

    __tablename__ = "copy_arms"

    campaign_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    variant_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    segment: Mapped[str] = mapped_column(String(64), index=True)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- wt-c: predictions as features (agents/predictions.py) ------------------------------------


class PredictionRow(Base):
    """A person's predicted propensities, as `attune train` last computed them: erased with them."""

    __tablename__ = "predictions"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    churn_risk: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_purchase: Mapped[dict[str, Any]] = mapped_column(JSON)  # category → probability
    model_version: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- wt-e: the calls teams migrate from (rank events, hidden items, batch recommendations) ----


class RankEventRow(Base):
    """A Personalizer-style rank: what was chosen per slot, with the chosen action's feature
    vector (hashed, holding no raw feature text) so that a reward can teach the model."""

    __tablename__ = "rank_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    policy: Mapped[str] = mapped_column(String(32))
    slots: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    activated: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class HiddenItem(Base):
    """A catalog item kept in the store but out of the vector index: never recommended."""

    __tablename__ = "hidden_items"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hidden_at: Mapped[datetime] = mapped_column(default=utcnow)


class BatchResultRow(Base):
    """One line of a batch recommendation job's output: one person, their items or why none."""

    __tablename__ = "batch_results"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


# -- Attribution and rewards from behaviour (issue 15) ---------------------------------------


class RewardWindow(Base):
    """A decision's attribution window: events of its person on what it showed, until
    `closes_at`, count towards its reward. Deleted once the window has closed and settled."""

    __tablename__ = "reward_windows"

    decision_id: Mapped[str] = mapped_column(
        ForeignKey("decisions.decision_id", ondelete="CASCADE"), primary_key=True
    )
    subject_key: Mapped[str] = mapped_column(String(160), index=True)
    opened_at: Mapped[datetime]
    closes_at: Mapped[datetime] = mapped_column(index=True)
    offer_id: Mapped[str | None] = mapped_column(String(128))
    item_ids: Mapped[list[str]] = mapped_column(JSON)
    default_reward: Mapped[float] = mapped_column(Float)


class Attribution(Base):
    """An event attributed to the decision that showed its item or offer, with what it earns."""

    __tablename__ = "attributions"

    event_id: Mapped[str] = mapped_column(
        ForeignKey("events.event_id", ondelete="CASCADE"), primary_key=True
    )
    decision_id: Mapped[str] = mapped_column(
        ForeignKey("decisions.decision_id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(16))
    ts: Mapped[datetime]
    value: Mapped[float | None] = mapped_column(Float)
    reward: Mapped[float] = mapped_column(Float)
    explicit: Mapped[bool]  # the event named its decision


class RewardSource(Base):
    """Where a decision's one reward came from: `feedback`, `event` (named the decision),
    `window` (the best attributed event when the window closed) or `default`; and which events."""

    __tablename__ = "reward_sources"

    decision_id: Mapped[str] = mapped_column(
        ForeignKey("decisions.decision_id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(16))
    event_ids: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- wt-a: features maintained as events arrive (store.features) ------------------------------


class PersonFeatures(Base):
    """One subject's features, kept up to date as their events are stored: what a decision reads
    instead of folding their history (`store.features`). Derived from `events`; erased with them."""

    __tablename__ = "person_features"

    subject_key: Mapped[str] = mapped_column(String(160), primary_key=True)  # user:… or anon:…
    state: Mapped[dict[str, Any]] = mapped_column(JSON)  # what a decision reads, bounded
    # Every purchase and the prices' multiset (`FeatureState.dump_history`); None only in a row
    # of an earlier version, which is rebuilt.
    history: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# -- wt-d: the catalog's version, for caches of what was read of it (store.catalog) -----------


class CatalogVersion(Base):
    """One row whose `version` every change to catalog items, their popularity or their hidden
    marks bumps in the same transaction: a process compares it to decide whether what it cached
    of the catalog is still what the store holds."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


# -- wt-b: what the item-item re-ranking reads of a history, maintained (store.sequences) -----


class PersonSequence(Base):
    """One subject's distinct items (latest event type each) and latest events, kept up to date
    as their events are stored: what a decision's re-ranking reads instead of their latest 1,000
    events (`store.sequences`). Derived from `events`; erased with them."""

    __tablename__ = "person_sequences"

    subject_key: Mapped[str] = mapped_column(String(160), primary_key=True)  # user:… or anon:…
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
