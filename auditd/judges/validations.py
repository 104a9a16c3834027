"""Stored judge validations: written by `auditd judges validate`, read by verdicts and /metrics."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from auditd.store.judge_models import JudgeValidation


def store_validation(s: Session, report: dict[str, Any]) -> JudgeValidation:
    """Insert (or replace: same judge configuration, same gold bytes) one validation; caller commits."""
    s.exec(
        delete(JudgeValidation).where(
            JudgeValidation.judge == report["judge"],
            JudgeValidation.config_digest == report["config_digest"],
            JudgeValidation.gold_digest == report["gold_digest"],
        )
    )
    ci = report.get("kappa_ci") or [None, None]
    row = JudgeValidation(
        judge=report["judge"],
        config_digest=report["config_digest"],
        gold=report["gold"],
        gold_digest=report["gold_digest"],
        gold_format=report["format"],
        task=report["task"],
        n=report["n"],
        accuracy=report["accuracy"],
        kappa=report["kappa"],
        kappa_lo=ci[0],
        kappa_hi=ci[1],
        figures=report,
    )
    s.add(row)
    return row


def latest_validation(s: Session, judge: str, config_digest: str | None = None) -> JudgeValidation | None:
    """The newest validation of a judge (of this configuration, when a digest is given)."""
    q = select(JudgeValidation).where(JudgeValidation.judge == judge)
    if config_digest is not None:
        q = q.where(JudgeValidation.config_digest == config_digest)
    return s.exec(q.order_by(col(JudgeValidation.created_at).desc(), col(JudgeValidation.id).desc())).first()
