"""Whether a dataset is prepared, and preparing it (`harness prepare NAME`).

Every dataset is prepared by one library call, our builders (harness/data/builders/) and TFDS's alike:
`tfds.builder(name, data_dir=D).download_and_prepare(download_config=DownloadConfig(manual_dir=M))`.
TFDS's command line (`tfds build`) is not used: it imports apache_beam, which the harness does not install.
Before TFDS runs, what can be checked is checked, each failure one line naming what is missing and where it
goes: the files placed by hand in the manual folder (`--manual-dir`, default `<data_dir>/downloads/manual/`);
a file TFDS would download but finds there instead, by its size against TFDS's record of the official file;
and that the hosts of the other downloads answer (TFDS's downloader retries an unreachable address ten times
with back-off, minutes, before it gives up).

TFDS 4.9.10 writes a dataset into `<data_dir>/<name>[/<config>]/incomplete.XXXXXX_<version>/` (six random
capitals and digits, `core/utils/file_utils.py`) and renames it at the end, and a download into
`<data_dir>/downloads/<name>/<file>.tmp.<32 hex digits>/` (`core/download/download_manager.py`); a killed
prepare leaves them behind for good. The next prepare of that dataset removes them (those folders only), under
a lock that every prepare of the dataset holds (`<data_dir>/<name>/.prepare.lock`), so a prepare still running
in another process is never disturbed.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from harness.data.registry import (
    DATASETS,
    GENERATED,
    Download,
    base_name,
    default_data_dir,
    default_manual_dir,
    get_info,
)
from harness.errors import HarnessError, did_you_mean, os_error
from harness.files import file_lock
from harness.tf_import import tensorflow

log = logging.getLogger("harness")

LOCK_FILE = ".prepare.lock"
# TFDS 4.9.10's names of unfinished work (see the module docstring).
INCOMPLETE_DATASET = re.compile(r"incomplete\.[A-Z0-9]{6}_\d+\.\d+\.\d+")
INCOMPLETE_DOWNLOAD = re.compile(r".+\.tmp\.[0-9a-f]{32}")
# How long a download host may take to resolve and to accept a connection before it counts as unreachable.
NETWORK_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------------
# TFDS access


# TF (`harness.tf_import`), TFDS and our builders (which import both) are imported on first use, not with this
# module: see harness/data/__init__.py.
@functools.cache
def _tfds():
    tensorflow()
    import tensorflow_datasets as tfds

    try:  # our own builders (proxy_scenes, proxy_digits, vqav2, ...) register on import
        import harness.data.builders  # noqa: F401
    except ImportError:
        pass
    return tfds


def _open_builder(tfds_name: str, data_dir: str):
    tfds = _tfds()
    try:
        return tfds.builder(tfds_name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError, OSError,
            KeyError):
        return None


@functools.lru_cache(maxsize=64)
def _prepared_builder(tfds_name: str, data_dir: str):
    # Only prepared builders are cached: preparing later must not be hidden by a stale entry.
    builder = _open_builder(tfds_name, data_dir)
    if builder is None or not builder.is_prepared():
        raise LookupError(tfds_name)
    return builder


def is_prepared(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether the dataset's TFDS files (dataset_info.json) exist; reads no data."""
    try:
        _prepared_builder(get_info(name).tfds_name, default_data_dir(data_dir))
    except LookupError:
        return False
    return True


def skip_unprepared(name: str, data_dir: str | os.PathLike | None, task: str) -> bool:
    """For a dataset a task may do without: True, after one warning line naming its preparation command,
    when it is not prepared. The generated proxies are never skipped (they are built on first use)."""
    if base_name(name) in GENERATED or is_prepared(name, data_dir):
        return False
    log.warning("%s: %s is not prepared under %s, so it is skipped; to include it, %s", task, name,
                default_data_dir(data_dir), get_info(name).how_to_prepare(data_dir))
    return True


