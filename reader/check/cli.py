"""`python -m reader.check` / `facegrid-check`: check one split's shards before anyone trains on them.

    python -m reader.check --data_dir=shards --split=val [--json] [--sheet=val.png] [--report=DIR]
    python -m reader.check --data_dir=s3://bucket/shards --split=val [--s3_endpoint_url=URL]

--data_dir may be local, gs:// or s3://, every scheme a build writes. s3:// goes through boto3
with its standard configuration (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL, ~/.aws); the build's S3 flags (Beam's: --s3_endpoint_url, --s3_region_name,
--s3_access_key_id, --s3_secret_access_key, --s3_session_token, --s3_api_version, --s3_verify,
--s3_disable_ssl) override it, so the build's command line's S3 flags work here as they are.

Checks the shard set against the manifest, every record's framing, schema, image, value
ranges and targets (recomputed from its boxes), duplicates and leakage between splits, and the
manifest's counts; prints pass/fail per check, the first problems as `shard:record: check:
message`, and dataset statistics. Exit status: 0 when every check passes, 1 when any fails,
2 on bad usage. `--sheet` also draws sample records with their boxes and grid targets; `--report`
writes the dataset report (plots, report.html, report.json; see reader.check.report.dataset).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from reader.check.report import contact_sheet
from reader.check.report import dataset as dataset_report
from reader.check.split import SplitCheck, check_split
from reader.core import layout, progress, storage

PROGRAM = "facegrid-check"
SCHEMES = ("file", "gs", "s3")  # every scheme a build writes


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "data_dir", None, "Directory holding the split's shards and manifest (local, gs:// or s3://).", flag_values=fv
    )
    flags.DEFINE_enum("split", None, list(layout.SPLITS), "Split to check.", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print the report as JSON instead of the summary.", flag_values=fv)
    flags.DEFINE_string(
        "sheet", None, "Also write a contact sheet of sample records to this file (.png, or .jpg for JPEG).", flag_values=fv
    )
    flags.DEFINE_string(
        "report",
        None,
        "Also write the dataset report (plots, report.html, report.json) into this directory; NAME.html: the page alone, plots inside.",
        flag_values=fv,
    )
    flags.DEFINE_integer("sheet_samples", 16, "Records on the contact sheet.", lower_bound=1, upper_bound=256, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the contact sheet's sample.", flag_values=fv)
    flags.DEFINE_integer("workers", 0, "Worker processes; 0 for one per core.", lower_bound=0, flag_values=fv)
    flags.DEFINE_boolean("leakage", True, "Look for source images shared with the other splits in --data_dir.", flag_values=fv)
    flags.DEFINE_integer(
        "max_problems", 20, "Problems listed in the summary (--json lists them all).", lower_bound=0, flag_values=fv
    )
    flags.DEFINE_enum(
        "progress",
        "auto",
        ["auto", "always", "never"],
        "Progress on stderr: a bar on a terminal, else a line every 15 s; never: none (auto and always alike).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "s3_endpoint_url",
        None,
        "S3 endpoint for s3:// paths, as the build's Beam flag (default: boto3's, e.g. AWS_ENDPOINT_URL).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "s3_region_name",
        None,
        "S3 region for s3:// paths, as the build's Beam flag (default: boto3's, e.g. AWS_DEFAULT_REGION).",
        flag_values=fv,
    )
    for name, meaning in S3_FLAGS.items():
        flags.DEFINE_string(
            name, None, f"{meaning} for s3:// paths, as the build's Beam flag (default: boto3's).", flag_values=fv
        )
    flags.DEFINE_boolean("s3_disable_ssl", False, "Plain HTTP to S3, as the build's Beam flag.", flag_values=fv)


S3_FLAGS = {  # the build's other S3 flags (Beam's S3Options), taken as they are
    "s3_access_key_id": "S3 access key id",
    "s3_secret_access_key": "S3 secret access key",
    "s3_session_token": "S3 session token",
    "s3_api_version": "S3 API version",
    "s3_verify": "Whether to verify S3's certificate, or the CA bundle to verify it with",
}


class UsageError(ValueError):
    """Bad command line: exit status 2."""


def parse_args(argv: list[str]) -> flags.FlagValues:
    """Parses argv (argv[0] is the program); raises UsageError saying what is wrong."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        rest = fv(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from None
    if len(rest) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(rest[1:])}")
    missing = [name for name in ("data_dir", "split") if fv[name].value is None]
    if missing:
        raise UsageError("missing required flags: " + ", ".join(f"--{m}" for m in missing))
    if storage.is_local(fv.data_dir) and not os.path.isdir(fv.data_dir.removeprefix("file://")):
        raise UsageError(f"--data_dir={fv.data_dir}: no such directory")
    if storage.scheme(fv.data_dir) not in SCHEMES:
        raise UsageError(f"--data_dir={fv.data_dir}: expected a local, gs:// or s3:// path")
    if fv.sheet is not None:
        parent = os.path.dirname(os.path.abspath(fv.sheet))
        if not os.path.isdir(parent):
            raise UsageError(f"--sheet={fv.sheet}: no directory {parent} to write it in")
        if contact_sheet.image_format(fv.sheet) is None:
            raise UsageError(f"--sheet={fv.sheet}: expected a file name ending in {', '.join(contact_sheet.FORMATS)}")
    if fv.report is not None:
        parent = os.path.dirname(os.path.abspath(fv.report))
        if os.path.exists(fv.report) and not os.path.isdir(fv.report) and not _one_page(fv.report):
            raise UsageError(f"--report={fv.report}: not a directory (or a file name ending in .html)")
        if not os.path.isdir(parent):
            raise UsageError(f"--report={fv.report}: no directory {parent} to write it in")
    return fv


