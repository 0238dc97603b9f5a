"""`python -m skinseg.data_pipeline fetch isic2016|isic2017|isic2018`: the ISIC challenges'
lesion-segmentation archives, downloaded and unzipped into the layout `discover_pairs` reads.

Downloads resume where they stopped (an HTTP Range request on the `.part` file), every archive's
CRCs are checked before it is used, and extraction refuses members that would escape the target
folder (absolute paths, `..`), symbolic links and implausible compression ratios, naming the member.
"""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib

from skinseg.core.atomic import remove_stale_staging
from skinseg.core.errors import DataError

# The ISIC challenges' public archives (https://challenge.isic-archive.com/data/). Each archive
# holds one folder of the same name, the layout `discovery` expects.
ARCHIVE_BASE = "https://isic-challenge-data.s3.amazonaws.com"
ARCHIVES = {
    "isic2016": (
        "2016",
        (
            "ISBI2016_ISIC_Part1_Training_Data",
            "ISBI2016_ISIC_Part1_Training_GroundTruth",
            "ISBI2016_ISIC_Part1_Test_Data",
            "ISBI2016_ISIC_Part1_Test_GroundTruth",
        ),
    ),
    "isic2017": (
        "2017",
        (
            "ISIC-2017_Training_Data",
            "ISIC-2017_Training_Part1_GroundTruth",
            "ISIC-2017_Validation_Data",
            "ISIC-2017_Validation_Part1_GroundTruth",
            "ISIC-2017_Test_v2_Data",
            "ISIC-2017_Test_v2_Part1_GroundTruth",
        ),
    ),
    "isic2018": (
        "2018",
        (
            "ISIC2018_Task1-2_Training_Input",
            "ISIC2018_Task1_Training_GroundTruth",
            "ISIC2018_Task1-2_Validation_Input",
            "ISIC2018_Task1_Validation_GroundTruth",
            "ISIC2018_Task1-2_Test_Input",
            "ISIC2018_Task1_Test_GroundTruth",
        ),
    ),
}
MAX_RATIO = 200  # uncompressed / compressed, per member: JPEG and PNG barely compress further
MAX_MEMBER_BYTES = 2**32  # 4 GiB: no image of a challenge comes near
_CHUNK = 1 << 20


def archive_urls(challenge: str, base: str = ARCHIVE_BASE) -> list[tuple[str, str]]:
    """(archive name, URL) of every archive of `challenge`."""
    if challenge not in ARCHIVES:
        raise DataError(f"unknown challenge {challenge!r}; valid: {', '.join(ARCHIVES)}")
    year, names = ARCHIVES[challenge]
    return [(name, f"{base.rstrip('/')}/{year}/{name}.zip") for name in names]


def fetch(challenge: str, to: str, base: str = ARCHIVE_BASE, quiet: bool = False) -> str:
    """Download, check and unzip every archive of `challenge` into `to`; returns `to`. Archives
    already extracted are skipped, partial downloads resumed."""
    progress = None if quiet else sys.stderr
    to = os.path.abspath(to)
    downloads = os.path.join(to, "downloads")
    os.makedirs(downloads, exist_ok=True)
    for name, url in archive_urls(challenge, base):
        if os.path.isdir(os.path.join(to, name)):
            _say(progress, f"{name}: already extracted")
            continue
        archive = os.path.join(downloads, f"{name}.zip")
        if not os.path.exists(archive):
            download(url, archive, progress)
        check_archive(archive)
        extract_safely(archive, to)
        _say(progress, f"{name}: extracted into {to}")
    return to


