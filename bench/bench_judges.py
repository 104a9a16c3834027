"""Each shipped judge's agreement with human labels on a gold file, and its cost per 1,000 samples.

Runs `auditd judges validate`'s code (auditd/judges/agreement.py) on a gold file (default: the
XSTest v2 development completions beside the repository, `../shared/gold/xstest-v2-dev.csv`) for
every judge that can run here, and times it on this CPU. Judges that ask a model (rubric, guard,
and any model judge a plugin adds) need weights users provide: they are listed, not run, unless
`--judge-option ID=JSON` gives them a backend spec. With `--before REF` (default: the commit
before the three-way refusal judge) the refusal judge of that git revision runs beside today's, so
the before/after figures come from one run on the same rows.

    python bench/bench_judges.py
    python bench/bench_judges.py --gold my-labels.jsonl --before none
    python bench/bench_judges.py --judge-option 'guard={"backend": {"id": "backend:hf", "model": "/models/lg3"}}'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_GOLD = ROOT / ".." / "shared" / "gold" / "xstest-v2-dev.csv"
BEFORE = "723e335"  # the refusal judge before the three-way, refusal-forms rewrite
NEEDS_MODEL = "needs judge-model weights users provide (--judge-option ID='{\"backend\": {...}}')"


def old_refusal_judge(ref: str):
    """The RefusalJudge class of auditd/judges/refusal.py at git revision `ref`, or None."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:auditd/judges/refusal.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"refusal_{ref}")
    exec(compile(source, f"refusal@{ref}", "exec"), module.__dict__)  # noqa: S102  (our own file, from git)
    return module.RefusalJudge()


def cost_per_1000(judge, items, min_s: float = 1.0) -> float:
    """CPU seconds per 1,000 samples, judging the whole set until at least `min_s` of CPU time."""
    from auditd.judges.base import JudgeInput

    inputs = [JudgeInput(i.prompt, i.output, i.group) for i in items]
    done, start = 0, time.process_time()  # CPU time: robust to other jobs sharing the cores
    while True:
        judge.score(inputs)
        done += len(inputs)
        elapsed = time.process_time() - start
        if elapsed >= min_s:
            return elapsed / done * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gold", type=Path, default=DEFAULT_GOLD)
    ap.add_argument("--before", default=BEFORE, help="git revision of the refusal judge to compare ('none': skip)")
    ap.add_argument(
        "--judge-option",
        action="append",
        default=[],
        metavar="ID=JSON",
        help="options for a model judge, e.g. its backend spec (repeatable)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    from auditd import plugins
    from auditd.judges.agreement import validate
    from auditd.judges.gold import load_gold

    if not args.gold.is_file():
        print(f"no gold file at {args.gold}: pass --gold (XSTest, HarmBench, JailbreakBench, PyRIT or auditd)")
        return 0
    gold = load_gold(args.gold)
    options = {}
    for spec in args.judge_option:
        jid, _, text = spec.partition("=")
        options[jid] = json.loads(text)
    print(f"gold: {gold.name} ({gold.format}, n={len(gold.items)}, tasks: {', '.join(gold.tasks)})")
    print(
        f"{'judge':<22} {'task':<8} {'acc':>6} {'kappa':>6} {'kappa 95% CI':>14} {'prec':>6} {'recall':>6} "
        f"{'F1':>6} {'s/1000':>8}"
    )

    runs = []
    if args.before != "none" and (old := old_refusal_judge(args.before)) is not None:
        runs.append((f"refusal@{args.before}", old, {}))
    judge_ids = [pid.split(":", 1)[1] for pid in plugins.known_ids("judge")]
    for jid in judge_ids:
        cls = plugins.resolve(f"judge:{jid}")
        if getattr(cls, "modality", "text") == "image":
            continue  # image judges: not for text gold files
        try:
            judge = plugins.create(f"judge:{jid}", **options.get(jid, {}))
        except Exception as exc:  # a model judge without its model spec
            print(f"{jid:<22} not run: {NEEDS_MODEL} ({type(exc).__name__})")
            continue
        if jid == "scripted" and jid not in options:
            print(f"{jid:<22} not run: a regex judge for tests, it has no rules of its own")
            continue
        runs.append((jid, judge, options.get(jid, {})))
    for name, judge, opts in runs:
        try:
            report = validate(judge, name, opts, gold, rounds=args.bootstrap)
            cost = cost_per_1000(judge, gold.items)
        except Exception as exc:
            print(f"{name:<22} not run: {NEEDS_MODEL} ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        finally:
            if hasattr(judge, "close"):
                judge.close()
        for task, t in report["tasks"].items():
            ci = t["kappa_ci"] or [float("nan")] * 2
            print(
                f"{name:<22} {task:<8} {t['accuracy']:>6.3f} {t['kappa']:>6.3f} {ci[0]:>6.3f}-{ci[1]:<7.3f} "
                f"{t['precision']:>6.3f} {t['recall']:>6.3f} {t['f1']:>6.3f} {cost:>8.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
