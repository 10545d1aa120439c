"""What a finished search says last: its verdict, why every trial failed (when they all
did), and the next commands to type.

    print(verdict(frame, family, "mobilevit_s"))
    print("\n".join(next_steps(settings, outcome, command=" ".join)))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from rhosearch.core.space import baseline_config
from rhosearch.drivers.search_settings import SearchSettings
from rhosearch.execution.searcher import (
    STAGE,
)
from rhosearch.record.stats import Family, verdict_sentence
from rhosearch.vocab import Stage, Status

__all__ = ["all_failed", "next_steps", "verdict"]


def verdict(frame: pd.DataFrame, family: Family | None, backbone: str) -> str:
    """The sentences a search summary ends with (`stats.verdict_sentence`): which proxy
    configurations differ from the baseline at 5 % over those compared (Holm), the pairing
    correlation, and what the search could have seen at its measured trial time."""
    trained = frame[frame["stage"].isin([STAGE, Stage.RESOLVE])
                    & (frame["status"] == Status.OK)]
    wall = pd.to_numeric(trained["wall_s"], errors="coerce").dropna()
    return verdict_sentence(family, baseline_name=baseline_config(backbone).name,
                            trial_s=float(wall.median()) if len(wall) else None)


def all_failed(frame: pd.DataFrame) -> str | None:
    """Why every proxy trial failed, in one line (the reasons counted), or None when one did
    not: a search with nothing measured must say so and exit non-zero, not print an empty front.
    """
    proxy = frame[(frame["stage"] == STAGE) & frame["status"].notna()
                  & (frame["status"] != Status.NOT_RUN)]
    if proxy.empty or (proxy["state"] == "COMPLETE").any():
        return None
    reasons = proxy["reason"].fillna(proxy["status"]).astype(str).value_counts()
    return (f"every proxy trial failed ({len(proxy)}): "
            + "; ".join(f"{reason} ({count}x)" if count > 1 else reason
                        for reason, count in reasons.items()))


def next_steps(settings: SearchSettings, outcome: dict[str, Any], *,
               command: Callable[[list[str]], str]) -> list[str]:
    """What a finished search prints last: the command that trains its finalists (the study's
    own flags, real paths) and what would settle the differences it could not.

    `command` turns flags into the line to type (the CLI knows the program's name)."""
    flags = ["train-best", "--study", settings.study]
    if settings.storage:
        flags += ["--storage", settings.storage]
    if Path(settings.reports_dir).resolve() != Path("reports").resolve():
        flags += ["--reports-dir", str(settings.reports_dir)]
    if settings.address:
        flags += ["--address", settings.address]
    budget = settings.budget
    flags += ["--epochs", "2", "--budget", (f"{budget.gpus:g}gpus" if budget.gpus else
                                             f"{int(budget.cpus or 1)}cpus")]
    done = outcome["trials"]
    done = done[(done["stage"] == STAGE) & (done["state"] == "COMPLETE")]
    study_command = ["search", *flags[1:flags.index("--epochs")]]  # this study's search
    searched = []
    if settings.space.name != "exmobilevit_s":
        searched += ["--space", settings.space.source]
    if settings.data != "digits":
        searched += ["--data", settings.data]
    if len(done):
        lines = [f"next: {command(flags)}   (the knee and the best of the front and the "
                 "baseline control, with the full recipe; a first look in minutes, drop "
                 "--epochs for the recipe's own)"]
    elif settings.stage in (Stage.ONESHOT, Stage.HEAD):  # a screen alone trains no finalist
        return [f"next: the proxy trials on this study: "
                f"{command([*study_command, '--resume', '--stage', str(Stage.PROXY), *searched])}"]
    else:
        return ["next: nothing to train: no proxy trial completed (see the reasons above)"]
    resolve = outcome.get("resolve") or {}
    undecided = [rho for rho, (status, *_) in resolve.get("decisions", {}).items()
                 if status in ("open", "capped")]
    noise = outcome["noise"] or {}
    again = [*study_command, "--stage", str(Stage.RESOLVE), *searched]
    if noise.get("std") is None:
        lines.append("open: no noise floor was measured (--noise-seeds 0), so no difference "
                     "can be judged; search again with --noise-seeds 3")
    elif undecided:
        more = 2 * max(1, resolve.get("max_seeds", 1) - 1)
        lines.append(
            f"open: {len(undecided)} contender(s) still within noise of the baseline after "
            f"{resolve.get('max_seeds')} paired seeds ({', '.join(undecided)}); race them "
            f"further with: {command([*again, '--resolve-seeds', str(more)])}")
    elif not resolve:
        lines.append("open: the contenders were not raced with paired seeds; "
                     f"{command(again)} does")
    else:
        lines.append("open: none the proxy can settle: every contender raced is separated "
                     "from the baseline or not worth more seeds (see the verdict above)")
    return lines
