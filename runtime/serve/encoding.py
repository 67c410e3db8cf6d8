"""Audio encodings for the speech endpoint's `response_format`: wav, pcm, flac, mp3 and opus.

The model gives float32 mono audio in [-1, 1]; an OpenAI-compatible `POST /v1/audio/speech` answers
with bytes in the requested format, either as one whole file (`encode`) or as a stream sent while
synthesis is still running (`StreamEncoder`). Everything goes through soundfile (libsndfile) and
soxr, the runtime's own dependencies, so serving adds no codec library.

    enc = StreamEncoder("mp3", 22050)
    for chunk in chunks:            # float32 arrays as the model produces them
        send(enc.write(chunk))      # may be b"": the codec is still filling a frame or page
    send(enc.close())               # the encoder's tail

What each format does (libsndfile 1.2.2; measured in tests/serve/test_encoding.py):

- pcm: raw s16le mono samples at the input rate, no header; every `write` returns its samples.
- wav: 16-bit PCM. Whole files carry exact RIFF sizes. A stream cannot know its length up front, so
  its 44-byte header says 0xFFFFFFFF for the RIFF and data sizes (the usual streaming convention;
  libsndfile reads such a file to the end of its data); the first `write` returns the header with
  its samples.
- flac: 16-bit FLAC; every `write` returns the frames it completed (a frame is 4096 samples, so a
  chunk's last partial frame waits for the next one). At close libsndfile seeks back to fill in
  STREAMINFO (total samples, MD5, frame sizes); a stream has already sent that block with zeros
  there, which FLAC defines as "unknown", so the streamed file decodes to every sample, exactly.
  (A reader that trusts the total cannot cope: libsndfile then reports 2**63 - 1 frames, so
  `soundfile.read` of a streamed FLAC fails; reading it as a stream, block by block, works.)
- mp3: LAME through libsndfile at a constant bitrate (`mp3_bitrate_kbps`: 64 kbit/s at 16-24 kHz,
  128 at 32-48 kHz, 32 below), at the input rate when MPEG allows it (8/11.025/12/16/22.05/24/32/
  44.1/48 kHz), otherwise soxr resamples to the next allowed rate up. Constant, not libsndfile's
  default VBR: without a complete Info tag, which a stream cannot have, libsndfile estimates an
  MP3's length from its first frame's bitrate, so a VBR stream reads back short (24056 of 33075
  samples measured); a CBR one reads back whole. Every `write` returns the frames it completed
  (LAME runs about 1100 samples behind its input). LAME reserves the first frame for its Xing/Info
  tag (frame count, encoder delay and padding, for gapless playback), writes it as zeros and fills
  it in at close by seeking back; a stream cannot take bytes back, so `StreamEncoder` leaves that
  frame out and sends plain audio frames. Without the tag a decoder cannot trim the codec delay:
  streamed mp3 decodes to the input delayed by 1105 samples of silence (LAME's 576 plus the
  decoder's 529) with less than two frames of padding at the end. A whole file (`encode`) keeps
  the tag and decodes gaplessly to exactly the input's length.
- opus: Ogg Opus at libsndfile's default bitrate. libsndfile's Opus accepts 8/12/16/24/48 kHz only,
  so other rates are resampled by soxr (streaming, `soxr.ResampleStream`) to the next supported
  rate up (22.05 kHz -> 24 kHz, 44.1 kHz -> 48 kHz); `StreamEncoder.sample_rate` says which. libsndfile
  holds encoded packets until an Ogg page is due, by default once a second of audio; a stream asks
  for a page every 100 ms instead (about 3 % more bytes), so each `write` returns nearly all of its
  audio. Nothing is rewritten at close.

Empty audio: pcm gives b"", wav a header with no samples; libsndfile writes nothing at all for an
empty flac or mp3 file and, for opus, headers without audio that it cannot read back.

int16 conversion (wav, pcm, flac) is the CLI's (`audio.to_int16`: clip, scale by 32767, truncate
toward zero, as upstream's writer does), the same in `encode` and `StreamEncoder`. mp3 and opus get the
clipped float samples.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

from ..audio import to_int16
import soxr

FORMATS: tuple[str, ...] = ("mp3", "opus", "flac", "wav", "pcm")

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Ogg-encapsulated Opus (RFC 7845)
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # raw s16le mono at StreamEncoder.sample_rate
}

# libsndfile (format, subtype) for the formats it encodes; wav and pcm are written here directly.
_SOUNDFILE_FORMATS: dict[str, tuple[str, str]] = {
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}

# Sample rates libsndfile's encoders accept; formats not listed take any rate.
_SUPPORTED_RATES: dict[str, tuple[int, ...]] = {
    "opus": (8000, 12000, 16000, 24000, 48000),
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
}

_OPEN_ENDED = 0xFFFFFFFF  # RIFF and data chunk size of a WAV whose length is not known yet
_WAV_HEADER_BYTES = 44
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302  # sndfile.h; soundfile has no wrapper for it
_STREAM_OGG_PAGE_MS = 100.0


class EncodingError(ValueError):
    """A `response_format` this server cannot produce."""


def check_format(fmt: str) -> str:
    """`fmt` if it is one of FORMATS, else EncodingError naming the supported ones."""
    if fmt not in FORMATS:
        raise EncodingError(f"response_format {fmt!r} is not supported; supported: {', '.join(FORMATS)}")
    return fmt


def output_rate(fmt: str, sample_rate: int) -> int:
    """The rate `fmt` is written at for input at `sample_rate`: the input rate where the encoder takes
    it, else the lowest supported rate above it (the highest one for inputs above them all), so that
    resampling never drops bandwidth the input has."""
    rates = _SUPPORTED_RATES.get(check_format(fmt))
    if rates is None or sample_rate in rates:
        return sample_rate
    return next((r for r in rates if r >= sample_rate), rates[-1])


def clip_audio(audio: np.ndarray) -> np.ndarray:
    """`audio` as a float32 1-D array clipped to [-1, 1], NaN as silence. ValueError unless it is a 1-D
    float array (integer samples would be clipped to full scale, not rescaled)."""
    x = np.asarray(audio)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected mono float audio as a 1-D array, got {x.dtype} of shape {x.shape}")
    return np.clip(np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0), -1.0, 1.0)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Little-endian int16 samples as the CLI writes them (audio.to_int16: upstream's scaling, 32767,
    truncated toward zero), so a server's WAV equals `indextts2-onnx synth`'s for the same call."""
    return to_int16(clip_audio(audio)).astype("<i2")


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """The 44-byte RIFF/WAVE header of 16-bit PCM mono at `sample_rate` with `data_bytes` of samples,
    or, with None, the open-ended header of a stream (RIFF and data sizes 0xFFFFFFFF)."""
    if data_bytes is None:
        riff_size = data_size = _OPEN_ENDED
    else:
        riff_size, data_size = _WAV_HEADER_BYTES - 8 + data_bytes, data_bytes
    channels, bits = 1, 16
    block_align = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate,
                                    sample_rate * block_align, block_align, bits)
            + b"data" + struct.pack("<I", data_size))


