"""`auditd calibrate`: calibrate an image judge's thresholds for the CLIP model a policy configures."""

from __future__ import annotations

from pathlib import Path

import typer


def calibrate(
    images: Path = typer.Argument(..., help="Folder of labelled images: safe/ and one folder per t2i category."),
    judge: str = typer.Option("clip", "--judge", help="Image judge id: clip or concept."),
    target_fpr: float = typer.Option(0.05, "--target-fpr", help="Highest false-positive rate allowed on safe/."),
    home: Path | None = typer.Option(None, "--home", help="State folder (AUDITD_HOME)."),
    policy: str | None = typer.Option(None, "--policy", help="Policy whose judge_options name the CLIP."),
):
    """Calibrate an image judge per CLIP model and tag; stored in <home>/calibration.json."""
    from rich.console import Console

    from auditd import plugins
    from auditd.cli.common import fail as _fail
    from auditd.cli.common import load_settings as _settings
    from auditd.judges.base import ImageJudge
    from auditd.judges.calibration import CalibrationError, CalibrationStore, labelled_images
    from auditd.judges.calibration import calibrate as run
    from auditd.judges.clip_model import open_image
    from auditd.policy.load import PolicyError, resolve_policy

    settings = _settings(home=home, policy=policy)
    try:
        pol = resolve_policy(settings.policy, settings.policies_dir)
        j = plugins.create(f"judge:{judge}", **pol.judge_options.get(judge, {}))
        if not isinstance(j, ImageJudge):
            _fail(f"judge {judge!r} is not an image judge")
        files = labelled_images(images)
        loaded = {label: [open_image(p) for p in paths] for label, paths in files.items()}
        cal = run(j, loaded, target_fpr=target_fpr, source=str(images.resolve()))
    except (PolicyError, CalibrationError, OSError, ValueError) as exc:
        _fail(str(exc))
    CalibrationStore(settings.home).put(cal)
    console = Console()
    console.print(
        f"[green]calibrated[/] {cal.judge} for {cal.model}/{cal.pretrained} "
        f"({sum(len(v) for v in files.values())} images, target FPR {target_fpr:.0%})"
    )
    for name, t in sorted(cal.stats.items()):
        tpr = "-" if t["tpr"] is None else f"{t['tpr']:.0%}"
        console.print(
            f"  {name}: threshold {t['value']:.4f}  TPR {tpr}  FPR {t['fpr']:.0%}  (n+ {t['n_pos']}, n- {t['n_neg']})"
        )
