"""`fetch` against a local HTTP server on 127.0.0.1 (never the internet): the official layout
comes out, an interrupted transfer resumes, damaged and malicious archives are refused; and
`make-reference` rebuilds the reference's 800/200 set from a fake ISIC 2018 download."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from skinseg.cli.data import main as data_main
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.fetch import ARCHIVES
from tests.conftest import write_pairs


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder with Range support; `cut` makes one file's next response stop short."""

    cut: dict = {}
    ranges: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        start = 0
        header = self.headers.get("Range")
        if header:
            self.ranges.append((os.path.basename(path), header))
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        limit = self.cut.pop(os.path.basename(path), None)
        self.wfile.write(data[start : start + limit] if limit else data[start:])
        if limit:
            self.close_connection = True


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.cut, _Handler.ranges = {}, []
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _zip_folder(folder, archive):
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                full = os.path.join(dirpath, name)
                z.write(full, os.path.relpath(full, os.path.dirname(folder)))


def _isic2018_archives(root, work, ids=("ISIC_0000000", "ISIC_0000001")):
    """The six ISIC 2018 Task 1 archives, each holding its one folder, with tiny images."""
    year, names = ARCHIVES["isic2018"]
    (root / year).mkdir()
    for kind, start in (("Training", 0), ("Validation", 10), ("Test", 20)):
        images = work / f"ISIC2018_Task1-2_{kind}_Input"
        masks = work / f"ISIC2018_Task1_{kind}_GroundTruth"
        write_pairs(images, masks, [f"{i}{kind[0]}" for i in ids], size=(40, 60), start=start)
    for name in names:
        _zip_folder(str(work / name), str(root / year / f"{name}.zip"))
    return root / year


def test_fetch_downloads_checks_and_unzips_into_the_layout(server, tmp_path, capsys):
    root, url = server
    served = _isic2018_archives(root, tmp_path / "work")
    to = tmp_path / "isic2018"
    assert data_main(["fetch", "isic2018", "--to", str(to), "--base-url", url]) == 0
    found = discover_pairs(str(to))
    assert found.layout == "isic2018" and list(found.splits) == ["train", "validation", "test"]
    assert all(len(pairs) == 2 for pairs in found.splits.values()) and found.problems == []
    for name in ARCHIVES["isic2018"][1]:
        kept = open(to / "downloads" / f"{name}.zip", "rb").read()
        assert (
            hashlib.sha256(kept).digest()
            == hashlib.sha256(open(served / f"{name}.zip", "rb").read()).digest()
        )
    capsys.readouterr()
    assert data_main(["fetch", "isic2018", "--to", str(to), "--base-url", url]) == 0  # nothing to do again
    assert capsys.readouterr().err.count("already extracted") == 6


