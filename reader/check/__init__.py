"""The checker: `python -m reader.check` validates one split's shards before anyone trains on them.

    cli             the command line (`python -m reader.check`, `facegrid-check`)
    split           one split checked: `check_split`, the sequence of steps from manifest to report
    runner          how the work is run: tasks planned in chunks, run inline or in worker processes
    manifest        the checks of what the manifest promises (keys, shard set, errors file, counts)
    shards          the work on shard files: index, hash, check their records in worker processes
    records         the per-record checks: one serialized record in, its problems and facts out
    across_records  the checks across a split's records: placement, duplicates, leakage
    stats           dataset statistics for the report
    findings        what was found, shown for people or as JSON
    report/         the pictures of a checked split (`--sheet`, `--report`), apart from the checks
No TensorFlow: Pillow decodes the stored images.
"""
