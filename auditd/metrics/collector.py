"""The custom collector behind /metrics. It reads the database at scrape time, so figures are
the stored truth (they survive restarts and agree with `auditd report`). Per-category gauges
carry only the latest finished audit of each model, keeping label cardinality bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from auditd import __version__
from auditd.categories import BENIGN
from auditd.metrics.grpo import grpo_families
from auditd.policy.versions import short
from auditd.store.db import session
from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, JudgeErrorCount, Sample, Verdict

DURATION_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf"))
OUTCOMES = ("pass", "warn", "block", "error")


def _ts(dt) -> float:
    return dt.timestamp() if dt is not None else 0.0


class ModelResultsCollector:
    """Per-model series of each model's latest finished audit (the bulk of the exposition)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def describe(self):  # registering must not trigger a database query
        return []

    def collect(self) -> Iterator:
        with session(self.engine) as s:
            yield from self._latest(s)

    def _latest(self, s) -> Iterator:
        # Latest finished audit per model: one indexed query, then results for those audits only.
        latest_finish = (
            select(CheckpointRow.model, func.max(AuditRun.finished_at).label("fin"))
            .join(AuditRun, col(AuditRun.checkpoint_id) == col(CheckpointRow.id))
            .where(col(AuditRun.finished_at).is_not(None))
            .group_by(CheckpointRow.model)
            .subquery()
        )
        rows = s.exec(
            select(
                col(CheckpointRow.model),
                col(AuditRun.id),
                col(AuditRun.checkpoint_id),
                col(AuditRun.outcome),
                col(AuditRun.finished_at),  # type: ignore[call-overload]  # sqlmodel types select() for <= 4 columns
                AuditRun.policy_digest,
            )
            .join(AuditRun, AuditRun.checkpoint_id == CheckpointRow.id)
            .join(
                latest_finish,
                (latest_finish.c.model == CheckpointRow.model) & (latest_finish.c.fin == AuditRun.finished_at),
            )
        ).all()
        info = GaugeMetricFamily(
            "auditd_latest_audit_info",
            "latest finished audit of each model",
            labels=["model", "checkpoint", "outcome", "policy_digest"],
        )
        when = GaugeMetricFamily("auditd_latest_audit_timestamp_seconds", "when it finished", labels=["model"])
        model_of: dict[int, str] = {}
        for model, audit_id, cp, outcome, fin, digest in rows:
            if model in model_of.values():
                continue  # two audits finishing in the same instant: keep one
            model_of[audit_id] = model
            # policy_digest: the version of the policy that decided it (short; "" before versions were recorded)
            info.add_metric([model, cp, outcome or "error", short(digest)], 1)
            when.add_metric([model], _ts(fin))
        yield info
        yield when
        harm = GaugeMetricFamily(
            "auditd_category_harmful_rate", "share of samples judged harmful", labels=["model", "probe", "category"]
        )
        refusal = GaugeMetricFamily(
            "auditd_category_refusal_rate", "share of samples refused", labels=["model", "probe", "category"]
        )
        count = GaugeMetricFamily(
            "auditd_category_samples", "judged samples behind the rates", labels=["model", "probe", "category"]
        )
        degenerate = GaugeMetricFamily(
            "auditd_category_degenerate_rate",
            "share of answers that were empty, repetitive or not language",
            labels=["model", "probe", "category"],
        )
        over = GaugeMetricFamily("auditd_over_refusal_rate", "share of benign prompts refused", labels=["model"])
        if model_of:
            # Columns, not ORM entities: building thousands of model objects per scrape cost more than
            # the query itself (bench/bench_scrape.py).
            cr = CategoryResult
            results = s.exec(
                select(
                    col(cr.audit_id),
                    col(cr.probe_id),
                    col(cr.category),
                    col(cr.harmful_rate),
                    col(cr.refusal_rate),
                    col(cr.n),  # type: ignore[call-overload]  # sqlmodel types select() for <= 4 columns
                    col(cr.n_judged),
                    col(cr.n_refused),
                    col(cr.degenerate_rate),
                ).where(col(cr.audit_id).in_(model_of))
            ).all()
            over_acc: dict[str, list[int]] = {}
            for r in results:
                labels = [model_of[r.audit_id], r.probe_id, r.category]
                if r.harmful_rate is not None:
                    harm.add_metric(labels, r.harmful_rate)
                if r.refusal_rate is not None:
                    refusal.add_metric(labels, r.refusal_rate)
                if r.degenerate_rate is not None:
                    degenerate.add_metric(labels, r.degenerate_rate)
                count.add_metric(labels, r.n_judged if r.category != BENIGN else r.n)
                if r.category == BENIGN:
                    acc = over_acc.setdefault(model_of[r.audit_id], [0, 0])
                    acc[0] += r.n_refused
                    acc[1] += r.n
            for model, (k, n) in over_acc.items():
                if n:
                    over.add_metric([model], k / n)
        yield harm
        yield refusal
        yield count
        yield degenerate
        yield over
        yield from _drift(s, model_of)
        yield from _cascade(s, model_of)
        yield from grpo_families(s, model_of)  # GRPO fragility of the same latest audits


