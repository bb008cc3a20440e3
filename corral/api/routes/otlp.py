"""OTLP/HTTP receiver: `/v1/logs` and `/v1/metrics` (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["otlp"])
