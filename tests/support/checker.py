"""Running the checker in the tests: its command line in this process, and what its --json report says."""

from __future__ import annotations

import json

from reader.check import cli as check
from tests.support.build_edits import SPLIT


def run_check(data_dir, *flags: str, capsys) -> tuple[int, dict]:
    """Runs `facegrid-check --json` in this process (one worker); returns (exit status, report)."""
    capsys.readouterr()
    code = check.main([f"--data_dir={data_dir}", f"--split={SPLIT}", "--json", "--workers=1", "--progress=never", *flags])
    out = capsys.readouterr().out
    return code, json.loads(out)


def failed(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if c["status"] == "fail"}


def problems(report: dict, check_name: str) -> list[tuple[str, int | None, str]]:
    return [(p["file"], p["record"], p["message"]) for p in report["problems"] if p["check"] == check_name]
