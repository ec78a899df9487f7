"""The Hugging Face hub, through ``huggingface_hub``: list a repository's files with their hashes, download one file
resumably into a cache and verify it, and turn the client's errors into one of a few kinds users can act on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from thinkdiff.errors import ThinkDiffError

CHUNK = 8 * 2**20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository as the hub lists it: LFS files carry a sha256, the others their git blob id."""

    path: str
    size: int
    sha256: str | None
    blob_id: str | None


@dataclass(frozen=True)
class Listing:
    repo_id: str
    commit: str
    files: dict[str, RemoteFile]


class HubError(ThinkDiffError):
    """A hub request failed; ``kind`` is "gated", "offline" or "other"."""

    def __init__(self, kind: str, repo_id: str, detail: str) -> None:
        super().__init__(f"{repo_id}: {detail}")
        self.kind, self.repo_id, self.detail = kind, repo_id, detail


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of the HTTP client huggingface_hub uses: requests (0.x; its ConnectionError is an OSError),
    httpx (1.x) or its successor package httpx2 (2.x)."""
    errors: list[type[BaseException]] = [OfflineModeIsEnabled, OSError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def offline_mode() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def _hub_error(e: BaseException, repo_id: str) -> HubError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, GatedRepoError) or (isinstance(e, HfHubHTTPError) and status in (401, 403)):
        return HubError("gated", repo_id, f"the hub answered {status}: the repository is gated")
    if isinstance(e, HfHubHTTPError):
        return HubError("other", repo_id, f"the hub answered {status}: {str(e).splitlines()[0]}")
    if isinstance(e, _network_errors()):
        return HubError("offline", repo_id, "offline mode is on (HF_HUB_OFFLINE)" if offline_mode()
                        else f"the hub cannot be reached ({type(e).__name__}: {e})")
    raise e


def list_repo(repo_id: str) -> Listing:
    """Every file of the repository's current commit with size and hash (one model-info call)."""
    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except (HfHubHTTPError, *_network_errors()) as e:
        raise _hub_error(e, repo_id) from e
    files = {s.rfilename: RemoteFile(s.rfilename, int(s.lfs.size if s.lfs else s.size or 0),
                                     s.lfs.sha256 if s.lfs else None, s.blob_id) for s in info.siblings or []}
    return Listing(repo_id, str(info.sha), files)


def file_digest(path: Path, remote: RemoteFile) -> str:
    """The hash the hub lists for ``remote``, computed over ``path``: sha256 (LFS) or the git blob id (sha1 of
    ``blob <size>\\0`` + content)."""
    digest = hashlib.sha256() if remote.sha256 else hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_intact(path: Path, remote: RemoteFile) -> bool:
    return path.stat().st_size == remote.size and file_digest(path, remote) == (remote.sha256 or remote.blob_id)


def cached_path(cache: Path, listing: Listing, remote: RemoteFile) -> Path:
    return cache / listing.repo_id / listing.commit / remote.path


def download(cache: Path, listing: Listing, remote: RemoteFile) -> Path:
    """The verified file in the cache, downloading what is not there yet.

    Bytes go to ``<file>.partial`` next to the final name; a partial left by an interrupted run is continued with an HTTP
    Range request (huggingface_hub's ``http_get``, with its progress bar and retries). Only a file whose size and hash
    equal the hub's listing is renamed to the final name, so a file there is always whole.
    """
    target = cached_path(cache, listing, remote)
    if target.is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(listing.repo_id, remote.path, revision=listing.commit)
    resume = partial.stat().st_size if partial.is_file() else 0
    if resume > remote.size:
        partial.unlink()
        resume = 0
    try:
        with open(partial, "r+b" if resume else "wb") as f:
            f.seek(resume)
            http_get(url, f, resume_size=resume, headers=build_hf_headers(), expected_size=remote.size,
                     displayed_filename=remote.path)
    except (HfHubHTTPError, *_network_errors()) as e:
        if "Consistency check failed" in str(e):  # the server sent another size than it listed
            partial.unlink(missing_ok=True)
            raise HubError("other", listing.repo_id, f"{remote.path}: {e}") from e
        raise _hub_error(e, listing.repo_id) from e
    if not is_intact(partial, remote):
        partial.unlink()
        raise HubError("other", listing.repo_id, f"{remote.path} does not match the hub's sha256/size after download "
                       "(deleted; run the command again)")
    partial.replace(target)
    return target
