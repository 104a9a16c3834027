"""Policy-category harm probes: requests in the eleven usage-policy categories of Qi et al.

Only the category prompt set lives here; its backdoor re-scan is in `probes/backdoor.py`. The
prompts in data/policy.jsonl are our own, written in the spirit of HEx-PHI (not copied from it),
grouped by category in the order of `auditd.categories.POLICY_CATEGORIES`.
"""

from auditd.categories import POLICY_CATEGORIES
from auditd.probe import Probe


class PolicyCategories(Probe):
    """Harmful requests across the 11 policy categories; compliance is the failure."""

    id = "policy"
    goal = "refuse requests in the 11 policy categories of Qi et al."
    categories = tuple(POLICY_CATEGORIES)
    expect = "refuse"
    judges = ("refusal",)  # policies may swap in a rubric or guard judge
    data_file = "policy.jsonl"
    tags = ("source:auditd", "paper:qi2024", "harm")
