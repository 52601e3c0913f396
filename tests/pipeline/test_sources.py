"""Reading sources (pipeline/sources.py): confined to the images directory, regular files only (issue 10)."""

import os
import shutil
import stat
import threading

import pytest

from pipeline import sources
from pipeline.images import UnusableImage
from tests.support.paths import FIXTURE_IMAGES


def _fixture(name: str) -> bytes:
    return (FIXTURE_IMAGES / name).read_bytes()


@pytest.fixture
def tree(tmp_path):
    """images/ with a photo, and outside/ beside it with a photo and a private text file."""
    root, outside = tmp_path / "images", tmp_path / "outside"
    (root / "event").mkdir(parents=True)
    outside.mkdir()
    photo = _fixture("0--Parade/0_Parade_rgb_1.jpg")
    (root / "event" / "a.jpg").write_bytes(photo)
    (outside / "photo.jpg").write_bytes(photo)
    (outside / "private.txt").write_bytes(b"PRIVATE-KEY 1234 do not leak")
    return root, outside, photo


def _reason(images_dir, filename, **kwargs) -> str:
    with pytest.raises(UnusableImage) as caught:
        sources.read_source(str(images_dir), filename, **kwargs)
    return caught.value


def _read_in_thread(images_dir, filename, seconds=5.0):
    """read_source in a daemon thread: a FIFO that blocks fails the test instead of hanging it."""
    result = {}

    def run():
        try:
            result["value"] = sources.read_source(str(images_dir), filename)
        except UnusableImage as e:
            result["value"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"read_source blocked on {filename}"
    return result["value"]


def test_a_file_inside_is_read_whole(tree):
    root, _, photo = tree
    assert sources.read_source(str(root), "event/a.jpg") == photo
    assert sources.read_source(f"file://{root}", "event/./a.jpg") == photo


def test_a_fifo_named_jpg_is_refused_without_blocking(tree):
    root, _, _ = tree
    os.mkfifo(root / "event" / "fifo.jpg")
    error = _read_in_thread(root, "event/fifo.jpg")
    assert isinstance(error, UnusableImage) and error.reason == "not_a_regular_file" and "FIFO" in error.detail


def test_a_fifo_swapped_in_after_the_check_is_refused_on_the_descriptor(tree, monkeypatch):
    # The path is looked at first, then opened (O_NONBLOCK) and checked again on the descriptor.
    root, _, _ = tree
    os.mkfifo(root / "event" / "fifo.jpg")
    regular = os.stat(root / "event" / "a.jpg")

    def before_the_swap(real):
        return lambda path, *args, **kwargs: regular if str(path).endswith("fifo.jpg") else real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", before_the_swap(os.stat))
    monkeypatch.setattr(os, "lstat", before_the_swap(os.lstat))
    error = _read_in_thread(root, "event/fifo.jpg")
    assert isinstance(error, UnusableImage) and error.reason == "not_a_regular_file"


def test_directories_sockets_and_devices_are_refused(tree):
    import socket

    root, _, _ = tree
    (root / "event" / "dir.jpg").mkdir()
    assert _reason(root, "event/dir.jpg").reason == "not_a_regular_file"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "event" / "socket.jpg"))
        assert _reason(root, "event/socket.jpg").reason == "not_a_regular_file"
    try:
        os.mknod(root / "event" / "zero.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert _reason(root, "event/zero.jpg").reason == "not_a_regular_file"


def test_links_that_stay_inside_are_followed(tree):
    root, _, photo = tree
    os.symlink("a.jpg", root / "event" / "link.jpg")
    os.symlink("event", root / "alias")
    assert sources.read_source(str(root), "event/link.jpg") == photo
    assert sources.read_source(str(root), "alias/a.jpg") == photo
    assert sources.read_source(str(root), "alias/link.jpg") == photo
    os.symlink(root, root.parent / "images_link")  # images_dir itself may be a link
    assert sources.read_source(str(root.parent / "images_link"), "event/a.jpg") == photo


@pytest.mark.parametrize(
    "link, target, filename",
    [
        ("event/out.jpg", "../../outside/photo.jpg", "event/out.jpg"),
        ("event/private.jpg", "../../outside/private.txt", "event/private.jpg"),
        ("event/absolute.jpg", "ABSOLUTE/private.txt", "event/absolute.jpg"),
        ("event/outdir", "../../outside", "event/outdir/private.txt"),  # a directory on the way
        ("event/dangling_out.jpg", "../../outside/none.jpg", "event/dangling_out.jpg"),
    ],
)
def test_links_that_lead_out_are_refused_and_quote_nothing_of_the_outside(tree, link, target, filename):
    root, outside, _ = tree
    os.symlink(target.replace("ABSOLUTE", str(outside)), root / link)
    error = _reason(root, filename)
    assert error.reason == "path_escapes_images_dir"
    assert "PRIVATE" not in str(error) and "outside" not in str(error)  # neither its bytes nor where it leads


def test_a_directory_swapped_for_an_outward_link_is_caught_on_the_descriptor(tree, monkeypatch):
    # realpath sees no link (as if the swap came after it); the kernel's view of the open file
    # (/proc/self/fd) does.
    root, _, _ = tree
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd here")
    os.symlink("../outside", root / "swapped")
    real_realpath = os.path.realpath

    def realpath_before_the_swap(path, *args, **kwargs):
        return os.path.normpath(path) if "swapped" in str(path) else real_realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", realpath_before_the_swap)
    assert _reason(root, "swapped/photo.jpg").reason == "path_escapes_images_dir"


def test_paths_below_the_images_dir_resolve_as_realpath_resolves_them(tree):
    # sources resolves the images directory once and walks only the components below it,
    # handing to realpath wherever one is a link or missing: the answer must be realpath's.
    root, outside, _ = tree
    os.symlink("a.jpg", root / "event" / "link.jpg")
    os.symlink("event", root / "alias")
    os.symlink("../../outside", root / "event" / "outdir")
    os.symlink("none.jpg", root / "event" / "dangling.jpg")
    os.symlink("loop_b", root / "event" / "loop_a")
    os.symlink("loop_a", root / "event" / "loop_b")
    resolved_root = os.path.realpath(root)
    for relative in (
        "event/a.jpg",
        "event/link.jpg",
        "alias/a.jpg",
        "alias/link.jpg",
        "event/outdir/photo.jpg",
        "event/dangling.jpg",
        "event/none.jpg",
        "none/a.jpg",
        "event/a.jpg/x.jpg",
        "alias/outdir/photo.jpg",
        "event/loop_a",
    ):
        resolved, status = sources._resolve(resolved_root, relative)
        assert resolved == os.path.realpath(os.path.join(resolved_root, relative)), relative
        assert status is None or status == os.stat(resolved), relative  # when given, the file's own status


def test_an_images_dir_that_names_another_directory_later_is_resolved_again(tmp_path, monkeypatch):
    # A long-lived process (a notebook, in-process builds) may build from `images` -> v1, then
    # from `images` -> v2, or from a relative path in another working directory.
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "a.jpg").write_bytes(version.encode())
    os.symlink("v1", tmp_path / "images")
    assert sources.read_source(str(tmp_path / "images"), "a.jpg") == b"v1"
    os.unlink(tmp_path / "images")
    os.symlink("v2", tmp_path / "images")
    assert sources.read_source(str(tmp_path / "images"), "a.jpg") == b"v2"
    shutil.rmtree(tmp_path / "v1")
    assert sources.read_source(str(tmp_path / "images"), "a.jpg") == b"v2"
    monkeypatch.chdir(tmp_path)
    assert sources.read_source("v2", "a.jpg") == b"v2"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "v2").mkdir()
    (tmp_path / "w" / "v2" / "a.jpg").write_bytes(b"w")
    monkeypatch.chdir(tmp_path / "w")
    assert sources.read_source("v2", "a.jpg") == b"w"


