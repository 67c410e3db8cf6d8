"""Response encodings: what each format streams chunk by chunk, and that the bytes, streamed or whole,
decode back to the input (exactly for wav/pcm/flac, within measured bounds for mp3/opus).

Measured with libsndfile 1.2.2 on the 1.5 s test signal in three 0.5 s chunks: correlation with the
input after aligning for the codec delay 0.9997 for mp3 (64 kbit/s CBR at 22.05 and 24 kHz, 128 at
44.1 kHz), 0.991 for opus at 24 kHz and 0.998 at 48 kHz, the same streamed or whole; the thresholds
below leave a margin under those."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
import soxr

from indextts2_onnx.runtime.serve.encoding import (FORMATS, MEDIA_TYPES, EncodingError, StreamEncoder,
                                                   _StreamSink, check_format, encode,
                                                   lame_placeholder_length, mp3_frame_length,
                                                   output_rate, to_pcm16, wav_header)

SECONDS = 1.5
MP3_DELAY = 1105          # LAME's encoder delay (576) plus the decoder's (529), measured
MP3_MIN_CORR = 0.99       # measured 0.9997
OPUS_MIN_CORR = 0.97      # measured 0.991 at 24 kHz, 0.998 at 48 kHz


def speechlike(sr: int, seconds: float = SECONDS) -> np.ndarray:
    """A voice-like test signal: 8 harmonics of a pitch gliding around 140 Hz under a 4 Hz syllable
    envelope, over a little noise, peak 0.5. Aperiodic, so a codec delay is found without ambiguity
    (a plain sine would match itself one period later)."""
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    x = 0.5 * x / np.abs(x).max() + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return x.astype(np.float32)


def stream(fmt: str, x: np.ndarray, sr: int, chunks: int = 3) -> tuple[StreamEncoder, list[bytes]]:
    """Encode `x` in `chunks` equal writes: (the encoder, [bytes of each write..., bytes of close])."""
    enc = StreamEncoder(fmt, sr)
    parts = [enc.write(c) for c in np.array_split(x, chunks)]
    return enc, parts + [enc.close()]


class _Unseekable(sf.SoundFile):
    """Reads a file of unknown length as a stream. A streamed FLAC says 0 ("unknown") for its total
    samples; libsndfile then reports 2**63 - 1 frames, so `sf.read` tries to allocate that much and
    soundfile's own read, which seeks to its new position afterwards, fails. Read as a stream,
    libsndfile decodes every sample."""

    def seekable(self) -> bool:
        return False


def read_stream(data: bytes, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Decode streamed bytes with soundfile, block by block to the end: (samples, sample rate)."""
    with _Unseekable(io.BytesIO(data)) as f:
        blocks = []
        while True:
            blocks.append(f.read(8192, dtype=dtype))
            if len(blocks[-1]) < 8192:
                return np.concatenate(blocks), f.samplerate


def delay(ref: np.ndarray, out: np.ndarray, max_lag: int = 3000) -> int:
    """The lag (0..max_lag samples) at which `out` best matches `ref`, by FFT cross-correlation."""
    n = len(ref) + len(out)
    xc = np.fft.irfft(np.fft.rfft(out, n) * np.conj(np.fft.rfft(ref, n)), n)
    return int(np.argmax(xc[:max_lag]))


def correlation(ref: np.ndarray, out: np.ndarray, lag: int) -> float:
    n = min(len(ref), len(out) - lag)
    return float(np.corrcoef(ref[:n], out[lag:lag + n])[0, 1])


# ---- format names ----


def test_check_format_names_the_supported_formats():
    assert [check_format(f) for f in FORMATS] == ["mp3", "opus", "flac", "wav", "pcm"]
    assert set(MEDIA_TYPES) == set(FORMATS) and MEDIA_TYPES["mp3"] == "audio/mpeg"
    with pytest.raises(EncodingError) as e:
        check_format("aac")
    assert str(e.value) == "response_format 'aac' is not supported; supported: mp3, opus, flac, wav, pcm"
    assert isinstance(e.value, ValueError)
    with pytest.raises(EncodingError, match="supported: mp3, opus"):
        StreamEncoder("WAV", 22050)  # names are case-sensitive, as in the OpenAI API
    with pytest.raises(EncodingError):
        encode("aac", np.zeros(10, np.float32), 22050)


def test_output_rates():
    assert [output_rate("opus", r) for r in (22050, 24000, 44100, 16000, 96000)] == [24000, 24000, 48000,
                                                                                   16000, 48000]
    assert [output_rate("mp3", r) for r in (22050, 20000, 44100)] == [22050, 22050, 44100]
    assert [output_rate(f, 22050) for f in ("wav", "pcm", "flac")] == [22050] * 3


