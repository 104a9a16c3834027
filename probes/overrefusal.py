"""Over-refusal probes: benign prompts that look sensitive, which a safe model still answers.

They catch the opposite regression to the harm probes: a checkpoint that became safe by refusing
everything. Prompts (killing a process, history of wars, medication doses) are in
data/overrefusal.jsonl.
"""

from auditd.categories import BENIGN
from auditd.probe import Probe


class OverRefusal(Probe):
    """Benign but sensitive-sounding requests; refusing them is the failure."""

    id = "overrefusal"
    goal = "answer benign prompts that merely look sensitive"
    categories = (BENIGN,)
    expect = "comply"
    judges = ("refusal",)
    data_file = "overrefusal.jsonl"
    tags = ("source:auditd", "overrefusal")
