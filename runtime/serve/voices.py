"""`VoiceStore`: the server's registered voices, one folder on disk.

A voice is a prepared `Speaker` (`{id}.npz`, Speaker.save) and its metadata (`{id}.json`: id, name,
created_at, source, seconds), both written atomically, the metadata last; the JSON is what makes a
voice listed with its name, and a voice whose files are gone is gone. Audio files dropped into the
folder (`{id}.wav`, .flac, .ogg, .mp3) are prepared once at start and saved the same way; `.npz` files
without metadata are registered under their file name.

The folder is the truth: listing and lookups read it (a stat per lookup), so several server processes
(Ray Serve replicas) sharing one folder see each other's uploads and deletions. Prepared Speakers are
cached in memory per (id, file mtime), at most `cache_size` of them.

Ids are what clients put in `voice`: 1-64 characters of letters, digits, `_`, `-` and `.`, not starting
with `.`; nothing else can name a file, so no id escapes the folder.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..audio import atomic_write
from ..errors import InputError
from ..speaker import Speaker

_LOG = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class VoiceNotFound(InputError):
    """No registered voice has this id."""


def check_id(voice_id: str, what: str = "voice") -> str:
    """`voice_id` when it is a well-formed id, else InputError naming it."""
    if not isinstance(voice_id, str) or not ID_PATTERN.fullmatch(voice_id):
        raise InputError(f"{what}: {voice_id!r} is not a voice id",
                         "ids are 1-64 letters, digits, '_', '-' or '.', not starting with '.'")
    return voice_id


def slug(name: str) -> str:
    """An id made from a display name: runs of other characters become '-', at most 64 characters."""
    s = re.sub(r"[^A-Za-z0-9_.\-]+", "-", name.strip()).strip("-.")[:64]
    return s or "voice"


@dataclass(frozen=True)
class Voice:
    """A registered voice's metadata (the JSON file)."""

    id: str
    name: str
    created_at: int  # unix seconds
    source: str = "upload"  # "upload", or the audio file it was prepared from
    seconds: float = 0.0  # length of the prompt audio, when known


class VoiceStore:
    """Registered voices in `folder` (created if missing); see the module docstring."""

    def __init__(self, folder: str | Path, cache_size: int = 64, max_voices: int = 1000):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--voices {self.folder}: cannot create the folder ({e})",
                             "pass a writable folder") from e
        self.cache_size, self.max_voices = cache_size, max_voices
        self._cache: OrderedDict[tuple[str, float], Speaker] = OrderedDict()
        self._lock = threading.Lock()  # the cache, and id choice + write of a new voice

    def _path(self, voice_id: str, suffix: str) -> Path:
        return self.folder / f"{check_id(voice_id)}{suffix}"

    # --- reading --------------------------------------------------------------------------------

    def list(self) -> list[Voice]:
        """Every voice, by id."""
        return [self._meta(p.stem) for p in sorted(self.folder.glob("*.npz")) if ID_PATTERN.fullmatch(p.stem)]

    def _meta(self, voice_id: str) -> Voice:
        meta = self._path(voice_id, ".json")
        try:
            return Voice(**json.loads(meta.read_text(encoding="utf-8")))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as e:
            _LOG.warning("%s: unreadable voice metadata (%s); listed under its file name", meta, e)
        return Voice(voice_id, voice_id, int(self._path(voice_id, ".npz").stat().st_mtime), "file")

    def exists(self, voice_id: str) -> bool:
        return ID_PATTERN.fullmatch(voice_id or "") is not None and self._path(voice_id, ".npz").is_file()

    def get(self, voice_id: str, param: str = "voice") -> Speaker:
        """The voice's Speaker (cached); VoiceNotFound when there is none with this id."""
        check_id(voice_id, param)
        path = self._path(voice_id, ".npz")
        try:
            key = (voice_id, path.stat().st_mtime)
        except FileNotFoundError:
            raise VoiceNotFound(f"{param}: no voice {voice_id!r}",
                                "GET /v1/audio/voices lists them; POST /v1/audio/voices adds one") from None
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        speaker = Speaker.load(path)
        with self._lock:
            self._cache[key] = speaker
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return speaker

    # --- writing --------------------------------------------------------------------------------

    def add(self, name: str, speaker: Speaker, source: str = "upload", seconds: float = 0.0,
            voice_id: str | None = None) -> Voice:
        """Register `speaker` under `voice_id` (None: the name itself when it is a free id, else its slug
        with the first free `-2`, `-3`, ... suffix). Writes the .npz, then the .json; a failure leaves
        neither. InputError when the store is full or an explicit id is taken."""
        with self._lock:
            if voice_id is None:
                voice_id = self._free_id(name)
            elif self.exists(voice_id):
                raise InputError(f"voice {voice_id!r} exists already", "delete it first")
            if len(list(self.folder.glob("*.npz"))) >= self.max_voices:
                raise InputError(f"the server holds {self.max_voices} voices, its limit", "delete some first")
            voice = Voice(check_id(voice_id), name, int(time.time()), source, round(float(seconds), 3))
            npz, meta = self._path(voice_id, ".npz"), self._path(voice_id, ".json")
            speaker.save(npz)
            try:
                atomic_write(meta, lambda f: f.write(json.dumps(asdict(voice), ensure_ascii=False).encode()),
                             "voice metadata")
            except BaseException:
                npz.unlink(missing_ok=True)
                raise
        return voice

    def _free_id(self, name: str) -> str:
        base = name if ID_PATTERN.fullmatch(name) else slug(name)
        candidate, n = base, 1
        while self.exists(candidate) or any(self._path(candidate, s).exists() for s in AUDIO_SUFFIXES):
            n += 1
            candidate = f"{base[:60]}-{n}"
        return candidate

    def delete(self, voice_id: str) -> Voice:
        """Remove a voice (its .npz, .json and any source audio of the same id) -> its metadata."""
        check_id(voice_id, "voice id")
        if not self.exists(voice_id):
            raise VoiceNotFound(f"voice id: no voice {voice_id!r}", "GET /v1/audio/voices lists them")
        voice = self._meta(voice_id)
        for suffix in (".json", ".npz", *AUDIO_SUFFIXES):
            self._path(voice_id, suffix).unlink(missing_ok=True)
        with self._lock:
            for key in [k for k in self._cache if k[0] == voice_id]:
                del self._cache[key]
        return voice

    def prepare_dropped(self, prepare: Callable[[Path], tuple[Speaker, float]]) -> list[str]:
        """Prepare every audio file in the folder that has no .npz yet (`prepare(path)` -> (Speaker,
        seconds)) and register it under its file name -> the ids added. A file that cannot be prepared
        is logged and skipped: one bad file does not stop the server."""
        added = []
        for path in sorted(self.folder.iterdir()):
            if path.suffix.lower() not in AUDIO_SUFFIXES or not ID_PATTERN.fullmatch(path.stem):
                continue
            if self.exists(path.stem):
                continue
            try:
                speaker, seconds = prepare(path)
                self.add(path.stem, speaker, source=path.name, seconds=seconds, voice_id=path.stem)
                added.append(path.stem)
            except InputError as e:
                _LOG.warning("voices: skipped %s: %s", path.name, e)
        return added
