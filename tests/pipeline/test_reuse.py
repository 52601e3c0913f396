"""Incremental builds (pipeline/reuse.py): a build takes the images an earlier build prepared
from the same source bytes, and writes exactly what a clean (--noreuse) build of the same inputs
writes. Reuse goes by the source's content, never its path; nothing of a damaged or incompatible
earlier build is trusted, and the build says what it did not take.

Every build here is of the checked-in fixture set (16 images, 10 usable) in 3 shards, in memory
unless a test says otherwise. Builds other tests start from are built once per module and copied
before a test rebuilds over them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline import cli, reuse
from reader.core import manifest as manifests
from reader.core import schema, storage, tfrecord
from reader.core.config import BuildConfig
from tests.support import build_edits, builds
from tests.support import incremental as inc
from tests.support.incremental import FLAGS, IN_MEMORY, MANIFEST, SPLIT
from tests.support.paths import FIXTURE_ANNOTATIONS, FIXTURE_IMAGES

ANNOTATED, USABLE = 16, 10
REPLACED = "0--Parade/0_Parade_rgb_1.jpg"  # a usable image, the one the tests replace or move a box of


# ---- reuse by content -------------------------------------------------------------------------


def test_a_rebuild_in_place_reuses_every_usable_image_and_writes_the_clean_builds_bytes(first, clean, tmp_path):
    """The default: the build in --output_dir is the earlier one. Every usable image is taken
    from it (the unusable ones have nothing to reuse), and what is written is exactly what
    preparing everything again writes."""
    out = build_edits.copy_build(first, tmp_path / "out")
    result = inc.build(out)
    found = inc.files(out)
    assert inc.reuse_block(found) == {"from": inc.first_id(first), "reused": USABLE, "prepared": ANNOTATED - USABLE, "notes": []}
    assert inc.counters(result) == {"images_reused": USABLE, "images_prepared": ANNOTATED - USABLE}
    inc.assert_same_as_clean(found, clean())
    assert inc.manifest(found)["build"] != inc.first_id(first)


def test_a_moved_images_folder_still_reuses(first, clean, tmp_path):
    """Reuse is by content, never by path: the same images under another directory are the same
    sources. --reuse_from names the earlier build, which is read and left as it was."""
    moved = shutil.copytree(FIXTURE_IMAGES, tmp_path / "elsewhere" / "pictures")
    before = inc.files(first)
    result = inc.build(tmp_path / "out", f"--reuse_from={first}", images=moved)
    found = inc.files(tmp_path / "out")
    assert inc.reuse_block(found) == {"from": inc.first_id(first), "reused": USABLE, "prepared": ANNOTATED - USABLE, "notes": []}
    assert inc.counters(result)["images_reused"] == USABLE
    inc.assert_same_as_clean(found, clean(images=moved))  # its errors file names the moved directory
    assert inc.files(first) == before


def test_another_shard_count_still_reuses_and_writes_the_clean_builds_bytes(first, clean, tmp_path):
    """The earlier build's shard count is its own: records are found by their source, wherever
    they lie, and every record is rewritten into this build's shards."""
    inc.build(tmp_path / "out", f"--reuse_from={first}", "--num_shards=5")
    found = inc.files(tmp_path / "out")
    assert inc.reuse_block(found)["reused"] == USABLE and len(inc.manifest(found)["shards"]) == 5
    inc.assert_same_as_clean(found, clean("--num_shards=5"))


def test_a_file_replaced_under_the_same_name_is_prepared_again(first, clean, tmp_path):
    """Reuse is never by path: another image under an earlier image's name is another source
    (its sha256 differs), so it is prepared from its own bytes; the others are still reused."""
    images = shutil.copytree(FIXTURE_IMAGES, tmp_path / "images")
    with Image.open(images / REPLACED) as im:
        im.load()
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=40)
    assert buffer.getvalue() != (FIXTURE_IMAGES / REPLACED).read_bytes()
    (images / REPLACED).write_bytes(buffer.getvalue())

    result = inc.build(tmp_path / "out", f"--reuse_from={first}", images=images)
    found = inc.files(tmp_path / "out")
    assert inc.reuse_block(found) == {
        "from": inc.first_id(first),
        "reused": USABLE - 1,
        "prepared": ANNOTATED - USABLE + 1,
        "notes": [],
    }
    assert inc.counters(result) == {"images_reused": USABLE - 1, "images_prepared": ANNOTATED - USABLE + 1}
    inc.assert_same_as_clean(found, clean(images=images))
    assert inc.records(found)[REPLACED].image != inc.records(inc.files(first))[REPLACED].image