class FleetCollector:
    """Fleet-wide and live series: queue, outcomes, durations, judge errors, scheduler liveness."""

    def __init__(self, engine: Engine, daemon_state: Callable[[], dict] | None = None):
        self.engine = engine
        # Live facts only the running daemon knows (scheduler tick, last polls); None in one-shot use.
        self.daemon_state = daemon_state

    def describe(self):
        return []

    def collect(self) -> Iterator:
        with session(self.engine) as s:
            yield from self._fleet(s)
        yield _one("auditd_build_info", "auditd version", ["version"], [__version__], 1)
        if self.daemon_state:
            st = self.daemon_state()
            yield _one("auditd_scheduler_heartbeat_timestamp_seconds", "last scheduler loop tick", [], [], st["tick"])
            g = GaugeMetricFamily(
                "auditd_registry_last_poll_timestamp_seconds", "last successful registry poll", labels=["source"]
            )
            for src, ts in st.get("polls", {}).items():
                g.add_metric([src], ts)
            yield g
            errors = CounterMetricFamily(
                "auditd_scheduler_errors",
                "failed scheduler job runs by job and kind "
                "(locked, disk_full, connection_lost, ...); each is retried with backoff",
                labels=["job", "kind"],
            )
            for (job, kind), n in sorted(st.get("errors", {}).items()):
                errors.add_metric([job, kind], n)
            yield errors
            yield from _replica(st)

    def _fleet(self, s) -> Iterator:
        by_outcome = dict(s.exec(select(Verdict.outcome, func.count()).group_by(Verdict.outcome)).all())
        audits = CounterMetricFamily("auditd_audits", "finished audits by verdict outcome", labels=["outcome"])
        for o in OUTCOMES:
            audits.add_metric([o], by_outcome.get(o, 0))
        yield audits
        status = dict(s.exec(select(AuditRun.status, func.count()).group_by(AuditRun.status)).all())
        yield _one("auditd_queue_depth", "audits waiting to run", [], [], status.get("queued", 0))
        yield _one("auditd_audits_running", "audits running now", [], [], status.get("running", 0))
        yield _running_by_placement(s)
        oldest = s.exec(select(func.min(AuditRun.created_at)).where(AuditRun.status == "queued")).first()
        age = max(0.0, time.time() - _ts(oldest)) if oldest else 0.0
        yield _one("auditd_oldest_queued_audit_age_seconds", "age of the oldest waiting audit", [], [], age)
        durations = s.exec(select(col(AuditRun.duration_s)).where(col(AuditRun.duration_s).is_not(None))).all()
        buckets, acc = [], 0
        for ub in DURATION_BUCKETS:
            acc = sum(1 for d in durations if d <= ub)
            buckets.append(("+Inf" if ub == float("inf") else str(ub), acc))
        yield HistogramMetricFamily(
            "auditd_audit_duration_seconds",
            "wall time of finished audits",
            buckets=buckets,
            sum_value=float(sum(durations)),
        )
        errs = CounterMetricFamily("auditd_judge_errors", "samples a judge could not score", labels=["judge"])
        for judge, n in s.exec(
            select(JudgeErrorCount.judge, func.sum(JudgeErrorCount.errors)).group_by(JudgeErrorCount.judge)
        ).all():
            errs.add_metric([judge], n or 0)
        yield errs
        yield from _judge_validations(s)


