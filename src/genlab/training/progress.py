"""Training progress: a rich bar on a terminal, a plain line every `every_s` seconds otherwise (a log file, nohup,
CI, a cluster job), so long work is never silent. With a wall-clock budget both count time (used and left),
not steps toward a bound nobody will reach."""

from __future__ import annotations

from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def clock(seconds: float) -> str:
    """1:02:03 or 2:03."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class TrainProgress:
    def __init__(self, total: int, start: int, enabled: bool = True, unit: str = "img/s", *, budget_s: float = 0.0,
                 log: Callable[[str], None] = print, every_s: float = 30.0, terminal: bool | None = None):
        self.enabled, self.unit, self.total, self.start, self.budget = enabled, unit, total, start, budget_s
        self.log, self.every, self.next_line = log, every_s, 0.0
        self.first: tuple[int, float] | None = None   # (step, elapsed) at the first update
        self.terminal = Console(stderr=True).is_terminal if terminal is None else terminal
        live = enabled and self.terminal
        if budget_s:  # the bar fills with time; the step count is a field
            columns = [TextColumn("[bold]train"), BarColumn(), TextColumn("step {task.fields[step]}"),
                       TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                       TextColumn("{task.fields[used]} used, {task.fields[left]} left")]
            self.progress = Progress(*columns, disable=not live)
            self.task = self.progress.add_task("train", total=budget_s, completed=0, step=start, loss="-", speed="",
                                               used="0:00", left=clock(budget_s))
        else:
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not live)
            self.task = self.progress.add_task("train", total=total, completed=start, loss="-", speed="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def left(self, step: int, elapsed: float) -> float | None:
        """Seconds left: of the budget, or at the rate since the first update."""
        if self.budget:
            return max(0.0, self.budget - elapsed)
        s0, e0 = self.first
        return (self.total - step) * (elapsed - e0) / (step - s0) if step > s0 else None

    def update(self, step: int, loss: float, items_per_s: float, *, lr: float | None = None,
               elapsed: float = 0.0) -> None:
        speed, loss_text = f"{items_per_s:,.0f} {self.unit}", f"{loss:.4g}"
        self.first = self.first or (step, elapsed)
        left = self.left(step, elapsed)
        if self.budget:
            self.progress.update(self.task, completed=min(elapsed, self.budget), step=f"{step:,}", loss=loss_text,
                                 speed=speed, used=clock(elapsed), left=clock(left))
        else:
            self.progress.update(self.task, completed=step, loss=loss_text, speed=speed)
        if self.enabled and not self.terminal and elapsed >= self.next_line:
            self.next_line = elapsed + self.every
            of = f"step {step:,}" + ("" if self.budget else f"/{self.total:,} ({100 * step / self.total:.0f}%)")
            self.log(f"{of}, loss {loss_text}, {speed}" + (f", lr {lr:.3g}" if lr is not None else "")
                     + f", {clock(elapsed)} elapsed" + (f", {clock(left)} left" if left is not None else "")
                     + (f" of a {clock(self.budget)} budget" if self.budget else ""))