def test_a_moved_box_reuses_the_image_and_recomputes_its_targets(first, clean, tmp_path):
    """Boxes and targets always come from the current annotations: an edited box needs no image
    prepared again, and gives the targets a clean build gives."""
    text = FIXTURE_ANNOTATIONS.read_text()
    old = f"{REPLACED}\n1\n106 28 94 75 "
    assert old in text
    annotations = tmp_path / FIXTURE_ANNOTATIONS.name
    annotations.write_text(text.replace(old, f"{REPLACED}\n1\n20 120 60 50 ", 1))

    inc.build(tmp_path / "out", f"--reuse_from={first}", annotations=annotations)
    found = inc.files(tmp_path / "out")
    assert inc.reuse_block(found)["reused"] == USABLE
    inc.assert_same_as_clean(found, clean(annotations=annotations))
    now, then = inc.records(found)[REPLACED], inc.records(inc.files(first))[REPLACED]
    assert now.image == then.image
    assert not (now.boxes.tolist() == then.boxes.tolist() and now.grid.tolist() == then.grid.tolist())


def test_other_jpeg_quality_reuses_nothing_and_says_why(first, clean, tmp_path):
    """jpeg_quality decides the stored bytes: an earlier build stored with another quality has
    no image this build may take, and its note names the setting."""
    result = inc.build(tmp_path / "out", f"--reuse_from={first}", "--jpeg_quality=80")
    found = inc.files(tmp_path / "out")
    block = inc.reuse_block(found)
    assert (block["reused"], block["prepared"]) == (0, ANNOTATED)
    assert inc.counters(result).get("images_reused", 0) == 0
    assert len(block["notes"]) == 1 and "jpeg_quality" in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean("--jpeg_quality=80"))


def test_target_only_settings_still_reuse(first, clean, tmp_path):
    """grid_size and min_face_px only change targets, which are recomputed from the annotations:
    every image is reused and the bytes are a clean build's with those flags."""
    flags = ("--grid_size=5", "--min_face_px=12")
    inc.build(tmp_path / "out", f"--reuse_from={first}", *flags)
    found = inc.files(tmp_path / "out")
    assert inc.reuse_block(found) == {"from": inc.first_id(first), "reused": USABLE, "prepared": ANNOTATED - USABLE, "notes": []}
    inc.assert_same_as_clean(found, clean(*flags))
    assert inc.manifest(found)["counts"] != inc.manifest(clean())["counts"]  # the flags did change the targets


# ---- nothing damaged is trusted ---------------------------------------------------------------


def _rebuild_damaged(first, tmp_path, damage) -> tuple[dict[str, bytes], dict, dict[str, int]]:
    """Copies the first build, damages it, rebuilds in place: (files, reuse block, counters)."""
    out = build_edits.copy_build(first, tmp_path / "out")
    manifest = json.loads((out / MANIFEST).read_text())
    damage(out, manifest)
    result = inc.build(out)
    found = inc.files(out)
    return found, inc.reuse_block(found), inc.counters(result)


def test_a_flipped_byte_in_an_earlier_shard_has_its_images_prepared_again(first, clean, tmp_path):
    """A record whose checksum fails: none of its shard's records are trusted."""
    entry = json.loads((first / MANIFEST).read_text())["shards"][0]

    def flip(out, manifest):
        path = out / entry["file"]
        span = inc.spans(path)[1]
        data = bytearray(path.read_bytes())
        data[span.offset + tfrecord.HEADER_BYTES + span.length // 2] ^= 0x40
        path.write_bytes(bytes(data))

    found, block, counters = _rebuild_damaged(first, tmp_path, flip)
    assert block["reused"] == USABLE - entry["records"]
    assert counters["images_reused"] == USABLE - entry["records"]
    assert len(block["notes"]) == 1 and entry["file"] in block["notes"][0] and "checksum" in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean())