def _running_by_placement(s) -> GaugeMetricFamily:
    """Running audits per host or Ray node, from the store: the same figure from every replica."""
    g = GaugeMetricFamily(
        "auditd_audits_running_by_placement", "audits running now, by host or Ray node", labels=["placement"]
    )
    rows = s.exec(
        select(AuditRun.placement, func.count()).where(AuditRun.status == "running").group_by(AuditRun.placement)
    ).all()
    for placement, n in rows:
        g.add_metric([placement or "unplaced"], n)
    return g


def _replica(st: dict) -> Iterator:
    """Per-process series, labelled by replica: whether it leads, and the Ray cluster it sees."""
    if "replica" in st:
        yield _one(
            "auditd_replica_leader",
            "1 on the replica that runs polls and periodic jobs",
            ["replica"],
            [st["replica"]],
            1 if st.get("leader") else 0,
        )
    from auditd.runner.ray_executor import cluster_gpus

    if (gpus := cluster_gpus()) is not None:
        yield _one(
            "auditd_cluster_gpus_free",
            "GPUs of the Ray cluster not reserved now",
            ["replica"],
            [st.get("replica", "")],
            gpus[0],
        )
        yield _one("auditd_cluster_gpus", "GPUs of the Ray cluster", ["replica"], [st.get("replica", "")], gpus[1])


def _drift(s, model_of: dict[int, str]) -> Iterator:
    """Harmful-rate drift of each model's latest audit against its baseline, as stored at verdict
    time (auditd/policy/baseline.py), so a scrape never re-runs the comparison."""
    from auditd.store.drift_models import CategoryDrift

    delta = GaugeMetricFamily(
        "auditd_category_harmful_rate_drift",
        "harmful rate minus the parent's/baseline's",
        labels=["model", "probe", "category"],
    )
    significant = GaugeMetricFamily(
        "auditd_category_drift_significant",
        "1 when the drift is significant at the policy's level, else 0",
        labels=["model", "probe", "category"],
    )
    if model_of:
        cd = CategoryDrift  # columns, not ORM entities (see _latest)
        for r in s.exec(
            select(col(cd.audit_id), col(cd.probe_id), col(cd.category), col(cd.delta), col(cd.significant)).where(  # type: ignore[call-overload]  # sqlmodel types select() for <= 4 columns
                col(cd.audit_id).in_(model_of), col(cd.metric) == "harmful_rate"
            )
        ).all():
            labels = [model_of[r.audit_id], r.probe_id, r.category]
            delta.add_metric(labels, r.delta)
            significant.add_metric(labels, 1.0 if r.significant else 0.0)
    yield delta
    yield significant


