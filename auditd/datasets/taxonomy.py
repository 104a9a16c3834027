"""Each benchmark's own categories mapped onto auditd's categories (documented in docs/datasets.md).

Keys are the benchmark's category labels, compared after `norm()` (lower case, runs of
non-alphanumerics folded to one space). A label missing here stays under its own name
(`<format>:<slug>`), is still audited, and is reported as unmapped: nothing is dropped.
"""

from __future__ import annotations

import re

IL, CA, HHV, MAL, PH = "illegal_activity", "child_abuse", "hate_harass_violence", "malware", "physical_harm"
EH, FD, AC, PC, PV, TFA = (
    "economic_harm",
    "fraud_deception",
    "adult_content",
    "political_campaigning",
    "privacy_violation",
    "tailored_financial_advice",
)


def norm(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(label).lower()).strip()


def slug(label: str) -> str:
    return norm(label).replace(" ", "_") or "uncategorised"


HARMBENCH = {  # SemanticCategory (Mazeika et al., 2024)
    "chemical_biological": PH,
    "illegal": IL,
    "cybercrime_intrusion": MAL,
    "misinformation_disinformation": FD,
    "harassment_bullying": HHV,
    "harmful": PH,
    # "copyright" has no policy category: reported as unmapped
}
ADVBENCH: dict[str, str] = {}  # no categories: every goal is under `default_category`
STRONGREJECT = {  # category (Souly et al., 2024)
    "disinformation and deception": FD,
    "hate harassment and discrimination": HHV,
    "illegal goods and services": IL,
    "non violent crimes": IL,
    "sexual content": AC,
    "violence": HHV,
}
JAILBREAKBENCH = {  # Category (Chao et al., 2024), from OpenAI's usage policies
    "harassment discrimination": HHV,
    "malware hacking": MAL,
    "physical harm": PH,
    "economic harm": EH,
    "fraud deception": FD,
    "disinformation": FD,
    "sexual adult content": AC,
    "privacy": PV,
    "expert advice": TFA,
    "government decision making": PC,
}
HEX_PHI = {  # file category_<n>.csv (Qi et al., 2024): the same eleven categories as auditd's
    "1": IL,
    "2": CA,
    "3": HHV,
    "4": MAL,
    "5": PH,
    "6": EH,
    "7": FD,
    "8": AC,
    "9": PC,
    "10": PV,
    "11": TFA,
}
XSTEST = {  # type of the unsafe ("contrast_") prompts; every safe type maps to `benign`
    "contrast homonyms": PH,
    "contrast figurative language": PH,
    "contrast safe targets": PH,
    "contrast safe contexts": PH,
    "contrast definitions": IL,
    "contrast discr": HHV,
    "contrast historical events": HHV,
    "contrast privacy": PV,
}
DO_NOT_ANSWER = {  # types_of_harm (Wang et al., 2023)
    "adult content": AC,
    "social stereotypes and unfair discrimination": HHV,
    "toxic language hate speech": HHV,
    "compromise privacy by leaking or inferring private information person individual": PV,
    "risks from leaking or inferring sensitive information organization gov": PV,
    "assisting illegal activities": IL,
    "nudging or advising users to perform unethical or unsafe actions": PH,
    "reducing the cost of disinformation campaigns": FD,
    "causing material harm by disseminating misinformation e g in medicine or law": PH,
    "disseminating false or misleading information": FD,
    # "mental health or overreliance crisis", "treat chatbot as a human": no policy category
}
SIMPLE_SAFETY_TESTS = {  # harm_area (Vidgen et al., 2023)
    "suicide self harm and eating disorders": PH,
    "physical harm": PH,
    "physical harm and violence": PH,
    "illegal and highly regulated items": IL,
    "scams and fraud": FD,
    "child abuse": CA,
}
# SORRY-Bench (Xie et al., 2024): `category` is the 1-based number of its 44 (+1) fine-grained classes.
SORRY_BENCH_NAMES = (
    "Personal Insulting Words",
    "Social-group Insulting Words",
    "Threatening Words",
    "Lewd and Obscene Words",
    "Libelous Words",
    "Self-Harm",
    "Violent Crimes",
    "Stalking and Harassment",
    "Sexual Crimes",
    "Property Crimes",
    "Public Order Crimes",
    "Impersonation",
    "General Advice for System Intrusion",
    "Malware Code Generation",
    "Fraud, Scams, and Deception",
    "Financial Crimes",
    "Intellectual Property Infringement",
    "Personal Identifiable Information",
    "Illegal Crafting, Manufacturing, and Distribution",
    "Terrorism",
    "Child-related Crimes",
    "Animal-related Crimes",
    "Environmental Crimes",
    "Evasion of Law Enforcement",
    "Human Elimination & World Domination",
    "Advice on Adult Content",
    "(Sexual) Explicit Content Generation",
    "(Non-sexual) Explicit Content Generation",
    "Fake News Generation",
    "False Advertising",
    "Advice on Discrimination Behaviors",
    "Military Use",
    "Political Belief Promotion",
    "Ethical Belief Promotion",
    "Religion Promotion (Missionary)",
    "Social Stereotype Promotion",
    "Extremist Content Promotion",
    "Conspiracy Theories Promotion",
    "False Common Knowledge Promotion",
    "Harmful & Unhealthy Behaviors Promotion",
    "Medical Advice",
    "Financial Advice",
    "Legal Consulting Advice",
    "Governance Decision Advice",
    "Dangerous Machinery Operation Advice",
)
_SORRY = (
    HHV,
    HHV,
    HHV,
    AC,
    HHV,
    PH,
    HHV,
    HHV,
    IL,
    IL,
    IL,
    FD,
    MAL,
    MAL,
    FD,
    EH,
    IL,
    PV,
    IL,
    HHV,
    CA,
    IL,
    IL,
    IL,
    HHV,
    AC,
    AC,
    HHV,
    FD,
    FD,
    HHV,
    PH,
    PC,
    None,
    None,
    HHV,
    HHV,
    FD,
    FD,
    PH,
    None,
    TFA,
    None,
    PC,
    None,
)
SORRY_BENCH = {str(i): c for i, c in enumerate(_SORRY, 1) if c} | {
    norm(n): c for n, c in zip(SORRY_BENCH_NAMES, _SORRY) if c
}
# I2P (Schramowski et al., 2023): `categories` lists several of its seven labels, comma-separated.
I2P = {
    "sexual": "t2i_sexual",
    "violence": "t2i_violence",
    "self harm": "t2i_self_harm",
    "hate": "t2i_hate",
    "harassment": "t2i_harassment",
    "shocking": "t2i_shocking",
    "illegal activity": "t2i_illegal_activity",
}
# Short names some copies of SORRY-Bench use instead of the numbers.
SORRY_BENCH |= {
    "harassment": HHV,
    "system intrusion": MAL,
    "fraud": FD,
    "ip infringement": IL,
    "pii violations": PV,
    "illegal crafting": IL,
    "human elimination": HHV,
    "sexual explicit content generation": AC,
    "non sexual explicit content generation": HHV,
}
