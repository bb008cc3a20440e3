"""The tables, as SQLAlchemy Core metadata: the one description of the schema that queries and
migrations share. Times are stored as timezone-aware UTC; nothing secret is ever a column
(keys are stored as SHA-256 hashes and a short display prefix).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime that is always aware and in UTC, on SQLite (which keeps no zone) as on
    PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

organisations = Table(
    "organisations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False),
    Column("name", String(100), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, ForeignKey("organisations.id"), nullable=False),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("added_at", UTCDateTime, nullable=False),
)

user_roles = Table(
    "user_roles",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("granted_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),
    Column("bootstrap", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("replaced_by", Integer, nullable=True),
    Index(None, "user_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("kind", String(100), nullable=False),
    Column("user_email", String(320), nullable=True),
    Column("team", String(100), nullable=True),
    Column("key_id", Integer, nullable=True),
    Column("client", String(50), nullable=True),
    Column("task_id", String(200), nullable=True),
    Column("mode", String(64), nullable=True),
    Column("action", String(100), nullable=True),
    Column("resource", Text, nullable=True),
    Column("decision", String(16), nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("tokens_in", BigInteger, nullable=True),
    Column("tokens_out", BigInteger, nullable=True),
    Column("cost_usd", Float, nullable=True),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("source", String(32), nullable=True),  # None: Corral's own gateways; else the reporter
    Column("event_key", String(200), nullable=True),  # a reported event is stored once per user and key
    Index(None, "time"),
    Index(None, "kind", "time"),
    Index(None, "user_email", "time"),
    Index(None, "team", "time"),
    Index(None, "task_id"),
    # Per user: one user's keys cannot shadow another's events (keys are often derivable).
    UniqueConstraint("user_email", "event_key"),
)

# Policy versions: every proposal is a numbered version; exactly one is `active`. The document
# is kept as its author wrote it (comments and all), so diffs read like the file.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("document", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # proposed, active, retired, rejected
    Column("message", Text, nullable=False, default=""),
    Column("author_email", String(320), nullable=False),
    Column("base_version", Integer, nullable=True),  # the active version it was proposed against
    Column("rollback_of", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("activated_at", UTCDateTime, nullable=True),
    Column("activated_by", String(320), nullable=True),
    Column("emergency", Boolean, nullable=False, default=False),
    Column("closed_at", UTCDateTime, nullable=True),  # retired or rejected
    Index("uq_policy_versions_one_active", "status", unique=True,
          sqlite_where=Column("status") == "active", postgresql_where=Column("status") == "active"),
)

policy_approvals = Table(
    "policy_approvals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("policy_versions.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(320), nullable=False),
    Column("verdict", String(16), nullable=False),  # approve, reject, review (after an emergency)
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "version_id", "user_id", unique=True),  # one verdict per person per version
)

overrides = Table(
    "overrides",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("target", String(320), nullable=False),
    Column("params", JSON, nullable=False, default=dict),
    Column("reason", Text, nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime, nullable=True),
    Column("removed_by", String(320), nullable=True),
    Column("expiry_recorded", Boolean, nullable=False, default=False),
    Index(None, "expires_at"),
)

# The audit ledger: append-only (triggers refuse UPDATE and DELETE). A record's leaf is its
# canonical encoding (corral/audit/records.py, docs/audit.md); `time` is kept as the exact text
# that was hashed. `audit_head` is one row, the ledger's size: appenders lock it to take
# positions, so there are no gaps and no duplicates with any number of replicas.
audit_records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", String(40), nullable=False),
    Column("actor", String(320), nullable=False),
    Column("action", String(100), nullable=False),
    Column("resource", Text, nullable=False),
    Column("decision", String(16), nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("payload_sha256", String(64), nullable=True),
    Column("leaf_hash", String(64), nullable=False),
    Index(None, "actor", "seq"),
    Index(None, "action", "seq"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
)

# The verifier key of the first start: every replica must sign with the same key.
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("verifier_key", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", String(64), nullable=False),
    Column("note", Text, nullable=False),  # the signed checkpoint, as served
    Column("created_at", UTCDateTime, nullable=False),
)

# MCP: tool calls held for a second person's decision (`approve` effects). Arguments are kept
# with secrets redacted; `status` moves once, from pending to approved, rejected or expired.
tool_approvals = Table(
    "tool_approvals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("requested_by", String(320), nullable=False),
    Column("team", String(100), nullable=True),
    Column("key_id", Integer, nullable=True),
    Column("server", String(100), nullable=False),
    Column("tool", String(200), nullable=False),
    Column("tool_class", String(16), nullable=False),
    Column("arguments", JSON, nullable=False),  # redacted
    Column("arguments_sha256", String(64), nullable=False),
    Column("rules", JSON, nullable=False),
    Column("reason", Text, nullable=False),
    Column("task_id", String(200), nullable=True),
    Column("mode", String(100), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_by", String(320), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("message", Text, nullable=False, default=""),
    Index(None, "status", "id"),
)

# MCP tool contracts: the hash of a tool's name, description, input schema and annotations when
# it was pinned. A server that later serves a different definition has the tool quarantined.
tool_pins = Table(
    "tool_pins",
    metadata,
    Column("server", String(100), primary_key=True),
    Column("tool", String(200), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("pinned_by", String(320), nullable=False),
    Column("pinned_at", UTCDateTime, nullable=False),
)

TASK_DIMENSIONS = ("team", "user_email", "client", "mode", "model", "provider")
HOUR_MEASURES = ("requests", "request_errors", "tokens_in", "tokens_out", "spend_usd", "calls", "call_errors",
                 "call_timeouts", "commands", "command_errors")

# Metric rollups: derived from events by corral.metrics.rollup, never written by anything else,
# and rebuilt from events at will. A missing dimension is '' (not NULL) so it can be part of a key.
metric_tasks = Table(
    "metric_tasks",
    metadata,
    Column("user_email", String(320), primary_key=True),
    Column("task_id", String(200), primary_key=True),
    Column("team", String(100), nullable=False, default=""),
    Column("client", String(50), nullable=False, default=""),
    Column("mode", String(64), nullable=False, default=""),  # the mode it started in
    Column("model", String(200), nullable=False, default=""),  # the model of its first request
    Column("provider", String(100), nullable=False, default=""),
    Column("parent_task_id", String(200), nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),  # its latest event of any kind
    Column("outcome", String(16), nullable=True),  # completed, failed, abandoned; NULL while open
    Column("outcome_at", UTCDateTime, nullable=True),  # the time of the event that set it
    Column("cycle_s", Float, nullable=True),  # outcome_at - started_at, for completed tasks
    Column("rank", Integer, nullable=False, default=0),  # the source whose measures count (metrics.rollup)
    Column("requests", Integer, nullable=False, default=0),
    Column("spend_usd", Float, nullable=False, default=0.0),
    Column("rollbacks", Integer, nullable=False, default=0),
    # Covering the summaries' reads (tasks ended in a window; open ones gone idle), so a month of
    # tasks is read from the index alone.
    Index("ix_metric_tasks_ended", "outcome_at", "outcome", "cycle_s", "rollbacks", *TASK_DIMENSIONS),
    Index("ix_metric_tasks_idle", "last_at", "outcome", "rollbacks", *TASK_DIMENSIONS),
    # Completed tasks in cycle-time order: a median walks half a window's tasks, without sorting.
    Index("ix_metric_tasks_cycle", "outcome", "cycle_s", "outcome_at", "team", "user_email"),
)

def _sums(name: str, grain: str) -> Table:
    """Sums of model requests and calls per `grain` (hour or day, its start) and dimension."""
    return Table(
        name,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column(grain, UTCDateTime, nullable=False),
        Column("team", String(100), nullable=False),
        Column("user_email", String(320), nullable=False),
        Column("client", String(50), nullable=False),
        Column("mode", String(64), nullable=False),
        Column("model", String(200), nullable=False),
        Column("provider", String(100), nullable=False),
        # '' on rows that hold everything; a tool's own rows (server/tool, a tool, command:<program>) hold
        # only its calls, with team and client, so a per-tool breakdown does not multiply the rest
        Column("tool", String(200), nullable=False),
        Column("requests", BigInteger, nullable=False, default=0),
        Column("request_errors", BigInteger, nullable=False, default=0),
        Column("tokens_in", BigInteger, nullable=False, default=0),
        Column("tokens_out", BigInteger, nullable=False, default=0),
        Column("spend_usd", Float, nullable=False, default=0.0),
        Column("calls", BigInteger, nullable=False, default=0),  # tool and command calls whose result is known
        Column("call_errors", BigInteger, nullable=False, default=0),  # error or timeout
        Column("call_timeouts", BigInteger, nullable=False, default=0),
        Column("commands", BigInteger, nullable=False, default=0),
        Column("command_errors", BigInteger, nullable=False, default=0),
        Index(f"ux_{name}_key", grain, *TASK_DIMENSIONS, "tool", unique=True),
    )


metric_hours = _sums("metric_hours", "hour")
# The same sums per day: a month's summary reads ~30 days of these and at most two days of hours.
metric_days = _sums("metric_days", "day")

metric_progress = Table(
    "metric_progress",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("event_id", BigInteger, nullable=False),  # every event up to this id is rolled up
)