def _one_page(report: str) -> bool:
    """--report=NAME.html: the page alone (its plots inside it), not a directory."""
    return report.lower().endswith((".html", ".htm")) and not os.path.isdir(report)


def _help() -> str:
    fv = flags.FlagValues()
    define_flags(fv)
    lines = [__doc__.strip(), "", "flags:"]
    for name in sorted(fv):
        flag = fv[name]
        if name in ("flagfile", "undefok"):
            continue
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        lines.append(f"  --{name}: {flag.help}{default}")
    return "\n".join(lines)


def run(argv: list[str]) -> tuple[SplitCheck, flags.FlagValues]:
    """Checks the split the flags name (argv[0] is the program); raises UsageError on bad flags."""
    fv = parse_args(argv)
    # Counts the records read, the other splits' for leakage included: a bar on a terminal, a line
    # every 15 s elsewhere (logs), as the build does; --progress=never: nothing.
    bar = (
        None
        if fv.progress == "never"
        else progress.Progress(f"checking {fv.split}", unit="records read", stream=sys.stderr, redraw=0.1)
    )
    storage.configure_s3(s3_settings(fv))
    result = check_split(fv.data_dir, fv.split, workers=fv.workers or None, leakage=fv.leakage, progress=bar)
    return result, fv


def s3_settings(fv: flags.FlagValues) -> storage.S3Settings:
    others = {name.removeprefix("s3_"): fv[name].value for name in S3_FLAGS}
    return storage.S3Settings(
        endpoint_url=fv.s3_endpoint_url, region_name=fv.s3_region_name, disable_ssl=fv.s3_disable_ssl, **others
    )


def main(argv: list[str] | None = None) -> int:
    """The console script: 0 when every check passes, 1 when any fails, 2 on bad usage."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help", "--helpfull", "-help") for a in argv):
        print(_help())
        return 0
    previous = storage.s3_settings()
    try:
        return _main(argv)
    finally:
        storage.configure_s3(previous)  # the flags hold for this run only (tests call main in-process)


def _main(argv: list[str]) -> int:
    try:
        result, fv = run([PROGRAM, *argv])
    except UsageError as e:
        print(f"{PROGRAM}: {e}\nTry --help for every flag.", file=sys.stderr)
        return 2
    report = result.report
    sheet_note = None
    if fv.sheet is not None:
        try:
            shown = contact_sheet.write(result, fv.sheet, samples=fv.sheet_samples, seed=fv.seed)
            sheet_note = f"wrote contact sheet of {shown} records: {fv.sheet}"
        except OSError as e:  # a shard gone since it was checked, the sheet's file unwritable
            print(f"{PROGRAM}: contact sheet not written: {e}", file=sys.stderr)
    report_note = None
    if fv.report is not None:
        try:
            if _one_page(fv.report):
                dataset_report.write_html(result, fv.report)
            else:
                dataset_report.write(result, fv.report)
            report_note = f"wrote dataset report: {fv.report if _one_page(fv.report) else os.path.join(fv.report, 'report.html')}"
        except (OSError, dataset_report.ReportError) as e:  # no statistics, a shard changed since, unwritable
            print(f"{PROGRAM}: dataset report not written: {e}", file=sys.stderr)
        except ImportError as e:  # matplotlib, which only the report needs
            print(f"{PROGRAM}: dataset report not written: it draws with matplotlib ({e})", file=sys.stderr)
    notes = [note for note in (sheet_note, report_note) if note]
    if fv.json:
        out = report.as_json()
        out["sheet"] = fv.sheet
        out["report"] = fv.report
        print(json.dumps(out, indent=2))
        for note in notes:
            print(note, file=sys.stderr)
    else:
        print(report.summary(max_problems=fv.max_problems))
        for note in notes:
            print(note)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