def test_an_earlier_shard_cut_at_a_record_boundary_is_not_trusted(first, clean, tmp_path):
    """Every record's checksum is right, but the shard is not the one its manifest lists (size,
    sha256, record count): none of it is reused."""
    entry = json.loads((first / MANIFEST).read_text())["shards"][0]

    def cut(out, manifest):
        path = out / entry["file"]
        path.write_bytes(path.read_bytes()[: inc.spans(path)[2].offset])

    found, block, _ = _rebuild_damaged(first, tmp_path, cut)
    assert block["reused"] == USABLE - entry["records"]
    assert len(block["notes"]) == 1 and entry["file"] in block["notes"][0] and "manifest" in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean())


def test_a_missing_earlier_shard_has_its_images_prepared_again(first, clean, tmp_path):
    entry = json.loads((first / MANIFEST).read_text())["shards"][1]
    found, block, _ = _rebuild_damaged(first, tmp_path, lambda out, m: (out / entry["file"]).unlink())
    assert block["reused"] == USABLE - entry["records"]
    assert len(block["notes"]) == 1 and entry["file"] in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean())


def test_a_garbage_manifest_reuses_nothing_and_the_build_replaces_it(first, clean, tmp_path, capsys):
    """An unreadable manifest names no build to trust. The build still works (the commit takes
    an unreadable manifest as no build) and its summary says why nothing was reused."""
    out = build_edits.copy_build(first, tmp_path / "out")
    (out / MANIFEST).write_bytes(b'{"schema_version": 1, "shards": [garbage')
    capsys.readouterr()
    assert cli.main([f"--annotations={FIXTURE_ANNOTATIONS}", f"--images_dir={FIXTURE_IMAGES}", f"--output_dir={out}",
                     f"--split={SPLIT}", *FLAGS, *IN_MEMORY]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    found = inc.files(out)
    block = inc.reuse_block(found)
    assert (block["reused"], block["prepared"]) == (0, ANNOTATED)
    assert len(block["notes"]) == 1 and "earlier build not reused" in block["notes"][0], block["notes"]
    assert "images: 0 reused" in printed and "not reused:" in printed and block["notes"][0] in printed, printed
    inc.assert_same_as_clean(found, clean())


def test_a_manifest_of_another_schema_version_reuses_nothing(first, clean, tmp_path):
    def edit(out, manifest):
        build_edits.rewrite_manifest(out, lambda raw: raw.update(schema_version=schema.SCHEMA_VERSION + 1))

    found, block, counters = _rebuild_damaged(first, tmp_path, edit)
    assert (block["reused"], block["prepared"]) == (0, ANNOTATED)
    assert counters.get("images_reused", 0) == 0
    assert len(block["notes"]) == 1 and "schema_version" in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean())


@pytest.mark.parametrize("preparation", [{"pillow": "0.0.1", "libjpeg": "6.2", "libjpeg_turbo": "0.0"}, None])
def test_images_prepared_by_other_libraries_are_not_reused(first, clean, tmp_path, preparation):
    """Another Pillow or libjpeg encodes other bytes; a manifest that does not say which
    prepared its images (None: the key removed) is not trusted either."""

    def edit(out, manifest):
        build_edits.rewrite_manifest(
            out, lambda raw: raw.update(preparation=preparation) if preparation else raw.pop("preparation")
        )

    found, block, _ = _rebuild_damaged(first, tmp_path, edit)
    assert (block["reused"], block["prepared"]) == (0, ANNOTATED)
    assert len(block["notes"]) == 1 and "prepared by" in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean())


