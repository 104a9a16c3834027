"""Writes grafana/dashboards/*.json and grafana/provisioning/alerting/auditd.yml.

    python grafana/build.py           # rewrite the files
    python grafana/build.py --check   # exit 1 when a committed file differs (tests/test_ops_grafana.py)

The dashboards are plain Grafana JSON (schemaVersion 41) and can be edited in Grafana, but the source of
truth is this file: export, port the change here, rebuild. The Grafana-managed alert rules are generated
from grafana/prometheus/rules.yml, so the two alerting paths cannot drift apart (docs/operations.md#alerting).
Metric names: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
ALERTING = HERE / "provisioning" / "alerting" / "auditd.yml"
RULES = HERE / "prometheus" / "rules.yml"

DS_UID = "auditd-prometheus"
DS = {"type": "prometheus", "uid": DS_UID}
SCHEMA_VERSION = 41
T2I = 'probe=~"t2i[.].*"'  # text-to-image probe ids start with "t2i."


# --- building blocks -------------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
        "format": fmt,
    }


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def panel(
    kind: str,
    title: str,
    targets: list[dict],
    *,
    description: str = "",
    unit: str = "",
    options: dict | None = None,
    defaults: dict | None = None,
    overrides: list | None = None,
    interval: str | None = None,
    transformations: list | None = None,
) -> dict:
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": dict(defaults or {}), "overrides": overrides or []},
        "options": options or {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if interval:
        p["interval"] = interval  # minimum step, and the $__interval of increase() bars
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title, expr, legend="", *, unit="", description="", steps=None, mappings=None, text_mode="auto"):
    defaults = {"thresholds": thresholds(*(steps or [(None, "green")])), "color": {"mode": "thresholds"}}
    if mappings:
        defaults["mappings"] = mappings
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": text_mode,
        "justifyMode": "auto",
        "orientation": "auto",
        "showPercentChange": False,
        "wideLayout": True,
    }
    return panel(
        "stat",
        title,
        [target(expr, legend, instant=True)],
        description=description,
        unit=unit,
        options=options,
        defaults=defaults,
    )


def timeseries(title, targets, *, unit="", description="", bars=False, interval=None, stack=False, max_=None):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never" if not bars else "auto",
        "spanNulls": True,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults = {"custom": custom, "color": {"mode": "palette-classic"}}
    if max_ is not None:
        defaults.update(min=0, max=max_)
    options = {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"], "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries",
        title,
        targets,
        description=description,
        unit=unit,
        options=options,
        defaults=defaults,
        interval=interval,
    )


def heatmap_rows(
    title, expr, legend, *, unit="percentunit", description="", scheme="Reds", min_=0.0, max_=1.0, reverse=False
):
    """One heatmap row per series (e.g. per category), colour = value. Data is not re-bucketed."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {
            "mode": "scheme",
            "scheme": scheme,
            "reverse": reverse,
            "exponent": 0.5,
            "steps": 64,
            "fill": "dark-orange",
            "min": min_,
            "max": max_,
        },
        "rowsFrame": {"layout": "auto"},
        "yAxis": {"axisPlacement": "left", "reverse": False},
        "cellValues": {"unit": unit},
        "legend": {"show": True},
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": True},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        # no filterValues: a 0 % cell is a result, not an empty bucket
    }
    return panel(
        "heatmap",
        title,
        [target(expr, legend)],
        description=description,
        options=options,
        defaults={"custom": {"scaleDistribution": {"type": "linear"}}},
    )


def table(title, targets, *, description="", renames=None, overrides=None, sort=None):
    """Instant queries merged into one row per label set; renames maps 'Value #A' -> column title."""
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": renames or {}}},
    ]
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort:
        options["sortBy"] = [{"displayName": sort, "desc": True}]
    return panel(
        "table",
        title,
        [dict(t, instant=True, range=False, format="table") for t in targets],
        description=description,
        options=options,
        overrides=overrides,
        transformations=transformations,
    )


def bargauge(title, expr, legend, *, unit="percentunit", description="", max_=1):
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "left",
        "sizing": "auto",
        "minVizHeight": 10,
        "minVizWidth": 0,
        "maxVizHeight": 300,
    }
    defaults = {
        "min": 0,
        "max": max_,
        "color": {"mode": "continuous-GrYlRd"},
        "thresholds": thresholds((None, "green")),
    }
    return panel(
        "bargauge",
        title,
        [target(expr, legend, instant=True)],
        description=description,
        unit=unit,
        options=options,
        defaults=defaults,
    )