def _cascade(s, model_of: dict[int, str]) -> Iterator:
    """judge:cascade routing of each model's latest audit: the share of samples sent to the model
    judge, and how often the two judges disagreed where both ran."""
    from sqlalchemy import case

    escalated = GaugeMetricFamily(
        "auditd_judge_escalated_ratio", "share of cascade-judged samples decided by the model judge", labels=["model"]
    )
    disagree = GaugeMetricFamily(
        "auditd_judge_disagreement_rate",
        "share of samples judged by both cascade judges where they disagreed",
        labels=["model"],
    )
    compared = GaugeMetricFamily(
        "auditd_judge_compared_samples",
        "samples judged by both cascade judges (behind the disagreement rate)",
        labels=["model"],
    )
    if model_of:
        sm = Sample
        rows = s.exec(
            select(
                col(sm.audit_id),
                func.count(),
                func.sum(case((col(sm.escalated).is_(True), 1), else_=0)),  # type: ignore[call-overload]  # sqlmodel types select() for <= 4 columns
                func.count(col(sm.judges_agree)),
                func.sum(case((col(sm.judges_agree).is_(False), 1), else_=0)),
            )
            .where(col(sm.audit_id).in_(model_of), col(sm.escalated).is_not(None))
            .group_by(col(sm.audit_id))
        ).all()
        for audit_id, n, n_esc, n_both, n_disagree in rows:
            model = model_of[audit_id]
            escalated.add_metric([model], (n_esc or 0) / n)
            compared.add_metric([model], n_both or 0)
            if n_both:
                disagree.add_metric([model], (n_disagree or 0) / n_both)
    yield escalated
    yield disagree
    yield compared


def _judge_validations(s) -> Iterator:
    """Each judge's latest measured agreement with each gold file (`auditd judges validate`)."""
    from auditd.store.judge_models import JudgeValidation as jv

    agreement = GaugeMetricFamily(
        "auditd_judge_agreement", "judge accuracy against human labels (latest validation)", labels=["judge", "gold"]
    )
    kappa = GaugeMetricFamily(
        "auditd_judge_kappa", "judge Cohen's kappa against human labels (latest validation)", labels=["judge", "gold"]
    )
    seen = set()
    for judge, gold, acc, k in s.exec(
        select(jv.judge, jv.gold, jv.accuracy, jv.kappa).order_by(col(jv.created_at).desc(), col(jv.id).desc())
    ).all():
        if (judge, gold) in seen:
            continue
        seen.add((judge, gold))
        if acc is not None:
            agreement.add_metric([judge, gold], acc)
        if k is not None:
            kappa.add_metric([judge, gold], k)
    yield agreement
    yield kappa


def _one(name, doc, labelnames, labels, value):
    g = GaugeMetricFamily(name, doc, labels=labelnames)
    g.add_metric(labels, value)
    return g


class AuditdRegistry(CollectorRegistry):
    """The daemon's one registry. `generate_latest(registry)` renders everything fresh; `render()`
    (what /metrics serves) re-renders the per-model part only when an audit finished or a verdict
    changed since the last scrape: rendering ~10 series per category per model is most of a
    scrape's cost at fleet scale (bench/bench_scrape.py), while the live part is always fresh."""

    def __init__(self, engine: Engine, daemon_state: Callable[[], dict] | None = None):
        super().__init__(auto_describe=False)
        self.engine = engine
        results, fleet = ModelResultsCollector(engine), FleetCollector(engine, daemon_state)
        self.register(results)
        self.register(fleet)
        self._results, self._fleet = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
        self._results.register(results)
        self._fleet.register(fleet)
        self._lock = threading.Lock()
        self._cached: tuple[tuple | None, bytes] = (None, b"")

    def results_version(self) -> tuple:
        """Changes whenever a per-model series can: a finished audit, a new or re-decided verdict
        (drift rows and GRPO summaries are written with them)."""
        with session(self.engine) as s:
            finished = s.exec(
                select(func.count(col(AuditRun.id)), func.max(col(AuditRun.finished_at))).where(
                    col(AuditRun.finished_at).is_not(None)
                )
            ).one()
            verdicts = s.exec(
                select(func.count(col(Verdict.id)), func.max(col(Verdict.id)), func.max(col(Verdict.created_at)))
            ).one()
        return (*finished, *verdicts)

    def render(self) -> bytes:
        version = self.results_version()
        with self._lock:
            if self._cached[0] != version:
                self._cached = (version, generate_latest(self._results))
            results = self._cached[1]
        return results + generate_latest(self._fleet)


def build_registry(engine: Engine, daemon_state: Callable[[], dict] | None = None) -> AuditdRegistry:
    """One registry per process (no global default registry), reading the database at scrape time."""
    return AuditdRegistry(engine, daemon_state)
