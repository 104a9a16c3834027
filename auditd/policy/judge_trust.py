"""Which judges decided an audit, how well each agrees with human labels, and `judges_min_kappa`.

Every verdict names the judges whose decisions it rests on and each one's latest validated
Cohen's kappa (`auditd judges validate`, matched on the judge's configuration digest), in a
`judges` reason with action "pass". A policy that sets `judges_min_kappa` caps at warn any block
decided by a judge below it, or never validated: a judge nobody measured may not stop a release
on its own word.
"""

from __future__ import annotations

from sqlmodel import Session, select

from auditd import plugins
from auditd.judges.agreement import config_digest
from auditd.judges.validations import latest_validation
from auditd.policy.model import Policy
from auditd.policy.verdict import RANK, Decision
from auditd.store.models import Sample


def deciding_judges(s: Session, policy: Policy, kind: str, audit_id: int) -> dict[tuple[str, str], set[str]]:
    """(probe, category) -> judges that decided its samples; (probe, "") -> the probe's judges.
    From the samples' `decided_by`; a probe whose samples record none falls back to its judges."""
    scopes: dict[tuple[str, str], set[str]] = {}
    rows = s.exec(
        select(Sample.probe_id, Sample.category, Sample.decided_by)
        .distinct()
        .where(Sample.audit_id == audit_id, Sample.decided_by != "")
    ).all()
    for probe, category, judge in rows:
        scopes.setdefault((probe, category), set()).add(judge)
        scopes.setdefault((probe, ""), set()).add(judge)
    for plan in policy.plan(kind):
        if (plan.id, "") not in scopes:
            try:
                judges = plan.judges or list(plugins.resolve(f"probe:{plan.id}").judges)
            except Exception:  # an unknown probe already failed the audit; nothing to name here
                judges = []
            scopes[(plan.id, "")] = set(judges)
    return scopes


def judge_figures(s: Session, policy: Policy, judges: set[str]) -> dict[str, dict]:
    out = {}
    for judge in sorted(judges):
        row = latest_validation(s, judge, config_digest(judge, policy.judge_options.get(judge, {})))
        out[judge] = {
            "judge": judge,
            "kappa": row.kappa if row else None,
            "kappa_ci": [row.kappa_lo, row.kappa_hi] if row and row.kappa_lo is not None else None,
            "accuracy": row.accuracy if row else None,
            "gold": row.gold if row else None,
            "validated_at": row.created_at.isoformat() if row else None,
        }
    return out


def apply_judge_trust(s: Session, policy: Policy, kind: str, audit_id: int, d: Decision) -> None:
    """Name the deciding judges in `d` and cap blocks of untrusted judges (policy.judges_min_kappa)."""
    scopes = deciding_judges(s, policy, kind, audit_id)
    figures = judge_figures(s, policy, set().union(*scopes.values()) if scopes else set())
    minimum = policy.judges_min_kappa
    if minimum is not None:
        for reason in d.reasons:
            if reason["action"] != "block" or "probe" not in reason:
                continue
            judges = scopes.get((reason["probe"], reason.get("category", "")), scopes.get((reason["probe"], ""), set()))
            weak = [j for j in sorted(judges) if figures[j]["kappa"] is None or figures[j]["kappa"] < minimum]
            if weak:
                why = ", ".join(f"{j} kappa {_k(figures[j]['kappa'])}" for j in weak)
                reason.update(
                    action="warn",
                    capped_from="block",
                    judge_kappa=why,
                    message=f"{reason['message']} (capped at warn: {why} < judges_min_kappa {minimum})",
                )
        decided = [r["action"] for r in d.reasons]
        d.outcome = max(decided, key=RANK.__getitem__) if decided else "pass"
    if figures:
        named = "; ".join(
            f"{j} (kappa {_k(f['kappa'])}" + (f" on {f['gold']})" if f["gold"] else ")") for j, f in figures.items()
        )
        d.reasons.append(
            {"action": "pass", "rule": "judges", "message": f"judges: {named}", "judges": list(figures.values())}
        )


def _k(kappa: float | None) -> str:
    return "never validated" if kappa is None else f"{kappa:.3f}"