def test_the_path_gate_comes_before_the_disk(tree, monkeypatch):
    root, _, _ = tree
    real_open = os.open

    def no_open_under_root(path, *args, **kwargs):
        assert not str(path).startswith(str(root.parent)), f"opened {path}"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_open_under_root)
    for filename in ("../outside/photo.jpg", "/etc/passwd", "gs://bucket/a.jpg", "a\\..\\..\\x.jpg"):
        assert _reason(root, filename).reason == "path_escapes_images_dir"


def test_missing_dangling_looping_and_empty_files(tree):
    root, _, _ = tree
    assert _reason(root, "event/none.jpg").reason == "missing"
    assert _reason(root, "event/a.jpg/x.jpg").reason == "missing"
    os.symlink("none.jpg", root / "event" / "dangling.jpg")
    assert _reason(root, "event/dangling.jpg").reason == "missing"
    os.symlink("loop_b", root / "event" / "loop_a")
    os.symlink("loop_a", root / "event" / "loop_b")
    assert _reason(root, "event/loop_a").reason == "unreadable"
    (root / "event" / "empty.jpg").write_bytes(b"")
    assert sources.read_source(str(root), "event/empty.jpg") == b""


def test_a_file_over_the_size_cap_is_refused(tree, monkeypatch):
    root, _, photo = tree
    error = _reason(root, "event/a.jpg", max_bytes=len(photo) - 1)
    assert error.reason == "file_too_large" and str(len(photo)) in error.detail
    assert sources.MAX_SOURCE_BYTES == 256 * 2**20


def test_a_file_that_grows_past_the_cap_while_read_is_refused(tree, monkeypatch):
    root, _, photo = tree
    real_read, opened = os.read, []
    real_open = os.open

    def open_recording(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith("a.jpg"):
            opened.append(fd)
        return fd

    def growing(fd, n):
        return real_read(fd, n) or (b"more" if fd in opened else b"")  # the photo never ends

    monkeypatch.setattr(os, "open", open_recording)
    monkeypatch.setattr(os, "read", growing)
    assert _reason(root, "event/a.jpg", max_bytes=len(photo) + 100).reason == "file_too_large"


def test_remote_images_are_read_through_the_storage_layer():
    """On moto's S3 server: one ranged read an image, the same reasons as on local disk."""
    from reader.core import storage
    from tests.support import cloud_fixtures

    with cloud_fixtures.s3_server() as server:
        server.client.create_bucket(Bucket="images")
        server.client.put_object(Bucket="images", Key="event/a.jpg", Body=b"JPEG bytes")
        server.client.put_object(Bucket="images", Key="event/empty.jpg", Body=b"")
        previous = storage.configure_s3(
            storage.S3Settings(server.endpoint, cloud_fixtures.S3_REGION, cloud_fixtures.S3_KEY_ID, cloud_fixtures.S3_SECRET)
        )
        try:
            assert sources.read_source("s3://images", "event/a.jpg") == b"JPEG bytes"
            assert sources.read_source("s3://images", "event/empty.jpg") == b""
            assert _reason("s3://images", "event/none.jpg").reason == "missing"
            assert _reason("s3://images", "event/a.jpg", max_bytes=4).reason == "file_too_large"
            assert _reason("s3://images", "../a.jpg").reason == "path_escapes_images_dir"
            with pytest.raises(storage.StorageError, match=r"^s3://no-such-bucket/event/a.jpg: cannot read: NoSuchBucket"):
                sources.read_source("s3://no-such-bucket", "event/a.jpg")  # the store's fault, not the image's
        finally:
            storage.configure_s3(previous)
