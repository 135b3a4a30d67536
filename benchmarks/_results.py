"""Write one benchmark's section into benchmarks/RESULTS.md without touching the others.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; a
new section is appended. A lock file keeps two benchmarks from writing at once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Every number here was measured by the command shown above its table, on the machine named
there. Peers were run by the same script, on the same split, in the same run. Where ours
loses, the table says so. Regenerate with `make bench` (or one script each).
"""


def machine() -> str:
    """A one-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    import torch

    return (
        f"{os.cpu_count()} cores ({cpu}){mem}, no GPU used, Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def stamp(command: str | None = None) -> str:
    """The standard preamble of a section: command, date, machine, commit."""
    if command is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        name = spec.name if spec is not None and spec.name else Path(sys.argv[0]).stem
        command = " ".join([".venv/bin/python -m", name, *sys.argv[1:]])
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=RESULTS.parent,
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return (
        f"- command: `{command}`\n- date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}\n"
        f"- machine: {machine()}\n- code: commit {commit or 'unknown'}\n"
    )


def peak_rss_mib_now() -> float:
    """This program's peak resident set in MiB: ``VmHWM`` of /proc/self/status, the high-water
    mark of the memory map made at exec. (``ru_maxrss`` would be wrong for a benchmark run as a
    child process: Linux carries the launching process's peak across fork + exec, so every run
    would report at least its driver's size.)"""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load_note(threads: int, load: float) -> str:
    """Says whether other jobs ran beside a benchmark, from the 1-minute load average."""
    if load != load:  # NaN: a run from before the load was recorded
        return "load average not recorded"
    if load > threads + 0.5:
        return (
            f"1-minute load average {load:.1f} at the end of the run, above its {threads} "
            "thread(s): other jobs shared the cores, so times are inflated"
        )
    return f"1-minute load average {load:.1f} at the end of the run: no other heavy job"


def write_section(name: str, markdown: str) -> Path:
    """Replace (or append) section ``name`` of RESULTS.md with ``markdown``."""
    lock = RESULTS.with_suffix(".lock")
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = RESULTS.read_text() if RESULTS.exists() else HEADER
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        block = f"{start}\n{markdown.strip()}\n{end}"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            _, after = rest.split(end, 1)
            text = before + block + after
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        RESULTS.write_text(text)
    return RESULTS


def add_report_flag(parser: Any) -> None:
    """The ``--report PATH`` option every benchmark script offers."""
    parser.add_argument(
        "--report",
        type=Path,
        help="also write the section as one self-contained HTML file with plots (the "
        "report shoprec evaluate --report writes), peers beside ours",
    )


def write_html_report(
    path: Path,
    title: str,
    rows: Mapping[str, Mapping[str, Any]],
    ours: Sequence[str],
    *,
    subtitle: str = "",
    notes: Sequence[str] = (),
    **parts: Any,
) -> Path:
    """A benchmark section as the same HTML report ``shoprec evaluate --report`` writes.

    Args:
        path: the ``.html`` file.
        title: the section's title.
        rows: model -> {metric -> number or (value, low, high)}; ours and the peers.
        ours: the rows that are ours (highlighted).
        subtitle: one line under the title (command, data, commit are added).
        notes: paragraphs (the protocol, where ours loses, ...).
        **parts: any other :class:`shoprec.evaluate.report.Report` field (``slices``,
            ``history``, ``exposure``, ``recommendations`` with ``popularity``, ...).

    Returns:
        The path written.
    """
    from shoprec.evaluate.report import Report, write_report

    clean = {
        name: {
            k: v
            for k, v in row.items()
            if isinstance(v, int | float | tuple | list) and not isinstance(v, bool)
        }
        for name, row in rows.items()
    }
    line = " ".join(stamp().replace("- ", "").splitlines())
    report = Report(
        title,
        subtitle=f"{subtitle} | {line}" if subtitle else line,
        metrics=clean,
        ours=list(ours),
        notes=list(notes),
        **parts,
    )
    return write_report(path, report)