def test_an_interrupted_transfer_resumes_where_it_stopped(server, tmp_path, capsys):
    root, url = server
    served = _isic2018_archives(root, tmp_path / "work")
    name = "ISIC2018_Task1-2_Training_Input.zip"
    size = os.path.getsize(served / name)
    _Handler.cut = {name: 1000}
    to = tmp_path / "isic2018"
    assert data_main(["fetch", "isic2018", "--to", str(to), "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert "1,000 of" in err and "run the command again to resume" in err
    assert os.path.getsize(to / "downloads" / f"{name}.part") == 1000
    assert data_main(["fetch", "isic2018", "--to", str(to), "--base-url", url]) == 0
    assert (name, "bytes=1000-") in _Handler.ranges  # only the rest was asked for
    assert os.path.getsize(to / "downloads" / name) == size
    assert len(discover_pairs(str(to)).splits["train"]) == 2


def _malicious(kind):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        if kind == "zip-slip":
            z.writestr("ISIC2018_Task1-2_Training_Input/../../evil.txt", "escaped")
        elif kind == "absolute":
            z.writestr("/tmp/evil.txt", "escaped")
        elif kind == "symlink":
            info = zipfile.ZipInfo("ISIC2018_Task1-2_Training_Input/link")
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
        elif kind == "bomb":
            z.writestr("ISIC2018_Task1-2_Training_Input/zeros.jpg", b"\0" * (20 << 20))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("zip-slip", "would be written outside"),
        ("absolute", "has an absolute path"),
        ("symlink", "is a symbolic link"),
        ("bomb", "fold (more than 200: a zip bomb?)"),
    ],
)
def test_malicious_archives_are_refused_naming_the_member(server, tmp_path, capsys, kind, said):
    root, url = server
    (root / "2018").mkdir()
    (root / "2018" / "ISIC2018_Task1-2_Training_Input.zip").write_bytes(_malicious(kind))
    to = tmp_path / "isic2018"
    assert data_main(["fetch", "isic2018", "--to", str(to), "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert said in err and "ISIC2018_Task1-2_Training_Input.zip: member" in err
    assert sorted(os.listdir(to)) == ["downloads"]  # nothing extracted
    assert not (tmp_path / "evil.txt").exists()


def test_a_damaged_archive_is_removed_to_download_again(server, tmp_path, capsys):
    root, url = server
    served = _isic2018_archives(root, tmp_path / "work")
    name = "ISIC2018_Task1-2_Training_Input.zip"
    data = bytearray(open(served / name, "rb").read())
    data[200] ^= 0xFF  # a flipped byte inside the first member's data
    (served / name).write_bytes(bytes(data))
    to = tmp_path / "isic2018"
    assert data_main(["fetch", "isic2018", "--to", str(to), "--base-url", url]) == 2
    err = capsys.readouterr().err
    assert "fails its CRC check" in err or "not a readable zip archive" in err
    assert "removed, run again" in err
    assert not (to / "downloads" / name).exists()


def test_without_network_the_message_says_what_to_do(tmp_path, capsys):
    to = tmp_path / "isic2016"
    assert data_main(["fetch", "isic2016", "--to", str(to), "--base-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the server" in err and "download the archives by hand" in err


def test_make_reference_rebuilds_the_800_200_set(tmp_path, capsys):
    from skinseg.data_pipeline.reference import reference_ids

    ids = reference_ids()
    assert len(ids) == 1000 and sum(split == "train" for split in ids.values()) == 800
    root = tmp_path / "ISIC2018"
    rng = np.random.default_rng(0)
    for kind, chosen in (("Training", sorted(ids)[:700]), ("Validation", sorted(ids)[700:])):
        images = root / f"ISIC2018_Task1-2_{kind}_Input"
        masks = root / f"ISIC2018_Task1_{kind}_GroundTruth"
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for id_ in chosen:
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(images / f"{id_}.jpg")
            mask = np.zeros((12, 16), np.uint8)
            mask[3:9, 4:12] = 255
            Image.fromarray(mask).save(masks / f"{id_}_segmentation.png")
    out = tmp_path / "reference128"
    assert data_main(["make-reference", str(root), str(out)]) == 0
    found = discover_pairs(str(out))
    assert {k: len(v) for k, v in found.splits.items()} == {"train": 800, "test": 200}
    assert {p.id for p in found.splits["test"]} == {i for i, s in ids.items() if s == "test"}
    image = Image.open(found.splits["train"][0].image)
    mask = np.asarray(Image.open(found.splits["train"][0].mask))
    assert image.size == (128, 128) and set(np.unique(mask)) <= {0, 255}
    assert abs(mask.mean() / 255 - (6 * 8) / (12 * 16)) < 0.01  # the lesion's share kept
    assert data_main(["make-reference", str(root), str(out)]) == 2  # never over an existing folder
    os.remove(root / "ISIC2018_Task1-2_Validation_Input" / f"{sorted(ids)[-1]}.jpg")
    assert data_main(["make-reference", str(root), str(tmp_path / "other")]) == 2
