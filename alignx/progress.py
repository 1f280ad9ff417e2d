"""How a long library call reports progress to whoever runs it: a Prefect task's progress artifact, the
launcher reading a worker process's messages, or nothing."""

from __future__ import annotations

from collections.abc import Callable

# ``progress(done, total, detail)``: ``done`` of ``total`` units of work; ``detail`` says what runs now
# (a label: "collect tatoeba en-de") or how it goes (the training loop's latest losses by name).
Progress = Callable[[int, int, str | dict[str, float]], None]