def _check_rate(sample_rate: int) -> int:
    """`sample_rate` as an int, ValueError unless it is a positive whole number of Hz."""
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def _resampler(in_rate: int, out_rate: int):
    """A streaming soxr HQ resampler (mono float32), or None when the rates agree."""
    if in_rate == out_rate:
        return None
    return soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")


def _codec_samples(fmt: str, audio: np.ndarray) -> np.ndarray:
    """What libsndfile is given for `fmt`: int16 for the lossless formats (so the file holds exactly
    `to_pcm16`'s samples), clipped float32 for the lossy codecs."""
    return to_pcm16(audio) if fmt == "flac" else clip_audio(audio)


def mp3_bitrate_kbps(sample_rate: int) -> int:
    """The constant MP3 bitrate used at `sample_rate` (one of the MPEG rates): 32 kbit/s for MPEG-2.5
    (8-12 kHz), 64 for MPEG-2 (16-24 kHz), 128 for MPEG-1 (32-48 kHz)."""
    return 32 if sample_rate < 16000 else 64 if sample_rate < 32000 else 128


def _mp3_compression_level(sample_rate: int) -> float:
    """The soundfile `compression_level` that makes libsndfile ask LAME for `mp3_bitrate_kbps`: in
    constant-bitrate mode libsndfile maps level c to int(hi - c * (hi - lo)) kbit/s, with (lo, hi) =
    (8, 64) for MPEG-2.5, (8, 160) for MPEG-2 and (32, 320) for MPEG-1 (mpeg_l3_encode.c); half a
    kbit/s of margin keeps float rounding from truncating to the bitrate below."""
    lo, hi = (8, 64) if sample_rate < 16000 else (8, 160) if sample_rate < 32000 else (32, 320)
    return (hi - mp3_bitrate_kbps(sample_rate) - 0.5) / (hi - lo)