def require_prepared(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Raise a HarnessError with the preparation command unless the dataset is prepared.
    The generated proxies are built on first use instead."""
    if not is_prepared(name, data_dir) and base_name(name) in GENERATED:
        log.warning("preparing %s under %s (first use; generated offline)", name, default_data_dir(data_dir))
        prepare(name, data_dir)
    if not is_prepared(name, data_dir):
        info = get_info(name)
        data_dir = default_data_dir(data_dir)
        hint = did_you_mean(name, DATASETS) if base_name(name) not in DATASETS else ""
        raise HarnessError(f"dataset '{name}'{hint} is not prepared under {data_dir}: {info.how_to_prepare(data_dir)}")


# --------------------------------------------------------------------------------------------------
# preparing


def prepare(name: str, data_dir: str | os.PathLike | None = None, *,
            manual_dir: str | os.PathLike | None = None) -> str:
    """Prepares any dataset of the registry (or TFDS) under `data_dir`; returns the prepared folder. Nothing
    is written before the sources are checked; a prepared dataset is left as it is."""
    info = get_info(name)
    data_dir = default_data_dir(data_dir)
    manual = default_manual_dir(data_dir, manual_dir)
    builder = _open_builder(info.tfds_name, data_dir)
    if builder is None:
        raise HarnessError(f"no dataset '{name}' in the harness's registry or in TFDS"
                           + did_you_mean(base_name(name), DATASETS) + "; `harness ls datasets` lists the known ones")
    if builder.is_prepared():
        return str(builder.data_dir)
    check_sources(name, builder, data_dir, manual)

    def on_wait():
        log.warning("another process is preparing %s under %s; waiting for it", name, data_dir)

    with file_lock(Path(data_dir) / builder.name / LOCK_FILE, on_wait=on_wait):
        builder = _open_builder(info.tfds_name, data_dir)  # another process may have finished it meanwhile
        if not builder.is_prepared():
            removed = remove_incomplete(builder, data_dir)
            if removed:
                log.warning("%s: removed %s, left by an interrupted prepare", name, ", ".join(map(str, removed)))
            _download_and_prepare(builder, name, data_dir, manual)
    _prepared_builder.cache_clear()
    return str(builder.data_dir)


def remove_incomplete(builder, data_dir: str) -> list[Path]:
    """Deletes what an interrupted prepare of this dataset left (see the module docstring); returns the folders.
    The caller holds the dataset's lock."""
    removed = []
    for folder, pattern in ((Path(builder.data_path).parent, INCOMPLETE_DATASET),
                            (Path(data_dir) / "downloads" / builder.name, INCOMPLETE_DOWNLOAD)):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(path)
    return removed


def check_sources(name: str, builder, data_dir: str, manual: str) -> None:
    """One line, before anything is written, when something the dataset is prepared from is missing: our
    builders check their manual files themselves; for TFDS's, the registry's manual files must be in `manual`,
    a download placed there must have the official file's size, and the other downloads' hosts must answer."""
    from harness.data import builders

    sources = get_info(name).sources
    if base_name(name) in builders.CHECK_FILES:
        builders.CHECK_FILES[base_name(name)](manual)
        return
    missing = [f for f in sources.manual if not os.path.exists(os.path.join(manual, f))]
    if missing:
        raise HarnessError(f"{name}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing from "
                           f"{manual}/; it needs {sources.needs(manual)} (or pass the folder that holds them as "
                           "--manual-dir)")
    url_infos = builder.url_infos or {}
    fetch = []
    for download in sources.downloads:
        placed = os.path.join(manual, download.file)
        official = url_infos.get(download.url)
        if not os.path.exists(placed):
            if not _downloaded(builder, data_dir, download, official):
                fetch.append(download)
        elif official is not None and os.path.getsize(placed) != int(official.size):
            raise HarnessError(f"{name}: {placed} has {os.path.getsize(placed)} bytes, but the official "
                               f"{download.file} has {int(official.size)}; download it again from {download.url} "
                               "(or remove it, and TFDS downloads it)")
    _check_hosts(name, builder, fetch, data_dir, manual)


def _downloaded(builder, data_dir: str, download: Download, official) -> bool:
    """Whether an earlier prepare downloaded the file already (TFDS reuses it without the network): TFDS's
    cache name for the address and checksum, under `<data_dir>/downloads/<name>/` (or TFDS's older layout,
    without `<name>/`)."""
    from tensorflow_datasets.core.download import resource

    if official is None:
        return False
    file_name = resource.get_dl_fname(download.url, official.checksum)
    return any(resource.is_locally_cached(Path(data_dir) / "downloads" / sub / file_name) for sub in (builder.name, ""))


def _check_hosts(name: str, builder, downloads: list[Download], data_dir: str, manual: str) -> None:
    by_host: dict[tuple[str, str, int], list[str]] = {}
    for download in downloads:
        url = urllib.parse.urlsplit(download.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        by_host.setdefault((url.scheme, url.hostname or "", port), []).append(download.file)
    for (scheme, host, port), files in by_host.items():
        proxy = urllib.request.getproxies().get(scheme)
        if proxy and not urllib.request.proxy_bypass(host):
            # Through a proxy (as requests, TFDS's downloader, goes): the proxy must answer.
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            problem = reach(parts.hostname or "", parts.port or 80)
            problem = problem and f"the proxy {proxy} {problem}"
        else:
            problem = reach(host, port)
            problem = problem and f"{host} {problem}"
        if problem:
            one = len(files) == 1
            raise HarnessError(
                f"{name}: cannot download {', '.join(files)}: {problem} (no network?); prepare it on a machine with "
                f"internet (`harness prepare {name}`) and copy its folder {builder.name}/ into {data_dir}/, or put "
                f"{'that file' if one else 'those files'} in {manual}/")


def reach(host: str, port: int, timeout: float = NETWORK_TIMEOUT_S) -> str | None:
    """None when `host` resolves and accepts a TCP connection on `port` within `timeout` seconds each, else
    what went wrong, in words to follow the host's name ("cannot be looked up (...)")."""
    found: dict = {}

    def resolve():
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            found["error"] = e

    lookup = threading.Thread(target=resolve, daemon=True)  # getaddrinfo itself takes no timeout
    lookup.start()
    lookup.join(timeout)
    if lookup.is_alive():
        return f"was not looked up within {timeout:.0f} s"
    if "error" in found:
        return f"cannot be looked up ({found['error'].strerror or found['error']})"
    problem = None
    for family, kind, proto, _, address in found["addresses"]:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(timeout)
                s.connect(address)
            return None
        except OSError as e:
            problem = f"does not answer on port {port} ({e.strerror or e})"
    return problem


def _download_and_prepare(builder, name: str, data_dir: str, manual: str) -> None:
    """TFDS's call, its failures mapped to one line each. TFDS removes its `incomplete.*` folder on a failure."""
    tfds = _tfds()
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    except HarnessError:
        raise
    except Exception as e:  # noqa: BLE001 - TFDS and TF raise their own types; the unknown ones are re-raised
        mapped = _failure(e, name, builder, data_dir, manual)
        if mapped is None:
            raise
        raise mapped from None


def _failure(e: Exception, name: str, builder, data_dir: str, manual: str) -> HarnessError | None:
    import requests
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    tfds = _tfds()
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, NonMatchingChecksumError):
        # "Artifact <url>, downloaded to <path>, has wrong checksum:"
        return HarnessError(f"preparing {name}: {first_line.rstrip(':')} (TFDS's record of the official file); "
                            f"a file placed in {manual}/ is not the official one, or the download was damaged: remove "
                            "it and rerun")
    if isinstance(e, (requests.RequestException, tfds.download.DownloadError)):
        return HarnessError(f"preparing {name}: a download failed ({type(e).__name__}: {first_line[:200]}); check "
                            f"the network and rerun `harness prepare {name} --data-dir {data_dir}`, or put the files "
                            f"({get_info(name).needs(data_dir, manual)}) in {manual}/")
    if isinstance(e, AssertionError) and "Manual directory" in first_line:
        # TFDS's "Manual directory <path> does not exist or is empty."
        needs = get_info(name).needs(data_dir, manual)
        return HarnessError(f"preparing {name}: {first_line.rstrip('.')}; it needs {needs}")
    code = getattr(e, "errno", None)
    if code is None and any(m in str(e) for m in ("No space left on device", "Not enough disk space")):
        code = errno.ENOSPC
    mapped = os_error(OSError(code, str(e)), data_dir, "--data-dir") if code is not None else None
    return HarnessError(f"preparing {name}: {mapped}") if mapped is not None else None
