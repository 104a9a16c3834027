"""Offline checks of grafana/: dashboards, provisioning files, and the metric names every query uses.

Each PromQL expression (dashboard targets, template-variable selectors, rules.yml, the Grafana-managed rules)
is parsed by promtool, and each metric name in it must be in docs/metrics.md's table, a recording rule of
rules.yml, or `up`. Grafana itself cannot be installed here, so rendering is not tested.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = GRAFANA / "prometheus" / "rules.yml"
ALERTING = GRAFANA / "provisioning" / "alerting" / "auditd.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
DS_UID = "auditd-prometheus"

# Grafana's built-in variables, replaced by a duration before parsing; dashboard variables by a dummy value.
DURATION_VARS = ("__rate_interval", "__interval", "__range")
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
}


# --- helpers ---------------------------------------------------------------------------------------


def documented_metrics() -> set[str]:
    """Series names auditd exposes, from docs/metrics.md: histograms as _bucket/_sum/_count only."""
    names = set()
    for m in re.finditer(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(\w+)\s*\|", METRICS_DOC.read_text(), re.M):
        name, kind = m.groups()
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def allowed_names() -> set[str]:
    return documented_metrics() | recorded_names() | {"up"}


def substitute_vars(expr: str) -> str:
    for v in DURATION_VARS:
        expr = expr.replace("${" + v + "}", "5m").replace("$" + v, "5m")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", "dummy", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (good enough for our queries, not a full parser)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name, call = m.groups()
        if call or name in PROMQL_KEYWORDS:  # function or aggregation
            continue
        names.add(name)
    # A bare label matcher selects by __name__ too: {__name__="x"} is not used here, so reject it.
    assert "__name__" not in expr, expr
    return names


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def label_values_selector(query: str) -> str:
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
    assert m, f"template query is not label_values(selector, label): {query}"
    return m.group(1)


def all_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every PromQL expression shipped in grafana/."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for p in dashboard_panels(dash):
            for t in p.get("targets", []):
                out.append((f"{path.name} panel {p['id']} {p['title']!r} {t['refId']}", t["expr"]))
        for v in dash.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                out.append((f"{path.name} variable {v['name']}", label_values_selector(v["definition"])))
    for r in rules():
        out.append((f"rules.yml {r.get('record') or r.get('alert')}", r["expr"]))
    for r in yaml.safe_load(ALERTING.read_text())["groups"][0]["rules"]:
        for q in r["data"]:
            if q["datasourceUid"] == DS_UID:
                out.append((f"alerting/auditd.yml {r['title']} {q['refId']}", q["model"]["expr"]))
    return out


# --- the metric-name extractor itself --------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, names",
    [
        ('sum by (outcome) (increase(auditd_audits_total{outcome="error"}[1h]))', {"auditd_audits_total"}),
        ("a - a offset 1d > 0.10 and on (job, model) b == 1", {"a", "b"}),
        ('histogram_quantile(0.9, sum by (le) (rate(x_bucket{probe=~"t2i[.].*"}[5m])))', {"x_bucket"}),
        ("count(max by (m) (g) == 1) or vector(0)", {"g"}),
        ("time() - job:rec:seconds > 1e-3", {"job:rec:seconds"}),
        ("sum without (instance) (x) / ignoring (le) group_left (y) z", {"x", "z"}),
        ('up{job="and"} == 0 or absent(up{job="auditd"})', {"up"}),
    ],
)
def test_metric_name_extractor(expr, names):
    assert metric_names(expr) == names


def test_metrics_doc_parses():
    names = documented_metrics()
    assert "auditd_category_harmful_rate_drift" in names
    assert "auditd_audit_duration_seconds_bucket" in names
    assert "auditd_audit_duration_seconds" not in names  # a histogram is queried through its series
    assert len(names) >= 20


# --- dashboards ------------------------------------------------------------------------------------


def test_dashboards_exist():
    assert {p.name for p in DASHBOARDS} >= {"fleet.json", "categories.json", "fragility.json", "t2i.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    dash = json.loads(path.read_text())
    assert dash["schemaVersion"] >= 41
    assert dash.get("id") is None  # provisioned dashboards carry no database id
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"])
    panels = dashboard_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    for v in variables.values():
        if v.get("type") == "query":
            assert v["datasource"]["uid"] == DS_UID, v["name"]
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        if p.get("repeat"):
            assert p["repeat"] in variables, p["title"]
        if p["type"] in ("row", "text", "alertlist"):
            assert not p.get("targets"), p["title"]
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        assert p["datasource"]["uid"] == DS_UID, p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS_UID, p["title"]
            used = set(re.findall(r"\$\{?(\w+)", t["expr"])) - set(DURATION_VARS)
            assert used <= set(variables), f"{p['title']!r} uses undefined variables {used - set(variables)}"


def test_dashboard_uids_unique():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_generated_files_are_current():
    """grafana/build.py is the source of the dashboards and the Grafana-managed rules."""
    r = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, "run `python grafana/build.py`:\n" + r.stdout + r.stderr


# --- metric names and PromQL -----------------------------------------------------------------------


def test_every_metric_name_is_known():
    allowed = allowed_names()
    unknown = [(where, sorted(metric_names(substitute_vars(e)) - allowed)) for where, e in all_expressions()]
    unknown = [u for u in unknown if u[1]]
    assert not unknown, "metric names not in docs/metrics.md, rules.yml records or `up`:\n" + "\n".join(
        f"  {w}: {n}" for w, n in unknown
    )


def test_every_expression_parses_as_promql(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/install-system.sh installs it)")
    exprs = all_expressions()
    rule_file = tmp_path / "exprs.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "parse",
                        "rules": [
                            {"record": f"parse:expr_{i}", "expr": substitute_vars(e)} for i, (_, e) in enumerate(exprs)
                        ],
                    }
                ]
            }
        )
    )
    r = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True)
    if r.returncode != 0:
        bad = sorted({int(i) for i in re.findall(r"rule (\d+)", r.stdout + r.stderr)})
        detail = "\n".join(f"  {exprs[i - 1][0]}: {exprs[i - 1][1]}" for i in bad if 0 < i <= len(exprs))
        pytest.fail(f"promtool rejected expressions:\n{detail}\n{r.stdout}{r.stderr}")
    assert f"{len(exprs)} rules found" in r.stdout


# --- provisioning ----------------------------------------------------------------------------------


def test_datasource_provisioning():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "auditd.yml").read_text())
    (only,) = ds["datasources"]
    assert only["uid"] == DS_UID and only["type"] == "prometheus"


def test_dashboard_provider_points_at_the_dashboards_folder():
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "auditd.yml").read_text())
    (p,) = prov["providers"]
    assert p["type"] == "file"
    assert p["options"]["path"] == "/var/lib/grafana/dashboards/auditd"


def test_grafana_rules_mirror_prometheus_alerts():
    """One Grafana-managed rule per Prometheus alert, same PromQL, `for`, labels and runbook."""
    prom = {r["alert"]: r for r in rules() if "alert" in r}
    graf = {r["title"]: r for r in yaml.safe_load(ALERTING.read_text())["groups"][0]["rules"]}
    assert set(graf) == set(prom)
    uids = [r["uid"] for r in graf.values()]
    assert len(uids) == len(set(uids)) and all(len(u) <= 40 for u in uids)
    for name, g in graf.items():
        p = prom[name]
        (query,) = [q for q in g["data"] if q["refId"] == "A"]
        assert query["datasourceUid"] == DS_UID
        assert query["model"]["expr"] == p["expr"].strip()
        assert g["for"] == p.get("for", "0s")
        assert g["labels"] == p["labels"]
        # Grafana expands $VARS from the environment in labels (not in annotations): keep labels plain.
        assert not any("$" in v for v in g["labels"].values())
        assert g["annotations"]["runbook_url"] == p["annotations"]["runbook_url"]
        assert g["condition"] in {q["refId"] for q in g["data"]}


def test_every_recording_rule_is_used():
    used = set()
    for where, e in all_expressions():
        if not where.startswith("rules.yml"):
            used |= metric_names(substitute_vars(e))
    assert recorded_names() <= used, f"unused recording rules: {sorted(recorded_names() - used)}"