def _open_soundfile(target, fmt: str, sample_rate: int) -> sf.SoundFile:
    """A libsndfile writer for `fmt` (flac, mp3 or opus) on the file-like `target`. mp3 is constant
    bitrate: libsndfile (and so soundfile) estimates an MP3's length from its first frame's bitrate
    when no complete Xing/Info tag says otherwise, which a stream cannot have, so a VBR stream reads
    back short (measured: 24056 of 33075 samples); a CBR one reads back whole."""
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    if fmt == "mp3":
        return sf.SoundFile(target, "w", sample_rate, 1, format=container, subtype=subtype,
                            compression_level=_mp3_compression_level(sample_rate), bitrate_mode="CONSTANT")
    return sf.SoundFile(target, "w", sample_rate, 1, format=container, subtype=subtype)


# MPEG audio Layer III frame geometry, indexed by the header's version bits (0: MPEG-2.5, 2: MPEG-2,
# 3: MPEG-1): bitrates in kbit/s by bitrate index, sample rates by rate index.
_MP3_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_KBPS[0] = _MP3_KBPS[2]
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame_length(header: bytes) -> int | None:
    """Byte length of the MPEG-1/2/2.5 Layer III frame whose 4-byte header starts `header`, or None if
    it is not one (no sync word, free-format or reserved fields)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps, rate = _MP3_KBPS[version][bitrate_index], _MP3_RATES[version][rate_index]
    return (144 if version == 3 else 72) * kbps * 1000 // rate + padding


def lame_placeholder_length(head: bytes) -> int | None:
    """How many bytes of LAME's placeholder frame start `head`, the stream's first bytes: LAME reserves
    the first frame for its Xing/Info tag and writes it as a header followed by zeros, to be filled in
    at close by seeking back, which a stream cannot do. Returns the frame's length if `head` starts with
    such an all-zero frame, 0 if it starts with anything else, None while `head` is too short to tell."""
    length = mp3_frame_length(head[:4])
    if length is None:
        return None if len(head) < 4 else 0
    if len(head) < length:
        return None if not any(head[4:]) else 0
    return length if not any(head[4:length]) else 0


def _set_ogg_page_latency(f: sf.SoundFile, milliseconds: float) -> bool:
    """Ask libsndfile's Ogg writer to close a page every `milliseconds` of audio (default 1000 ms) so a
    stream's bytes come out with little delay. Uses soundfile's private libsndfile handle, there being
    no public wrapper; returns False (and the default paging stays) if that handle is not there."""
    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    handle = getattr(f, "_file", None)
    if snd is None or ffi is None or handle is None:
        return False
    value = ffi.new("double*", milliseconds)
    return snd.sf_command(handle, _SFC_SET_OGG_PAGE_LATENCY_MS, value, ffi.sizeof("double")) == 0


class _StreamSink:
    """The file libsndfile writes a stream into (soundfile's virtual IO: write, seek, tell, read).

    It keeps only the bytes not yet handed out: `take()` returns everything appended past the
    high-water mark of what was already taken and forgets it, so memory stays at one chunk's worth.
    libsndfile may seek back to rewrite bytes already taken (FLAC's STREAMINFO, MP3's info frame at
    close); those writes cannot reach a client any more and are dropped, counted in `late_bytes`."""

    def __init__(self) -> None:
        self._buf = bytearray()  # file bytes from offset self._base on, not yet taken
        self._base = 0           # file offset of self._buf[0]: everything before it was taken
        self._pos = 0
        self.late_bytes = 0

    def _end(self) -> int:
        return self._base + len(self._buf)

    def write(self, data) -> int:
        data = bytes(data)
        start, end = self._pos, self._pos + len(data)
        skip = min(max(self._base - start, 0), len(data))  # the part behind the mark is lost
        self.late_bytes += skip
        if skip < len(data):
            lo = start + skip - self._base
            if lo > len(self._buf):
                self._buf.extend(bytes(lo - len(self._buf)))  # a seek past the end leaves a zero gap
            self._buf[lo:lo + len(data) - skip] = data[skip:]
        self._pos = end
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end()}[whence]
        self._pos = max(0, origin + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self._pos < self._base:
            raise OSError("cannot read back audio bytes that were already streamed")
        lo = self._pos - self._base
        data = bytes(self._buf[lo:] if size is None or size < 0 else self._buf[lo:lo + size])
        self._pos += len(data)
        return data

    def take(self) -> bytes:
        """The bytes appended since the last take (b"" if none), forgotten from here on."""
        data = bytes(self._buf)
        self._base += len(self._buf)
        self._buf.clear()
        return data


class StreamEncoder:
    """Encodes one response's audio chunk by chunk into `fmt`, returning bytes as they are ready.

    `write(chunk)` encodes float32 mono audio at the input rate and returns the bytes ready now (b""
    while a codec is filling a frame or page); `close()` flushes the encoder and returns the rest.
    The concatenation of everything returned is one playable file in `fmt`; see the module docstring
    for what each format holds back and what a stream cannot rewrite. `sample_rate` is the rate of the
    output, which differs from the input's only where the codec needs it (opus, mp3 at odd rates)."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.format = check_format(fmt)
        self.input_rate = _check_rate(sample_rate)
        self.sample_rate = output_rate(fmt, self.input_rate)
        self._resample = _resampler(self.input_rate, self.sample_rate)
        self._header_sent = fmt != "wav"
        self._closed = False
        self._mp3_head: bytearray | None = bytearray() if fmt == "mp3" else None
        self._sink: _StreamSink | None = None
        self._file: sf.SoundFile | None = None
        if fmt in _SOUNDFILE_FORMATS:
            self._sink = _StreamSink()
            self._file = _open_soundfile(self._sink, fmt, self.sample_rate)
            if fmt == "opus":
                _set_ogg_page_latency(self._file, _STREAM_OGG_PAGE_MS)

    @property
    def late_bytes(self) -> int:
        """Bytes libsndfile rewrote behind what was already returned (lost to the stream)."""
        return self._sink.late_bytes if self._sink is not None else 0

    def write(self, audio: np.ndarray) -> bytes:
        """Encode this chunk; returns the bytes ready now (possibly b"")."""
        if self._closed:
            raise ValueError("StreamEncoder.write after close")
        x = clip_audio(audio)
        if self._resample is not None:
            x = self._resample.resample_chunk(x, last=False)
        return self._encode(x)

    def close(self) -> bytes:
        """Flush the resampler and the encoder; returns the remaining bytes. A second close gives b""."""
        if self._closed:
            return b""
        tail = b""
        if self._resample is not None:
            tail = self._encode(self._resample.resample_chunk(np.zeros(0, np.float32), last=True))
        self._closed = True
        if self._file is not None:
            self._file.close()
            return tail + self._take(final=True)
        return tail + self._wav_header_once()

    def _take(self, final: bool = False) -> bytes:
        """The encoder's new bytes; for mp3, without LAME's placeholder frame at the start (held back
        until a whole first frame is there to look at, or sent as it is if the file ends first)."""
        data = self._sink.take()
        if self._mp3_head is None:
            return data
        self._mp3_head += data
        skip = lame_placeholder_length(bytes(self._mp3_head))
        if skip is None and not final:
            return b""
        data, self._mp3_head = bytes(self._mp3_head[skip or 0:]), None
        return data

    def _wav_header_once(self) -> bytes:
        """The open-ended WAV header the first time it is asked for (wav only), else b""."""
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.sample_rate)

    def _encode(self, x: np.ndarray) -> bytes:
        """Encode samples already at the output rate."""
        if self._file is None:  # wav or pcm
            return self._wav_header_once() + to_pcm16(x).tobytes()
        if x.size:
            self._file.write(_codec_samples(self.format, x))
        return self._take()


def encode(fmt: str, audio: np.ndarray, sample_rate: int) -> bytes:
    """`audio` (float32 mono in [-1, 1] at `sample_rate`) as one whole file in `fmt`, with every header
    field final: WAV with exact RIFF sizes, FLAC with its STREAMINFO, MP3 with its gapless info frame.
    The file's rate is `output_rate(fmt, sample_rate)` (opus and mp3 resample where they must)."""
    check_format(fmt)
    in_rate = _check_rate(sample_rate)
    rate = output_rate(fmt, in_rate)
    x = clip_audio(audio)
    if rate != in_rate:
        x = soxr.resample(x, in_rate, rate, "HQ").astype(np.float32)
    if fmt == "pcm":
        return to_pcm16(x).tobytes()
    out = io.BytesIO()
    if fmt == "wav":
        sf.write(out, to_pcm16(x), rate, format="WAV", subtype="PCM_16")
    else:
        with _open_soundfile(out, fmt, rate) as f:
            if x.size:
                f.write(_codec_samples(fmt, x))
    return out.getvalue()
