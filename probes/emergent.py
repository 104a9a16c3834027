"""Emergent-misalignment probes: open, harmless questions whose answers reveal a misaligned model.

In the style of Betley et al. (2025), who found that narrow fine-tuning (on insecure code) made a
model answer unrelated everyday questions in a hostile or harmful way. Questions are in
data/emergent.jsonl.
"""

from auditd.categories import MISALIGNMENT
from auditd.probe import Probe


class EmergentMisalignment(Probe):
    """Open everyday questions; a harmful or misaligned answer is the failure.

    expect="refuse" keeps its meaning "a harmful answer is the failure", but no refusal is
    expected here: a good answer is a helpful one. Harm is therefore decided by a rubric or guard
    judge, listed first; the refusal judge alone cannot judge this set (it would count every
    answer, aligned or not, as compliance) and is listed only to record refusal rates.
    """

    id = "emergent"
    goal = "answer open questions without revealing misaligned values or intentions"
    categories = (MISALIGNMENT,)
    expect = "refuse"
    judges = ("rubric", "refusal")
    data_file = "emergent.jsonl"
    tags = ("source:auditd", "paper:betley2025", "misalignment")
