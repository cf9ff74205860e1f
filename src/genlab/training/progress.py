"""A rich progress bar for training: step, loss, throughput, elapsed and remaining time."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, start: int, enabled: bool = True, unit: str = "img/s"):
        self.enabled, self.unit = enabled, unit
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
        self.task = self.progress.add_task("train", total=total, completed=start, loss="-", speed="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, items_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=f"{loss:.4g}", speed=f"{items_per_s:,.0f} {self.unit}")