def col(name: str, **props) -> dict:
    """A table column override: col('harmful rate', unit='percentunit')."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()],
    }


def query_var(name, label, query, *, multi=True, include_all=True) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "allValue": ".*" if include_all else None,
        "current": {},
        "options": [],
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


class Dashboard:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self, uid: str, title: str, description: str, variables: list | None = None):
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables or []
        self.panels: list[dict] = []
        self.x = self.y = self.row_h = 0

    def _place(self, p: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        p["id"] = len(self.panels) + 1
        p["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(p)

    def row(self, title: str, repeat: str | None = None) -> None:
        self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        p = {"type": "row", "title": title, "collapsed": False, "panels": []}
        if repeat:
            p["repeat"] = repeat
        self._place(p, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0

    def add(self, p: dict, w: int = 12, h: int = 8) -> None:
        self._place(p, w, h)

    def json(self) -> dict:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["auditd"],
            "editable": True,
            "graphTooltip": 1,
            "timezone": "browser",
            "time": {"from": "now-7d", "to": "now"},
            "refresh": "1m",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": [
                {
                    "title": "auditd",
                    "type": "dashboards",
                    "tags": ["auditd"],
                    "asDropdown": True,
                    "includeVars": False,
                    "keepTime": True,
                    "targetBlank": False,
                    "icon": "external link",
                    "tooltip": "",
                    "url": "",
                }
            ],
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


# --- dashboards ------------------------------------------------------------------------------------

UP_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]
OUTCOME_COLORS = [
    col(o, color={"mode": "fixed", "fixedColor": c})
    for o, c in [("pass", "green"), ("warn", "yellow"), ("block", "red"), ("error", "purple")]
]

# Several replicas sharing one database export the same database-derived series with different
# `instance` labels: dashboards take max without (instance) instead of summing them twice.
ONE = "max without (instance)"


def fleet() -> dict:
    d = Dashboard(
        "auditd-fleet",
        "auditd / Fleet overview",
        "Audits, verdicts, queue, errors and durations of every auditd instance.",
    )
    d.row("Now")
    d.add(
        stat(
            "auditd up",
            'up{job="auditd"}',
            "{{instance}}",
            mappings=UP_MAPPINGS,
            steps=[(None, "red"), (1, "green")],
            description="Prometheus scrape of each auditd target (AuditdDown).",
        ),
        4,
        4,
    )
    d.add(stat("Version", "max by (version) (auditd_build_info)", "{{version}}", text_mode="name"), 4, 4)
    d.add(
        stat(
            "Queued",
            "max(auditd_queue_depth)",
            steps=[(None, "green"), (10, "orange")],
            description="Audits waiting to run (AuditdQueueBacklog above 10 for 30 minutes).",
        ),
        4,
        4,
    )
    d.add(stat("Running", "max(auditd_audits_running)", steps=[(None, "blue")]), 4, 4)
    d.add(
        stat(
            "Oldest queued audit",
            "max(auditd_oldest_queued_audit_age_seconds)",
            unit="s",
            steps=[(None, "green"), (3600, "orange"), (21600, "red")],
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Scheduler heartbeat age",
            "max(job:auditd_scheduler_heartbeat_age:seconds)",
            unit="s",
            steps=[(None, "green"), (120, "orange"), (300, "red")],
            description="Seconds since the scheduler loop last ran (AuditdSchedulerStalled above 300).",
        ),
        4,
        4,
    )
    d.add(
        stat(
            "Finished audits, last 24 h",
            f"sum by (outcome) ({ONE} (increase(auditd_audits_total[24h])))",
            "{{outcome}}",
            steps=[(None, "text")],
        ),
        12,
        4,
    )
    d.add(
        stat(
            "Registry poll age",
            "max by (source) (job_source:auditd_registry_last_poll_age:seconds)",
            "{{source}}",
            unit="s",
            steps=[(None, "green"), (300, "orange"), (900, "red")],
            description="Seconds since the last successful poll of each registry source.",
        ),
        12,
        4,
    )

    d.row("Audits and verdicts")
    bars = timeseries(
        "Finished audits by outcome (per hour)",
        [target(f"sum by (outcome) ({ONE} (increase(auditd_audits_total[$__interval])))", "{{outcome}}")],
        bars=True,
        stack=True,
        interval="1h",
    )
    bars["fieldConfig"]["overrides"] = OUTCOME_COLORS
    d.add(bars, 12, 8)
    d.add(
        table(
            "Latest verdict per model",
            [
                target("max by (model, checkpoint, outcome) (auditd_latest_audit_info)"),
                target("max by (model) (model:auditd_latest_audit_age:seconds)"),
            ],
            renames={"Value #A": "latest", "Value #B": "age"},
            overrides=[
                col("latest", custom_hideFrom={"viz": True, "legend": True, "tooltip": True}),
                col("age", unit="s"),
                col(
                    "outcome",
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "pass": {"color": "green", "index": 0},
                                "warn": {"color": "yellow", "index": 1},
                                "block": {"color": "red", "index": 2},
                                "error": {"color": "purple", "index": 3},
                            },
                        }
                    ],
                    custom_cellOptions={"type": "color-background"},
                ),
            ],
            description="The latest finished audit of each model and how long ago it finished.",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Queue and running audits",
            [
                target("max(auditd_queue_depth)", "queued"),
                target("max(auditd_audits_running)", "running"),
            ],
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Oldest queued audit age",
            [
                target("max(auditd_oldest_queued_audit_age_seconds)", "oldest queued"),
            ],
            unit="s",
        ),
        12,
        8,
    )

    d.row("Errors")
    d.add(
        timeseries(
            "Audits ending in error (per hour)",
            [
                target(f'sum({ONE} (increase(auditd_audits_total{{outcome="error"}}[$__interval])))', "error"),
            ],
            bars=True,
            interval="1h",
            description="Checkpoints that could not be audited (AuditdAuditsFailing).",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Judge errors (per hour)",
            [
                target(f"sum by (judge) ({ONE} (increase(auditd_judge_errors_total[$__interval])))", "{{judge}}"),
            ],
            bars=True,
            stack=True,
            interval="1h",
            description="Samples each judge could not score.",
        ),
        12,
        8,
    )

    d.row("Durations")
    hm = panel(
        "heatmap",
        "Audit duration",
        [
            target(
                f"sum by (le) ({ONE} (increase(auditd_audit_duration_seconds_bucket[$__interval])))",
                "{{le}}",
                fmt="heatmap",
            )
        ],
        interval="1h",
        description="Finished audits per wall-time bucket, per hour.",
        options={
            "calculate": False,
            "cellGap": 1,
            "yAxis": {"axisPlacement": "left", "unit": "s"},
            "rowsFrame": {"layout": "le"},
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "exponent": 0.5,
                "steps": 64,
                "fill": "dark-orange",
                "reverse": False,
            },
            "cellValues": {"unit": "short"},
            "legend": {"show": True},
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
        },
        defaults={"custom": {"scaleDistribution": {"type": "linear"}}},
    )
    d.add(hm, 12, 8)
    d.add(
        timeseries(
            "Audit duration quantiles (6 h window)",
            [
                target("max(job:auditd_audit_duration_seconds:p50_6h)", "p50"),
                target("max(job:auditd_audit_duration_seconds:p90_6h)", "p90"),
                target("max(job:auditd_audit_duration_seconds:p99_6h)", "p99"),
            ],
            unit="s",
        ),
        12,
        8,
    )

    d.row("Alerts")
    d.add(
        {
            "type": "alertlist",
            "title": "auditd alerts",
            "description": "Firing and pending auditd alerts (runbooks: docs/operations.md#alerts).",
            "options": {
                "viewMode": "list",
                "groupMode": "default",
                "groupBy": [],
                "maxItems": 50,
                "sortOrder": 1,
                "dashboardAlerts": False,
                "alertName": "Auditd",
                "alertInstanceLabelFilter": "",
                "folder": None,
                "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False, "error": True},
            },
        },
        24,
        8,
    )
    return d.json()


def categories() -> dict:
    sel = 'model="$model", probe=~"$probe", category=~"$category"'
    d = Dashboard(
        "auditd-categories",
        "auditd / Model categories",
        "Per model: harmful rate, drift against the parent or baseline, and refusal rate per policy "
        "category over time.",
        [
            query_var("model", "Model", "label_values(auditd_category_harmful_rate, model)"),
            query_var("probe", "Probe", 'label_values(auditd_category_harmful_rate{model=~"$model"}, probe)'),
            query_var("category", "Category", 'label_values(auditd_category_harmful_rate{model=~"$model"}, category)'),
        ],
    )
    d.add(
        table(
            "Significant drifts now",
            [
                target('model_probe_category:auditd_category_harmful_rate_drift:significant{model=~"$model"}'),
            ],
            renames={"Value #A": "drift"},
            sort="drift",
            overrides=[
                col(
                    "drift",
                    unit="percentunit",
                    custom_cellOptions={"type": "color-background"},
                    color={"mode": "continuous-GrYlRd"},
                    min=0,
                    max=0.5,
                )
            ],
            description="Categories whose harmful rate rose significantly above the parent's or baseline's "
            "(AuditdCategorySpike fires above 10 points).",
        ),
        24,
        6,
    )

    d.row("$model", repeat="model")
    d.add(
        heatmap_rows(
            "Harmful rate by category",
            f"max by (category) (auditd_category_harmful_rate{{{sel}}})",
            "{{category}}",
            description="Share of answers judged harmful, latest audit at each point in time.",
        ),
        12,
        9,
    )
    d.add(
        heatmap_rows(
            "Harmful-rate drift vs parent/baseline by category",
            f"max by (category) (auditd_category_harmful_rate_drift{{{sel}}})",
            "{{category}}",
            scheme="RdBu",
            reverse=True,
            min_=-0.5,
            max_=0.5,
            description="Harmful rate minus the parent's or baseline's; red = more harmful.",
        ),
        12,
        9,
    )
    d.add(
        heatmap_rows(
            "Refusal rate by category",
            f"max by (category) (auditd_category_refusal_rate{{{sel}}})",
            "{{category}}",
            scheme="Blues",
            description="Share of harmful-category prompts refused.",
        ),
        12,
        9,
    )
    d.add(
        timeseries(
            "Over-refusal of benign prompts",
            [
                target('max(auditd_over_refusal_rate{model="$model"})', "over-refusal"),
                target('max(model:auditd_over_refusal_rate:delta1d{model="$model"})', "change vs 1 day ago"),
            ],
            unit="percentunit",
            description="AuditdOverRefusalAnomaly fires when the change exceeds 10 points.",
        ),
        12,
        9,
    )
    sig = f"auditd_category_drift_significant{{{sel}}}"
    d.add(
        table(
            "Latest audit by category",
            [
                target(f"max by (probe, category) (auditd_category_harmful_rate{{{sel}}})"),
                target(f"max by (probe, category) (auditd_category_harmful_rate_drift{{{sel}}})"),
                target(f"max by (probe, category) ({sig})"),
                target(f"max by (probe, category) (auditd_category_samples{{{sel}}})"),
                target(f"max by (probe, category) (auditd_category_refusal_rate{{{sel}}})"),
            ],
            renames={
                "Value #A": "harmful rate",
                "Value #B": "drift",
                "Value #C": "significant",
                "Value #D": "samples",
                "Value #E": "refusal rate",
            },
            sort="harmful rate",
            overrides=[
                col(
                    "harmful rate",
                    unit="percentunit",
                    custom_cellOptions={"type": "color-background"},
                    color={"mode": "continuous-GrYlRd"},
                    min=0,
                    max=1,
                ),
                col("drift", unit="percentunit"),
                col("refusal rate", unit="percentunit"),
                col(
                    "significant",
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "no", "index": 0},
                                "1": {"text": "YES", "color": "red", "index": 1},
                            },
                        }
                    ],
                ),
            ],
        ),
        24,
        9,
    )
    return d.json()


def fragility() -> dict:
    m = 'model=~"$model", probe=~"$probe"'
    d = Dashboard(
        "auditd-fragility",
        "auditd / GRPO fragility",
        "GRP-Obliteration probes: how many GRPO steps with one harmful prompt until held-out harm reaches "
        "the threshold, the area under the harm curve, and harm per category after the attack.",
        [
            query_var("model", "Model", "label_values(auditd_grpo_broken, model)"),
            query_var("probe", "Probe", 'label_values(auditd_grpo_broken{model=~"$model"}, probe)'),
        ],
    )
    d.add(
        stat(
            "Broken within budget",
            f"count(max by (model, probe) (auditd_grpo_broken{{{m}}}) == 1) or vector(0)",
            steps=[(None, "green"), (1, "red")],
        ),
        6,
        4,
    )
    d.add(
        stat(
            "Held within budget",
            f"count(max by (model, probe) (auditd_grpo_broken{{{m}}}) == 0) or vector(0)",
            steps=[(None, "text")],
        ),
        6,
        4,
    )
    d.add(
        stat(
            "Fewest steps to break",
            f"min(auditd_grpo_steps_to_break{{{m}}})",
            steps=[(None, "red"), (11, "orange"), (50, "green")],
            description="AuditdGRPOFragile fires at 10 steps or fewer.",
        ),
        6,
        4,
    )
    d.add(
        stat(
            "Highest harm AUC",
            f"max(auditd_grpo_harm_auc{{{m}}})",
            unit="percentunit",
            steps=[(None, "green"), (0.25, "orange"), (0.5, "red")],
        ),
        6,
        4,
    )
    d.add(
        table(
            "Latest attack per model",
            [
                target(f"max by (model, probe) (auditd_grpo_broken{{{m}}})"),
                target(f"max by (model, probe) (auditd_grpo_steps_to_break{{{m}}})"),
                target(f"max by (model, probe) (auditd_grpo_harm_auc{{{m}}})"),
            ],
            renames={"Value #A": "broken", "Value #B": "steps to break", "Value #C": "harm AUC"},
            sort="harm AUC",
            overrides=[
                col(
                    "broken",
                    mappings=[
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "held", "color": "green", "index": 0},
                                "1": {"text": "BROKEN", "color": "red", "index": 1},
                            },
                        }
                    ],
                    custom_cellOptions={"type": "color-text"},
                ),
                col("harm AUC", unit="percentunit"),
            ],
        ),
        12,
        8,
    )
    d.add(
        bargauge(
            "Post-attack harmful rate by category",
            f"max by (model, category) (auditd_grpo_post_attack_harmful_rate{{{m}}})",
            "{{model}} / {{category}}",
            description="How far the damage generalised beyond the attacked prompt's category.",
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Steps to break over time (lower = more fragile)",
            [
                target(f"max by (model, probe) (auditd_grpo_steps_to_break{{{m}}})", "{{model}} {{probe}}"),
            ],
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Harm AUC over time",
            [
                target(f"max by (model, probe) (auditd_grpo_harm_auc{{{m}}})", "{{model}} {{probe}}"),
            ],
            unit="percentunit",
            max_=1,
        ),
        12,
        8,
    )
    d.add(
        timeseries(
            "Post-attack harmful rate over time",
            [
                target(
                    f"max by (model, category) (auditd_grpo_post_attack_harmful_rate{{{m}}})",
                    "{{model}} / {{category}}",
                ),
            ],
            unit="percentunit",
            max_=1,
        ),
        24,
        8,
    )
    return d.json()


def t2i() -> dict:
    sel = f'{T2I}, model="$model", probe=~"$probe"'
    d = Dashboard(
        "auditd-t2i",
        "auditd / Text-to-image",
        "Unsafe-concept rates of text-to-image checkpoints (probe ids starting with t2i.), judged by CLIP.",
        [
            query_var("model", "Model", f"label_values(auditd_category_harmful_rate{{{T2I}}}, model)"),
            query_var("probe", "Probe", f'label_values(auditd_category_harmful_rate{{{T2I}, model=~"$model"}}, probe)'),
        ],
    )
    d.add(
        timeseries(
            "Worst concept's unsafe rate per model",
            [
                target(
                    f'max by (model) (auditd_category_harmful_rate{{{T2I}, model=~"$model", probe=~"$probe"}})',
                    "{{model}}",
                ),
            ],
            unit="percentunit",
            max_=1,
        ),
        12,
        8,
    )
    d.add(
        table(
            "Significant concept drifts now",
            [
                target(
                    f'model_probe_category:auditd_category_harmful_rate_drift:significant{{{T2I}, model=~"$model"}}'
                ),
            ],
            renames={"Value #A": "drift"},
            sort="drift",
            overrides=[col("drift", unit="percentunit")],
        ),
        12,
        8,
    )

    d.row("$model", repeat="model")
    d.add(
        heatmap_rows(
            "Unsafe image rate by concept", f"max by (category) (auditd_category_harmful_rate{{{sel}}})", "{{category}}"
        ),
        12,
        9,
    )
    d.add(
        heatmap_rows(
            "Unsafe-rate drift vs parent/baseline by concept",
            f"max by (category) (auditd_category_harmful_rate_drift{{{sel}}})",
            "{{category}}",
            scheme="RdBu",
            reverse=True,
            min_=-0.5,
            max_=0.5,
        ),
        12,
        9,
    )
    d.add(
        table(
            "Latest audit by concept",
            [
                target(f"max by (probe, category) (auditd_category_harmful_rate{{{sel}}})"),
                target(f"max by (probe, category) (auditd_category_harmful_rate_drift{{{sel}}})"),
                target(f"max by (probe, category) (auditd_category_drift_significant{{{sel}}})"),
                target(f"max by (probe, category) (auditd_category_samples{{{sel}}})"),
            ],
            renames={"Value #A": "unsafe rate", "Value #B": "drift", "Value #C": "significant", "Value #D": "images"},
            sort="unsafe rate",
            overrides=[col("unsafe rate", unit="percentunit"), col("drift", unit="percentunit")],
        ),
        12,
        8,
    )
    d.add(
        bargauge(
            "Unsafe rate after the GRPO attack, by concept",
            f"max by (category) (auditd_grpo_post_attack_harmful_rate{{{sel}}})",
            "{{category}}",
            description="Diffusion GRPO with a CLIP reward: unsafe rate at the attack's last point.",
        ),
        12,
        8,
    )
    return d.json()


DASHBOARD_BUILDERS = {"fleet.json": fleet, "categories.json": categories, "fragility.json": fragility, "t2i.json": t2i}


# --- Grafana-managed alert rules, generated from rules.yml --------------------------------------------


def grafana_rules(rules_path: Path = RULES) -> dict:
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    rules = []
    for group in groups:
        for r in group["rules"]:
            if "alert" not in r:
                continue
            # In Grafana, $value is a text dump of all queries; the number of query A is $values.A.Value.
            annotations = {k: v.replace("$value", "$values.A.Value") for k, v in r["annotations"].items()}
            rules.append(
                {
                    "uid": "auditd-" + r["alert"].lower().removeprefix("auditd"),
                    "title": r["alert"],
                    "condition": "C",
                    "data": [
                        {
                            "refId": "A",
                            "relativeTimeRange": {"from": 600, "to": 0},
                            "datasourceUid": DS_UID,
                            "model": {
                                "refId": "A",
                                "datasource": DS,
                                "expr": r["expr"].strip(),
                                "instant": True,
                                "range": False,
                                "intervalMs": 60000,
                                "maxDataPoints": 43200,
                            },
                        },
                        # The PromQL above returns only the series that breach; any series returned fires.
                        {
                            "refId": "C",
                            "relativeTimeRange": {"from": 0, "to": 0},
                            "datasourceUid": "__expr__",
                            "model": {
                                "refId": "C",
                                "datasource": {"type": "__expr__", "uid": "__expr__"},
                                "type": "math",
                                "expression": "$A == $A",
                            },
                        },
                    ],
                    "noDataState": "OK",
                    "execErrState": "Error",
                    "for": r.get("for", "0s"),
                    "labels": dict(r.get("labels", {})),
                    "annotations": annotations,
                    "isPaused": False,
                }
            )
    return {
        "apiVersion": 1,
        "groups": [{"orgId": 1, "name": "auditd", "folder": "auditd", "interval": "1m", "rules": rules}],
    }


ALERTING_HEADER = """\
# Grafana-managed copies of the alerts in grafana/prometheus/rules.yml. GENERATED by grafana/build.py:
# do not edit, change rules.yml and rebuild. Use EITHER these (Grafana alerting, no Alertmanager) OR
# rules.yml in Prometheus with Alertmanager, not both, or every alert notifies twice
# (docs/operations.md#alerting). Grafana does not expand environment variables in annotations or in the
# query model, so $labels, $values and $A below reach the alerting engine as written.
"""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # no &id001 anchors: each rule stays readable on its own
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rendered() -> dict[Path, str]:
    out = {DASHBOARDS / name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARD_BUILDERS.items()}
    out[ALERTING] = ALERTING_HEADER + yaml.dump(grafana_rules(), Dumper=_Dumper, sort_keys=False, width=1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    args = ap.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(HERE.parent)))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