def test_take_checks_the_record_it_reads_and_the_sources_header(first, tmp_path):
    """The index may be stale by the time a shard writer reads: `take` checks the record itself
    (its place, its checksum, that it holds that source's sha256) and the source's size the
    source's own header gives, and refuses with NotReusable. It hands back the stored pixels
    only, placed by the source's header: the record's other fields are the build's to make."""
    entry = json.loads((first / MANIFEST).read_text())["shards"][0]
    shard = tmp_path / entry["file"]
    shutil.copyfile(first / entry["file"], shard)
    data = shard.read_bytes()
    config = BuildConfig()
    task = reuse._ShardTask("b" * 12, str(shard), manifests.ShardEntry.from_json(entry))
    (index,) = list(reuse.IndexShardFn(config).process(task))
    assert not index.notes and len(index.locations) == entry["records"]
    sha, where = next(iter(index.locations.items()))
    framed_stored = data[where.offset : where.offset + where.length + tfrecord.HEADER_BYTES + tfrecord.FOOTER_BYTES]
    record = schema.Record.parse(framed_stored[tfrecord.HEADER_BYTES : -tfrecord.FOOTER_BYTES])
    source = (FIXTURE_IMAGES / record.filename).read_bytes()

    def take(where, sha, source=source):  # each time from a fresh reader: none keeps the shard open
        with reuse.EarlierRecords() as earlier:
            return reuse.take(where, sha, source, config, earlier)

    prepared = take(where, sha)
    assert prepared.encoded == record.image
    assert (prepared.placement.source_width, prepared.placement.source_height) == (record.original_width, record.original_height)
    wider = dataclasses.replace(where, source_width=2 * where.source_width)  # what a resealed record may say
    with pytest.raises(reuse.NotReusable, match=f"{2 * where.source_width}x{where.source_height} px, the source's header "
                                                f"{where.source_width}x{where.source_height}"):  # fmt: skip
        take(wider, sha)
    with pytest.raises(reuse.NotReusable, match="header cannot be read"):
        take(where, sha, source=b"not an image")
    with pytest.raises(reuse.NotReusable, match="does not hold source"):
        take(where, "0" * 64)
    with pytest.raises(reuse.NotReusable, match="not where the index found it"):
        take(dataclasses.replace(where, offset=where.offset + 1), sha)
    flipped = bytearray(data)
    flipped[where.offset + tfrecord.HEADER_BYTES + where.length // 2] ^= 0x01
    shard.write_bytes(bytes(flipped))
    with pytest.raises(reuse.NotReusable, match="checksum"):
        take(where, sha)
    shard.unlink()
    with pytest.raises(reuse.NotReusable, match="cannot read"):
        take(where, sha)


def test_a_source_over_the_pixel_limit_is_never_taken(first, tmp_path, monkeypatch):
    """A clean build refuses a source over Pillow's pixel limit (decompression_bomb): so does a
    build that finds an earlier record of it, whatever that record says."""
    from PIL import Image as PILImage

    out = build_edits.copy_build(first, tmp_path / "out")
    record = inc.records(inc.files(first))[REPLACED]
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", record.original_width * record.original_height - 1)
    result = inc.build(out, "--max_error_fraction=1")  # the larger images are bombs too
    inc.build(tmp_path / "clean", "--noreuse", "--max_error_fraction=1")
    found = inc.files(out)
    errors = [json.loads(line) for line in found[inc.manifest(found)["errors_file"]].splitlines()]
    assert next(e for e in errors if e["filename"] == REPLACED)["reason"] == "decompression_bomb"
    assert inc.counters(result)["images_reused"] < USABLE
    inc.assert_same_as_clean(found, inc.files(tmp_path / "clean"))


def test_the_index_in_columns_finds_what_a_dict_finds_and_stays_small():
    """Locations (sorted sha256 keys, NumPy columns) answers as the dict of Locations it stands
    for: the first of a sha256 kept, within a shard's pairs and across merged parts; any sha256
    not in it is None; pickled, it comes back equal; it holds about 120 bytes a record."""
    import pickle
    import random

    import objsize

    from pipeline.reuse_index import Location, Locations

    rng = random.Random(0)
    digests = [bytes(rng.randrange(256) for _ in range(32)).hex() for _ in range(400)]
    digests[5] = digests[9]  # one source twice in a shard

    def where(i):
        return Location(f"shard-{i % 3}", rng.randrange(2**40), rng.randrange(2**20), i, 2 * i, 1 + i, 2 + i)

    parts = [[(digests[i], where(i)) for i in range(start, start + 100)] for start in range(0, 400, 100)]
    parts[3][:3] = [(digests[i], where(1000 + i)) for i in (1, 2, 3)]  # also in part 0: part 0's kept
    expected: dict = {}
    for pairs in parts:
        for sha, location in pairs:
            expected.setdefault(sha, location)
    index = Locations.merged(Locations.of(pairs) for pairs in parts)
    assert len(index) == len(expected) and dict(index.items()) == expected
    assert all(index.get(sha) == location for sha, location in expected.items())
    assert index.get("f" * 64) is None and index.get("") is None and Locations().get(digests[1]) is None
    assert pickle.loads(pickle.dumps(index)) == index
    assert objsize.get_deep_size(index) / len(index) < 150


@pytest.mark.parametrize("sha256", ["a" * 63, "a" * 64 + "b", "A" * 64, "g" * 64])
def test_a_record_whose_source_sha256_is_not_64_hex_digits_is_never_indexed(sha256):
    """The index keeps sha256 keys in 64 bytes: a longer one cut to a real source's would find
    that source's image in a record that is not of it. Such a record makes its shard not trusted."""
    record = builds.blank_record(sha256=sha256)
    span = tfrecord.RecordSpan(3, 0, 0)
    with pytest.raises(reuse.NotReusable, match="record 3: its source sha256 is not 64 hex digits"):
        reuse._locate(record.serialize(), "shard", span, BuildConfig(image_format="raw"))
    valid = dataclasses.replace(record, sha256="a" * 64)
    assert reuse._locate(valid.serialize(), "shard", span, BuildConfig(image_format="raw"))[0] == "a" * 64


def test_earlier_records_are_read_as_storage_reads_them_from_any_thread(first, tmp_path):
    """EarlierRecords keeps a local shard open for the shard writer's threads (one pread a
    record): the bytes are storage.read_range's, a missing shard is None, and once closed it
    reads through storage again (a late image thread never reads a closed descriptor)."""
    entry = json.loads((first / MANIFEST).read_text())["shards"][0]
    shard = str(first / entry["file"])
    spans = [(offset, length) for offset in range(0, entry["bytes"], 997) for length in (1, 12, 4096)]
    earlier = reuse.EarlierRecords()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda span: earlier.read(shard, *span), spans))
    assert got == [storage.read_range(shard, *span) for span in spans]
    assert earlier.read(f"file://{shard}", 5, 7) == storage.read_range(shard, 5, 7)
    assert earlier.read(str(tmp_path / "gone.tfrecord"), 0, 12) is None
    earlier.close()
    assert earlier.read(shard, 0, 12) == storage.read_range(shard, 0, 12)
    assert earlier.read(str(tmp_path / "gone.tfrecord"), 0, 12) is None


