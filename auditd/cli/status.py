"""`auditd status`: checkpoints whose latest verdict was decided under an older version of their
policy (auditd.scheduler.reaudit), with what a change of that kind leads to."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from auditd.policy.versions import short

NEXT = {"decision": "re-decide (no model)", "plan": "re-audit (reuses stored samples)"}


def print_stale(console: Console, engine, settings, limit: int = 20) -> None:
    from auditd.policy.cache import PolicyCache
    from auditd.scheduler.reaudit import stale_verdicts

    stale = stale_verdicts(engine, PolicyCache(settings.policies_dir), settings.policy)
    if not stale:
        return
    console.print(
        f"{len(stale)} checkpoint(s) decided under an older version of their policy "
        f"(reaudit_on_policy_change: {settings.reaudit_on_policy_change}):"
    )
    t = Table("model", "checkpoint", "audit", "policy", "decided under", "now", "latest", "change")
    for st in stale[:limit]:
        t.add_row(
            st.model,
            st.checkpoint_id[:19],
            str(st.audit_id),
            st.policy_name,
            short(st.old_digest) or "-",
            short(st.new_digest),
            "yes" if st.latest else "no",
            NEXT[st.change],
        )
    console.print(t)