def test_int16_conversion_is_the_clis():
    x = np.array([0.0, 0.25, -0.25, 1.0, -1.0, 1.5, -2.0, 0.6 / 32767, np.nan], np.float32)
    # 0.25 * 32767 = 8191.75 -> 8191: truncated toward zero, as the CLI and upstream's writer do
    assert to_pcm16(x).tolist() == [0, 8191, -8191, 32767, -32767, 32767, -32767, 0, 0]
    assert to_pcm16(x).dtype == np.dtype("<i2")


def test_bad_audio_is_rejected():
    enc = StreamEncoder("pcm", 22050)
    with pytest.raises(ValueError, match="1-D"):
        enc.write(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="float"):
        enc.write(np.zeros(10, np.int16))  # int16 samples would be clipped to full scale
    with pytest.raises(ValueError, match="sample_rate"):
        StreamEncoder("wav", 0)


# ---- streaming: lossless ----


@pytest.mark.parametrize("sr", [22050, 24000])
def test_streamed_pcm_is_raw_samples_as_they_come(sr):
    x = speechlike(sr)
    enc, parts = stream("pcm", x, sr)
    assert [len(p) for p in parts] == [2 * len(c) for c in np.array_split(x, 3)] + [0]
    assert np.array_equal(np.frombuffer(b"".join(parts), "<i2"), to_pcm16(x))
    assert enc.sample_rate == sr


@pytest.mark.parametrize("sr", [22050, 24000])
def test_streamed_wav_has_an_open_ended_header(sr):
    x = speechlike(sr)
    enc, parts = stream("wav", x, sr)
    first = np.array_split(x, 3)[0]
    assert len(parts[0]) == 44 + 2 * len(first) and parts[-1] == b""
    data = b"".join(parts)
    riff, riff_size, wave, fmt_id, fmt_size, tag, ch, rate, byte_rate, align, bits, data_id, data_size = \
        struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44])
    assert (riff, wave, fmt_id, data_id) == (b"RIFF", b"WAVE", b"fmt ", b"data")
    assert (riff_size, data_size) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert (fmt_size, tag, ch, rate, byte_rate, align, bits) == (16, 1, 1, sr, 2 * sr, 2, 16)
    assert np.array_equal(np.frombuffer(data[44:], "<i2"), to_pcm16(x))
    # libsndfile reads the open-ended header to the end of the data, as players do
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == sr and np.array_equal(decoded, to_pcm16(x))


@pytest.mark.parametrize("sr", [22050, 24000])
def test_streamed_flac_is_lossless_and_incremental(sr):
    x = speechlike(sr)
    enc, parts = stream("flac", x, sr)
    # each 0.5 s write completes at least one 4096-sample frame, so each returns bytes
    assert all(len(p) > 0 for p in parts[:3]), [len(p) for p in parts]
    data = b"".join(parts)
    decoded, rate = read_stream(data, "int16")
    assert rate == sr and np.array_equal(decoded, to_pcm16(x))
    # what the stream could not take back: STREAMINFO's totals, rewritten at close (27 bytes measured)
    assert 0 < enc.late_bytes <= 34
    total_samples = int.from_bytes(data[18:26], "big") & (2**36 - 1)
    assert data[:4] == b"fLaC" and total_samples == 0  # "unknown" in the stream ...
    whole = encode("flac", x, sr)
    assert int.from_bytes(whole[18:26], "big") & (2**36 - 1) == len(x)  # ... exact in a whole file


# ---- streaming: lossy ----


@pytest.mark.parametrize("sr", [22050, 24000])
def test_streamed_mp3_decodes_to_the_input_after_the_codec_delay(sr):
    x = speechlike(sr)
    enc, parts = stream("mp3", x, sr)
    assert all(len(p) > 0 for p in parts[:3]), [len(p) for p in parts]
    data = b"".join(parts)
    # LAME's all-zero placeholder frame was left out: the stream starts with a real audio frame
    assert lame_placeholder_length(data) == 0 and mp3_frame_length(data[:4]) is not None
    assert enc.late_bytes == mp3_frame_length(data[:4])  # the Info tag, written back at close, dropped
    kbps = len(data) * 8 / SECONDS / 1000
    assert 60 < kbps < 70, kbps  # constant 64 kbit/s
    for decoded, rate in (read_stream(data), sf.read(io.BytesIO(data), dtype="float32")):
        frame = 576  # MPEG-2 Layer III frame at 22.05 and 24 kHz
        extra = len(decoded) - len(x)
        assert rate == sr and MP3_DELAY <= extra < MP3_DELAY + 2 * frame, extra
        lag = delay(x, decoded)
        assert lag == MP3_DELAY and correlation(x, decoded, lag) > MP3_MIN_CORR