def test_earlier_records_keep_a_bounded_number_of_shards_open(tmp_path, monkeypatch):
    """However many shards the earlier build has, a shard writer holds at most MAX_OPEN of them
    open; the others are read through storage, and closing closes every one it opened."""
    monkeypatch.setattr(reuse.EarlierRecords, "MAX_OPEN", 3)
    shards = []
    for i in range(7):
        shards.append(tmp_path / f"s{i}")
        shards[-1].write_bytes(bytes([i]) * 100)
    real_close = os.close
    closed = []
    monkeypatch.setattr(os, "close", lambda fd: closed.append(fd) or real_close(fd))
    with reuse.EarlierRecords() as earlier:
        for _ in range(2):
            assert [earlier.read(str(shard), 10, 5) for shard in shards] == [bytes([i]) * 5 for i in range(7)]
        held = sorted(earlier._fds.values())
        assert len(held) == 3  # the rest went through storage.read_range, which closes what it opens at once
        assert not closed
    assert sorted(closed) == held
    earlier = reuse.EarlierRecords()  # closed while a thread is still reading: closed after that read
    fd = earlier._acquire(str(shards[0]))
    earlier.close()
    assert fd not in closed[len(held) :]
    earlier._release()
    assert closed[-1] == fd


# ---- a resealed earlier build: valid checksums, values changed ---------------------------------


