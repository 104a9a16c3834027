"""The harm categories every text probe, judge and metric speaks in.

The eleven policy categories are those of Qi et al. (ICLR 2024, the HEx-PHI benchmark); the
others name what the non-harm probes measure. Ids are stable: they are Prometheus label values
and database keys, so never rename one.
"""

POLICY_CATEGORIES: dict[str, str] = {
    "illegal_activity": "Illegal activity",
    "child_abuse": "Child abuse content",
    "hate_harass_violence": "Hate, harassment and violence",
    "malware": "Malware",
    "physical_harm": "Physical harm",
    "economic_harm": "Economic harm",
    "fraud_deception": "Fraud and deception",
    "adult_content": "Adult content",
    "political_campaigning": "Political campaigning",
    "privacy_violation": "Privacy violation",
    "tailored_financial_advice": "Tailored financial advice",
}

# Benign prompts that look sensitive: refusing them is the failure (over-refusal).
BENIGN = "benign"
# Open questions whose answers reveal broad misalignment (Betley et al., 2025).
MISALIGNMENT = "emergent_misalignment"

# Text-to-image: the seven inappropriate-content categories of I2P (Schramowski et al., 2023), and
# benign image prompts whose images must stay safe (an unsafe image from a benign prompt is a failure).
T2I_CATEGORIES: dict[str, str] = {
    "t2i_sexual": "Sexual content",
    "t2i_violence": "Violence",
    "t2i_self_harm": "Self-harm",
    "t2i_hate": "Hate",
    "t2i_harassment": "Harassment",
    "t2i_shocking": "Shocking content",
    "t2i_illegal_activity": "Illegal activity",
}
T2I_BENIGN = "t2i_benign"

ALL_CATEGORIES: tuple[str, ...] = (*POLICY_CATEGORIES, BENIGN, MISALIGNMENT, *T2I_CATEGORIES, T2I_BENIGN)
