"""The checker: `python -m reader.check` validates one split's shards before anyone trains on them.

    cli            the command line (`python -m reader.check`, `facegrid-check`)
    split          one split checked: the task runner over every shard and record
    manifest       the checks of what the manifest promises (keys, shard set, errors file, counts)
    shards         the work on shard files: index, hash, check their records in worker processes
    records        the per-record checks: one serialized record in, its problems and facts out
    stats          dataset statistics for the report
    report         what was found, shown for people or as JSON
    contact_sheet  sample records drawn with their grid, so a person sees targets sit on faces
    dataset_report `--report=DIR`: the checked split in plots
No TensorFlow: Pillow decodes the stored images.
"""