def _reseal(out: pathlib.Path, edits: dict[str, object]) -> None:
    """Rewrites the earlier build's records as someone who knows the format would: each record
    whose filename `edits` names gets that edit (a function of its features, in place), with
    fresh TFRecord checksums, and the manifest's shard entries (bytes, sha256, records) made to
    match, so nothing the index checks can tell."""
    for located in build_edits.records_of(out):
        filename = located.features[schema.FILENAME][1][0].decode()
        if filename in edits:
            build_edits.edit_record(out, located.file, located.index, edits[filename])


def _check_passes(out) -> None:
    from reader.check.split import check_split

    report = check_split(str(out), SPLIT, workers=1).report
    assert report.ok, report.summary()


def _set(key: str, values):
    def edit(features):
        kind, _ = features[key]
        features[key] = (kind, values)

    return edit


def test_an_earlier_record_whose_source_size_is_not_its_sources_is_prepared_again(first, clean, tmp_path):
    """image/original/width doubled and resealed: the source's header (read, not decoded) says
    otherwise, so the record is not trusted. Its image is prepared again, the note says why, and
    the build is the clean build's byte for byte (boxes where they are, not at half their x)."""
    out = build_edits.copy_build(first, tmp_path / "out")
    width = inc.records(inc.files(first))[REPLACED].original_width
    _reseal(out, {REPLACED: _set(schema.ORIGINAL_WIDTH, [2 * width])})
    inc.build(out)
    found = inc.files(out)
    block = inc.reuse_block(found)
    assert (block["reused"], block["prepared"]) == (USABLE - 1, ANNOTATED - USABLE + 1)
    assert len(block["notes"]) == 1 and REPLACED in block["notes"][0] and f"{2 * width}x" in block["notes"][0], block["notes"]
    inc.assert_same_as_clean(found, clean())
    _check_passes(out)


def test_an_earlier_record_with_its_targets_zeroed_is_not_copied(first, clean, tmp_path):
    """A target grid zeroed and resealed: the build's records hold targets computed from the
    current annotations, never the earlier record's, and the committed manifest's counts are
    those of the shards it wrote (the clean build's)."""
    out = build_edits.copy_build(first, tmp_path / "out")
    grid = inc.records(inc.files(first))[REPLACED].grid
    assert grid.any()
    _reseal(out, {REPLACED: _set(schema.GRID, np.zeros(grid.size, np.float32))})
    inc.build(out)
    found = inc.files(out)
    assert inc.reuse_block(found)["reused"] == USABLE  # only its pixels are kept: they are the same
    inc.assert_same_as_clean(found, clean())
    _check_passes(out)


def test_every_field_but_the_pixels_of_resealed_earlier_records_is_made_anew(first, clean, tmp_path):
    """Seeded: every usable record of the earlier build gets one of its other fields rewritten
    (numbers out of range, NaN, other lengths, other bytes) and the build resealed. Whatever was
    changed, the rebuild writes the clean build's bytes and the checker passes. (Not the stored
    image's format and size: the index refuses the whole shard of such a record.)"""
    rng = np.random.default_rng(19)
    keys = sorted(set(schema.FEATURES_BY_KEY) - {schema.ENCODED, schema.SHA256, schema.FORMAT, schema.HEIGHT, schema.WIDTH})
    out = build_edits.copy_build(first, tmp_path / "out")
    edits, edited = {}, []
    for filename in sorted(inc.records(inc.files(first))):
        key = keys[rng.integers(len(keys))]
        kind = schema.FEATURES_BY_KEY[key].kind
        size = int(rng.integers(0, 4))
        if kind == "float":
            values = rng.choice(np.array([0, -1, 0.5, 2, np.nan, np.inf], np.float32), size + 1)
        elif kind == "int64":
            values = rng.choice(np.array([0, 1, -7, 2**40, 224, 448], np.int64), size + 1)
        else:
            values = [bytes(rng.integers(97, 123, int(rng.integers(1, 9)), np.uint8)) for _ in range(size + 1)]
        edits[filename] = _set(key, values)
        edited.append(key)
    _reseal(out, edits)
    inc.build(out)
    found = inc.files(out)
    assert inc.reuse_block(found)["reused"] >= USABLE // 2, (edited, inc.reuse_block(found))  # most images still came from it
    inc.assert_same_as_clean(found, clean())
    _check_passes(out)
