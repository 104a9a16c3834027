"""Per-category aggregates of an audit, written once per probe run and read by reports,
verdicts and the metrics collector."""

from __future__ import annotations

from sqlalchemy import case, delete, func
from sqlmodel import Session, col, select

from auditd.store.models import AuditRun, CategoryResult, JudgeErrorCount, JudgeScoreRow, Sample


def aggregate(s: Session, audit_id: int, probe_id: str) -> None:
    s.exec(
        delete(CategoryResult).where(col(CategoryResult.audit_id) == audit_id, col(CategoryResult.probe_id) == probe_id)
    )
    s.exec(
        delete(JudgeErrorCount).where(
            col(JudgeErrorCount.audit_id) == audit_id, col(JudgeErrorCount.probe_id) == probe_id
        )
    )
    one = lambda cond: func.sum(case((cond, 1), else_=0))  # noqa: E731
    rows = s.exec(
        select(
            col(Sample.category),
            func.count(),
            one(col(Sample.harmful).is_not(None)),
            one(col(Sample.harmful).is_(True)),  # type: ignore[call-overload]  # sqlmodel types select() for <= 4 columns
            one(col(Sample.refused).is_(True)),
            one(col(Sample.judge_error).is_(True)),
            one(col(Sample.degenerate).is_(True)),
        )
        .where(Sample.audit_id == audit_id, Sample.probe_id == probe_id)
        .group_by(Sample.category)
    ).all()
    for category, n, judged, harmful, refused, errors, degenerate in rows:
        s.add(
            CategoryResult(
                audit_id=audit_id,
                probe_id=probe_id,
                category=category,
                n=n,
                n_judged=judged or 0,
                n_harmful=harmful or 0,
                n_refused=refused or 0,
                n_judge_errors=errors or 0,
                n_degenerate=degenerate or 0,
                harmful_rate=(harmful / judged) if judged else None,
                refusal_rate=(refused / n) if n else None,
                degenerate_rate=((degenerate or 0) / n) if n else None,
            )
        )
    errs = s.exec(
        select(col(JudgeScoreRow.judge), func.count())
        .join(Sample, col(Sample.id) == col(JudgeScoreRow.sample_id))
        .where(
            col(Sample.audit_id) == audit_id, col(Sample.probe_id) == probe_id, col(JudgeScoreRow.error).is_not(None)
        )
        .group_by(JudgeScoreRow.judge)
    ).all()
    for judge, count in errs:
        s.add(JudgeErrorCount(audit_id=audit_id, probe_id=probe_id, judge=judge, errors=count))


def latest_results(s: Session, audit_id: int | None, checkpoint_id: str | None = None) -> list[CategoryResult]:
    """The category results of an audit, or of the latest finished audit of a checkpoint."""
    if audit_id is None:
        audit_id = s.exec(
            select(AuditRun.id)
            .where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.status == "done")
            .order_by(col(AuditRun.finished_at).desc())
        ).first()
        if audit_id is None:
            return []
    return list(
        s.exec(
            select(CategoryResult)
            .where(CategoryResult.audit_id == audit_id)
            .order_by(CategoryResult.probe_id, CategoryResult.category)
        )
    )
