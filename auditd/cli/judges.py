"""`auditd judges validate`: measure judges against human-labelled answers, store the figures."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

judges_app = typer.Typer(help="Judges: agreement with human labels.")
console = Console()
err = Console(stderr=True)


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@judges_app.command("validate")
def validate(
    gold: list[Path] = typer.Argument(
        ..., help="Gold files: XSTest, HarmBench, JailbreakBench, PyRIT CSV or auditd JSONL."
    ),
    judge: list[str] | None = typer.Option(None, "--judge", help="Judge id (repeatable; default: refusal)."),
    policy: str | None = typer.Option(None, "--policy", help="Take judge options from this policy's judge_options."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    rounds: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for kappa's 95% interval."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store the figures (verdicts and /metrics use them)."),
    home: Path | None = typer.Option(None, "--home", help="State folder (AUDITD_HOME)."),
    db: str | None = typer.Option(None, "--db", help="Database URL (AUDITD_DB_URL)."),
):
    """Agreement of each judge with each gold file: accuracy, P/R/F1, kappa (bootstrap 95% CI),
    confusion matrix, per-group breakdown, worst disagreements. Exit 2 on a malformed file."""
    from auditd import plugins
    from auditd.cli.common import fail, load_settings
    from auditd.judges.agreement import validate as run_validation
    from auditd.judges.gold import GoldError, load_gold

    try:
        gold_sets = [load_gold(p) for p in gold]
    except GoldError as exc:
        fail(str(exc))
    settings = load_settings(home=home, db=db)
    options_of: dict = {}
    if policy:
        from auditd.policy.load import PolicyError, resolve_policy

        try:
            options_of = resolve_policy(policy, settings.policies_dir).judge_options
        except PolicyError as exc:
            fail(str(exc))
    reports = []
    for judge_id in judge or ["refusal"]:
        options = dict(options_of.get(judge_id, {}))
        try:
            instance = plugins.create(f"judge:{judge_id}", **options)
        except Exception as exc:  # an unknown id, a missing model path: one line, not a traceback
            fail(f"judge {judge_id!r}: {' '.join(str(exc).split())[:300]}")
        try:
            for g in gold_sets:
                reports.append(run_validation(instance, judge_id, options, g, rounds=rounds, seed=seed))
        except Exception as exc:
            fail(f"judge {judge_id!r} failed: {' '.join(str(exc).split())[:300]}")
        finally:
            if hasattr(instance, "close"):
                instance.close()
    if store:
        from auditd.judges.validations import store_validation
        from auditd.store.db import open_db, session

        with session(open_db(settings.database_url)) as s:
            for r in reports:
                store_validation(s, r)
            s.commit()
    if as_json:
        print(json.dumps(reports, indent=2, default=str))
        return
    for r in reports:
        render(console, r)


def render(out: Console, r: dict) -> None:
    out.rule(f"judge {r['judge']}  ·  {r['gold']} ({r['format']}, n={r['n']})")
    for t in r["tasks"].values():
        ci = t["kappa_ci"]
        head = Table(title=f"{t['task']}: positive class = {'refusal' if t['task'] == 'refusal' else 'harmful'}")
        for col in ("n", "accuracy", "precision", "recall", "F1", "kappa", "kappa 95% CI", "errors", "degenerate"):
            head.add_column(col, justify="right")
        head.add_row(
            str(t["n"]),
            _fmt(t["accuracy"]),
            _fmt(t["precision"]),
            _fmt(t["recall"]),
            _fmt(t["f1"]),
            _fmt(t["kappa"]),
            f"{_fmt(ci[0])}-{_fmt(ci[1])}" if ci else "-",
            str(t["n_errors"]),
            str(t["n_degenerate"]),
        )
        out.print(head)
        c = t["confusion"]
        conf = Table(title="confusion (rows: human, columns: judge)")
        conf.add_column("")
        conf.add_column("judge +", justify="right")
        conf.add_column("judge -", justify="right")
        conf.add_row("human +", str(c["tp"]), str(c["fn"]))
        conf.add_row("human -", str(c["fp"]), str(c["tn"]))
        out.print(conf)
        if t.get("confusion_three_way"):
            m = t["confusion_three_way"]
            cols = list(next(iter(m.values())))
            three = Table("human \\ judge", *cols, title="three-way")
            for g, row in m.items():
                three.add_row(g, *(str(row[c]) for c in cols))
            out.print(three)
        groups = Table("group", "n", "accuracy", "human +", "judge +", title="by group")
        for name, g in t["by_group"].items():
            groups.add_row(
                name, str(g["n"]), _fmt(g["accuracy"]), str(g["gold_positive"]), str(g["predicted_positive"])
            )
        out.print(groups)
        worst = Table("line", "group", "human", "judge", "answer", title="worst disagreements", show_lines=True)
        for w in t["worst_disagreements"]:
            worst.add_row(str(w["line"]), w["group"], w["gold"], w["judge"], w["output"][:160].replace("\n", " "))
        out.print(worst)