def download(url: str, path: str, progress=None) -> None:
    """`url` to `path` through `path.part`, resuming a partial download when the server allows."""
    part = path + ".part"
    done = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:  # already complete
            os.replace(part, path)
            return
        raise DataError(f"{url}: the server answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"{url}: cannot reach the server ({reason}). Without network access, download the archives "
            f"by hand from https://challenge.isic-archive.com/data/ into {os.path.dirname(path)}/ and run "
            "the same command again: it checks and unzips what is there"
        ) from None
    with response:
        if done and response.status != 206:  # no Range support: start over
            done = 0
        total = response.headers.get("Content-Length")
        total = int(total) + done if total is not None else None
        mode = "ab" if done else "wb"
        started = shown = time.monotonic()
        interval = 0.5 if hasattr(progress, "isatty") and progress.isatty() else 30.0  # a log: few lines
        with open(part, mode) as handle:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
                    raise DataError(
                        f"{url}: the transfer broke off after {done:,} bytes ({err}); run the command again "
                        "to resume it"
                    ) from None
                if not chunk:
                    break
                handle.write(chunk)
                done += len(chunk)
                if progress is not None and time.monotonic() - shown > interval:
                    shown = time.monotonic()
                    _progress(progress, os.path.basename(path), done, total, shown - started)
    if total is not None and done != total:
        raise DataError(f"{url}: got {done:,} of {total:,} bytes; run the command again to resume")
    if progress is not None:
        _progress(progress, os.path.basename(path), done, total, time.monotonic() - started, end=True)
    os.replace(part, path)


def check_archive(path: str) -> None:
    """Every member's CRC; a damaged archive is removed so that the next run downloads it again."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        os.remove(path)
        raise DataError(
            f"{path}: not a readable zip archive ({err}); removed, run again to download it"
        ) from None
    if bad is not None:
        os.remove(path)
        raise DataError(f"{path}: member {bad} fails its CRC check (damaged download); removed, run again")


def extract_safely(path: str, to: str) -> None:
    """Unzip into `to` through a temporary folder, refusing dangerous members before writing any."""
    to = os.path.realpath(to)
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            _check_member(path, member, to)
        remove_stale_staging(to, ".extract-")  # a killed extraction's, left behind
        staging = os.path.join(to, f".extract-{os.getpid()}-{os.path.basename(path)}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            archive.extractall(staging)
            for entry in os.listdir(staging):
                target = os.path.join(to, entry)
                if os.path.exists(target):
                    raise DataError(f"{target}: already exists; move it away to extract {path} again")
                os.replace(os.path.join(staging, entry), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _check_member(path: str, member: zipfile.ZipInfo, to: str) -> None:
    name = member.filename
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ":" in name.split("/")[0]:
        raise DataError(f"{path}: member {name!r} has an absolute path; refused")
    target = os.path.realpath(os.path.join(to, name))
    if target != to and not target.startswith(to + os.sep) or ".." in name.replace("\\", "/").split("/"):
        raise DataError(f"{path}: member {name!r} would be written outside {to}; refused")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DataError(f"{path}: member {name!r} is a symbolic link; refused")
    if member.file_size > MAX_MEMBER_BYTES:
        raise DataError(f"{path}: member {name!r} claims {member.file_size:,} bytes; refused")
    if member.compress_size and member.file_size / member.compress_size > MAX_RATIO:
        raise DataError(
            f"{path}: member {name!r} expands {member.file_size / member.compress_size:.0f}-fold "
            f"(more than {MAX_RATIO}: a zip bomb?); refused"
        )


def _say(stream, text: str) -> None:
    if stream is not None:
        print(text, file=stream)


def _progress(stream, name: str, done: int, total: int | None, seconds: float, end: bool = False) -> None:
    rate = done / seconds / 2**20 if seconds > 0 else 0.0
    amount = f"{done / 2**20:,.1f}" + (
        f" of {total / 2**20:,.1f} MB ({100 * done / total:.0f} %)" if total else " MB"
    )
    line = f"{name}: {amount}, {rate:.1f} MB/s"
    tty = hasattr(stream, "isatty") and stream.isatty()
    print(("\r" if tty else "") + line, end="\n" if end or not tty else "", file=stream, flush=True)