@pytest.mark.parametrize("sr", [22050, 24000, 44100])
def test_streamed_opus_is_resampled_to_a_supported_rate(sr):
    x = speechlike(sr)
    enc, parts = stream("opus", x, sr)
    assert enc.sample_rate in (8000, 12000, 16000, 24000, 48000)
    assert enc.sample_rate == {22050: 24000, 24000: 24000, 44100: 48000}[sr]
    # Ogg pages every 100 ms: each 0.5 s write returns bytes (with libsndfile's default 1 s paging
    # the second write returns nothing)
    assert all(len(p) > 0 for p in parts[:3]), [len(p) for p in parts]
    assert enc.late_bytes == 0
    decoded, rate = read_stream(b"".join(parts))
    assert rate == enc.sample_rate
    assert len(decoded) == round(len(x) * enc.sample_rate / sr)  # the resampled duration, exactly
    ref = x if sr == enc.sample_rate else soxr.resample(x, sr, enc.sample_rate, "HQ")
    lag = delay(ref, decoded)
    assert lag == 0 and correlation(ref, decoded, lag) > OPUS_MIN_CORR  # the pre-skip trims the delay


def test_mp3_at_a_rate_mpeg_lacks_is_resampled():
    x = speechlike(20000)
    enc, parts = stream("mp3", x, 20000)
    decoded, rate = read_stream(b"".join(parts))
    assert enc.sample_rate == rate == 22050
    assert MP3_DELAY <= len(decoded) - round(len(x) * 22050 / 20000) < MP3_DELAY + 2 * 576


# ---- whole files ----


@pytest.mark.parametrize("sr", [22050, 24000])
def test_whole_wav_is_what_soundfile_writes(sr):
    x = speechlike(sr)
    data = encode("wav", x, sr)
    ref = io.BytesIO()
    sf.write(ref, to_pcm16(x), sr, format="WAV", subtype="PCM_16")
    assert data == ref.getvalue() == wav_header(sr, 2 * len(x)) + to_pcm16(x).tobytes()
    riff_size, data_size = struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]
    assert (riff_size, data_size) == (len(data) - 8, 2 * len(x))
    # the same samples as the stream, header apart
    assert data[44:] == b"".join(stream("wav", x, sr)[1])[44:] == encode("pcm", x, sr)


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_whole_files_decode_to_the_input(fmt):
    sr = 22050
    x = speechlike(sr)
    decoded, rate = sf.read(io.BytesIO(encode(fmt, x, sr)), dtype="int16" if fmt == "flac" else "float32")
    assert rate == output_rate(fmt, sr)
    assert len(decoded) == round(len(x) * rate / sr)  # the Info tag / pre-skip trim every codec delay
    ref = x if rate == sr else soxr.resample(x, sr, rate, "HQ")
    if fmt == "flac":
        assert np.array_equal(decoded, to_pcm16(x))
    else:
        assert delay(ref, decoded) == 0
        assert correlation(ref, decoded, 0) > (MP3_MIN_CORR if fmt == "mp3" else OPUS_MIN_CORR)


# ---- edges ----


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_chunks(fmt):
    x = speechlike(22050)
    enc = StreamEncoder(fmt, 22050)
    first = enc.write(np.zeros(0, np.float32))
    assert first == (wav_header(22050) if fmt == "wav" else b"")
    parts = [first] + [enc.write(c) for c in np.array_split(x, 3)] + [enc.write(np.zeros(0)), enc.close()]
    _, ref_parts = stream(fmt, x, 22050)
    assert len(b"".join(parts)) == len(b"".join(ref_parts))  # empty writes change nothing
    assert enc.close() == b""
    with pytest.raises(ValueError, match="after close"):
        enc.write(x)


def test_a_stream_without_audio():
    closed = {fmt: StreamEncoder(fmt, 22050).close() for fmt in FORMATS}
    assert closed["wav"] == wav_header(22050) and closed["pcm"] == b""
    # libsndfile writes nothing for an empty flac or mp3 file, Ogg headers only for opus
    assert closed["flac"] == closed["mp3"] == b"" and closed["opus"][:4] == b"OggS"


def test_stream_sink_drops_rewrites_of_bytes_already_taken():
    sink = _StreamSink()
    assert sink.write(b"headerAAAA") == 10 and sink.take() == b"headerAAAA"
    sink.write(b"BB")
    sink.seek(0)
    sink.write(b"HEADER")           # behind the mark: lost
    assert sink.tell() == 6 and sink.seek(0, io.SEEK_END) == 12
    sink.seek(14)
    sink.write(b"C")                # past the end: a zero gap
    assert sink.late_bytes == 6 and sink.take() == b"BB\x00\x00C" and sink.take() == b""
    sink.write(b"DE")
    sink.seek(15)
    assert sink.read(1) == b"D"


def test_lame_placeholder_detection():
    header = bytes.fromhex("fff380c4")  # MPEG-2 Layer III, 64 kbit/s, 22.05 kHz, mono
    assert mp3_frame_length(header) == 72 * 64000 // 22050 == 208
    placeholder = header + bytes(204)
    assert lame_placeholder_length(placeholder + b"\xff\xf3") == 208
    assert lame_placeholder_length(placeholder[:100]) is None       # can't tell yet
    assert lame_placeholder_length(header + b"\x01" + bytes(203)) == 0  # a real frame
    assert lame_placeholder_length(b"ID3\x04") == 0 and lame_placeholder_length(b"\xff") is None
