"""IndexTTS-2.5's text front end without torch: clean -> normalise -> case -> pronunciation annotations ->
(Japanese) MeCab segmentation -> `<|x|>` upper-casing -> token-budget segments -> tiktoken ids
(indextts25.md §2, §9; upstream `infer_v2_5.py` around `infer`, `utils/front.py`, `utils/nemo_tn.py`,
`utils/ja_g2p.py`, and CosyVoice's `tokenizer/tokenizer.py`, which upstream's tokenizer is).

The steps, per call (`MultilingualTokenizer.prepare`, then `segments`):

1. The language prefix is `f"<|{lang}|> "` (trailing space). For en, zh, es, ja and ar it starts with
   that language's special token; `<|zhen|>` is not a special token, so zhen's prefix is plain text.
2. Upstream's `char_rep_map` (the table 2.0 applies after its English normaliser) runs on every
   language, before normalisation: full-width punctuation -> `, . ! ?`, quotes and brackets -> `'`,
   `:` -> `,` (so `8:00` reaches the normaliser as `8,00`), newline -> space.
3. Normalisation: zh, zhen and en go through the 2.0 `runtime.text.normalize` (which holds `<w|p>`
   annotations aside, as upstream's 2.5 normaliser does). es goes through NeMo
   (`nemo_text_processing`, `Normalizer(input_case="cased", lang="es")`) where that package is
   installed; upstream does not install it and neither do we, so by default the text passes through
   unchanged (logged once per tokenizer). ja maps to no NeMo grammar (a no-op: digits stay digits) and
   ar is never normalised.
4. Case: lower for ja, zh, zhen and en; UPPER for es; ar as is.
5. `<word|pron>` annotations: the pronunciation is upper-cased; pure hiragana or pure katakana becomes
   `" KANA "` (plain text between spaces); otherwise a word holding a CJK ideograph gives
   `<|SPECIAL_TOKEN_2|>PRON<|SPECIAL_TOKEN_2|>` (pinyin) and any other word
   `<|SPECIAL_TOKEN_1|>PRON<|SPECIAL_TOKEN_1|>` (CMU).
6. ja only: every run without spaces is cut into MeCab morphemes (fugashi with the unidic-lite
   dictionary, the optional `[ja]` extra) joined by single spaces; runs of spaces are kept. Upstream
   calls `JapaneseG2PProcessor(g2p_ratio=0)`, whose only effect at ratio 0 is this segmentation. Its
   quirk is reproduced: the markers of a CMU/pinyin annotation are cut too
   (`<|SPECIAL_TOKEN_1|>G OW1` -> `< | SPECIAL _ TOKEN _ 1 | > G OW 1`), so they are read as plain text.
7. Every `<|x|>` is upper-cased (this restores SPECIAL_TOKEN names after step 4; a user-typed `<|en|>`
   becomes `<|EN|>`, which is no special token).
8. `split_by_tokens` (upstream `split_text_by_tokens`), then each segment is encoded as
   `encode(prefix + segment, allowed_special="all")`.

Differences from upstream, all on purpose:

* Upstream appends id 1 to every segment. `segments` does not: the GPT input drops every id 0 and 1
  (`prepare_gpt_inputs`, ids of the 2.0 `<s>`/`</s>`; in this vocabulary they are `!` and `"`), so the
  trailing 1 never reaches the model. The ids returned here still hold any 0 and 1 from the text (a
  full-width `！` becomes `!`, id 0): dropping them (`DROPPED_IDS`) is the GPT input's job.
* `lang` must be one of `LANGUAGES_25`, exactly (upstream lower-cases it and maps any unknown language
  to `common`). The input checks of the 2.0 `Tokenizer` apply: empty, over-long and nothing-left text
  raise `InputError`.
* The MeCab dictionary is always unidic-lite (upstream's `fugashi.Tagger()` prefers a full `unidic`
  when one is installed, and falls back to `MeCab -Ochasen` without fugashi).
* The optional glossary (`glossary.yaml`) is not implemented, as in the 2.0 front end.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from pathlib import Path
from typing import Callable

import tiktoken

from .errors import InputError
from .text import DEFAULT_MAX_CHARS, check_text, clean_punctuation
from .text import normalize as normalize_zh_en  # the 2.0 normaliser (wetext)

logger = logging.getLogger(__name__)

TIKTOKEN_FILE = "multilingual_zh_ja_yue_char_del.tiktoken"  # upstream's rank file, in the checkpoint folder

LANGUAGES_25: tuple[str, ...] = ("en", "zh", "ja", "es", "ar", "zhen")  # the `lang` values accepted

# --- the vocabulary's special tokens (CosyVoice `get_encoding`) -----------------------------------------

# CosyVoice's LANGUAGES (105 codes) plus upstream 2.5's `common`: a language id is the index here
# (`lang_to_token`, the row of the GPT's lang_embedding).
LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
    "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
    "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
    "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
    "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
    "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue", "minnan",
    "wuyu", "dialect", "zh/en", "en/zh", "common",
)
COMMON_ID = LANGUAGES.index("common")  # 105: any language not in the table
N_SPECIAL_LANGUAGES = 99  # CosyVoice's num_languages: the first 99 codes get a token (no <|yue|>)
AUDIO_EVENTS = ("ASR", "AED", "SER", "Speech", "/Speech", "BGM", "/BGM", "Laughter", "/Laughter", "Applause",
                "/Applause")
EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL")
TASKS = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")
TTS_TOKENS = ("TTS/B", "TTS/O", "TTS/Q", "TTS/A", "TTS/CO", "TTS/CL", "TTS/H") + tuple(
    f"TTS/SP{i:02d}" for i in range(1, 14))
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>

DROPPED_IDS = (0, 1)  # ids the GPT input drops (upstream `prepare_gpt_inputs`: its start/stop text ids)

# The GPT's text positions hold max_text_tokens + 2 rows; upstream's budget is capped at max_text_tokens.
MAX_TEXT_TOKENS = 600  # config gpt.max_text_tokens (2.0 and 2.5)

# GPT-2's pre-tokenizer with \p{L} / \p{N} (no CJK spacing, no SentencePiece).
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def special_token_names() -> list[str]:
    """The 1,673 specials in id order (the first gets id n_ranks)."""
    return [
        "<|endoftext|>", "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES[:N_SPECIAL_LANGUAGES]),
        *(f"<|{event}|>" for event in AUDIO_EVENTS),
        *(f"<|{emotion}|>" for emotion in EMOTIONS),
        *(f"<|{task}|>" for task in TASKS),
        *(f"<|SPECIAL_TOKEN_{i}|>" for i in range(1, 31)),
        *(f"<|{token}|>" for token in TTS_TOKENS),
        *(f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)),  # the float product, as upstream names them
    ]


N_SPECIALS = len(special_token_names())  # 1673


def lang_to_token(lang: str) -> int:
    """Upstream's `lang_to_token`: the index in LANGUAGES, `common` (105) for anything else."""
    return LANGUAGES.index(lang) if lang in LANGUAGES else COMMON_ID


def parse_ranks(content: bytes, origin: str = "the rank file") -> dict[bytes, int]:
    """`.tiktoken` content (lines `base64(token) rank`) -> {token bytes: rank}; ranks must be 0..n-1."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as e:
            raise InputError(f"{origin}, line {number}: not `base64-token rank`: {line[:60]!r}",
                             f"pass the checkpoint's {TIKTOKEN_FILE}") from e
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise InputError(f"{origin}: the ranks are not 0..{len(ranks) - 1}, each once (duplicate tokens or "
                         "ranks, or gaps)", f"pass the checkpoint's {TIKTOKEN_FILE}")
    if len(ranks) < 256 or any(bytes([b]) not in ranks for b in range(256)):
        raise InputError(f"{origin}: not every single byte is a token", "a byte-level BPE needs all 256")
    return ranks


# --- front-end steps --------------------------------------------------------------------------------------

_ANNOTATION = re.compile(r"<([^|>\n]+)\|([^>\n]+)>")  # <word|pronunciation>
_HIRAGANA = re.compile("[\u3040-\u309f]+")
_KATAKANA = re.compile("[\u30a0-\u30ff]+")
_IDEOGRAPH = re.compile("[\u4e00-\u9fff]")
_SPECIAL_NAME = re.compile(r"<\|([^|]+)\|>")
_SPACE_RUN = re.compile("( +)")  # ASCII spaces only, as upstream's `process_ja_text`
_PROTECTED = re.compile(r"<\|SPECIAL_TOKEN_\d+\|>.*?<\|SPECIAL_TOKEN_\d+\|>")  # kept whole by the splitter
_AFTER_PUNCT = re.compile("(?<=[，。！？、；：,.!?;:\n])")  # split points: after any of these


def clean(text: str) -> str:
    """Upstream's `clean_pattern` (front.py `char_rep_map`), for every language, before normalisation."""
    return clean_punctuation(text)


def apply_case(text: str, lang: str) -> str:
    if lang in ("ja", "zh", "zhen", "en"):
        return text.lower()
    if lang == "es":
        return text.upper()
    return text


def apply_annotations(text: str) -> str:
    """Upstream's `apply_pronunciation_annotations` (module docstring, step 5)."""

    def replace(m: re.Match) -> str:
        word, pron = m.group(1), m.group(2).upper()
        if _HIRAGANA.fullmatch(pron) or _KATAKANA.fullmatch(pron):
            return f" {pron} "
        token = "SPECIAL_TOKEN_2" if _IDEOGRAPH.search(word) else "SPECIAL_TOKEN_1"
        return f"<|{token}|>{pron}<|{token}|>"

    return _ANNOTATION.sub(replace, text)


def upper_special_names(text: str) -> str:
    """Step 7: `<|x|>` -> `<|X|>`."""
    return _SPECIAL_NAME.sub(lambda m: f"<|{m.group(1).upper()}|>", text)


def segment_japanese(text: str, morphemes: Callable[[str], list[str]]) -> str:
    """Step 6: each space-free run -> its morphemes joined by one space; the runs of spaces stay."""
    parts = _SPACE_RUN.split(text)
    return "".join(" ".join(morphemes(p)) if p.strip() else p for p in parts)


def split_by_tokens(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """Upstream's `split_text_by_tokens` once the budget is known: `text` whole if it fits, else
    SPECIAL_TOKEN spans whole plus the rest split after `，。！？、；：,.!?;:` and newline, any part still
    over budget cut character by character, then a greedy merge that re-counts each candidate.

    A protected span longer than the budget stays whole (over budget), as upstream."""
    if count(text) <= budget:
        return [text]
    chunks: list[str] = []
    for piece, protected in _protected_pieces(text):
        if protected:
            chunks.append(piece)
            continue
        for part in _AFTER_PUNCT.split(piece):
            if not part:
                continue
            if count(part) <= budget:
                chunks.append(part)
            else:
                chunks += _greedy_join(part, budget, count)  # character by character
    return _greedy_join(chunks, budget, count) or [text]


def _protected_pieces(text: str) -> list[tuple[str, bool]]:
    pieces, pos = [], 0
    for m in _PROTECTED.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos:m.start()], False))
        pieces.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    return pieces


def _greedy_join(items, budget: int, count: Callable[[str], int]) -> list[str]:
    """Append items (characters or chunks) to the current string while the result counts <= budget;
    an item that does not fit starts the next string (a first item is always taken)."""
    out, current = [], ""
    for item in items:
        if current and count(current + item) > budget:
            out.append(current)
            current = item
        else:
            current += item
    if current:
        out.append(current)
    return out


# --- the tokenizer ------------------------------------------------------------------------------------------


class MultilingualTokenizer:
    """The checkpoint's `multilingual_zh_ja_yue_char_del.tiktoken` plus the 2.5 front end.

        tok = MultilingualTokenizer.load("bundle/multilingual_zh_ja_yue_char_del.tiktoken")
        for ids in tok.segments("Hello world. 你好。", "zhen"):
            ...                                    # and tok.language_id("zhen") for the lang embedding

    Special-token ids follow the rank count (endoftext = n_ranks, `<|en|>` = n_ranks + 2,
    SPECIAL_TOKEN_1 = n_ranks + 122), so a small random vocabulary works like the official one
    (58,836 ranks, n_vocab 60,509 = config gpt.number_text_tokens).
    """

    def __init__(self, ranks: dict[bytes, int], max_chars: int = DEFAULT_MAX_CHARS,
                 max_text_tokens: int = MAX_TEXT_TOKENS):
        self.n_ranks = len(ranks)
        self.specials = {name: self.n_ranks + i for i, name in enumerate(special_token_names())}
        self.encoding = tiktoken.Encoding(TIKTOKEN_FILE, pat_str=PATTERN, mergeable_ranks=ranks,
                                          special_tokens=self.specials,
                                          explicit_n_vocab=self.n_ranks + N_SPECIALS)
        self.n_vocab = self.encoding.n_vocab
        self.max_chars = max_chars
        self.max_text_tokens = max_text_tokens  # the budget's cap (upstream: text positions - 2)
        self._lock = threading.Lock()  # MeCab and NeMo objects: built once, used one call at a time
        self._mecab = None
        self._nemo_es = None  # NeMo's Spanish normaliser, once built; None where unavailable
        self._nemo_tried = False

    @classmethod
    def load(cls, source: str | Path | bytes, max_chars: int = DEFAULT_MAX_CHARS,
             max_text_tokens: int = MAX_TEXT_TOKENS) -> MultilingualTokenizer:
        """From a `.tiktoken` path or its bytes. `max_text_tokens`: the GPT's config value (its text
        positions minus 2), which caps the segment budget."""
        if isinstance(source, bytes):
            return cls(parse_ranks(source), max_chars, max_text_tokens)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"tiktoken rank file not found: {path} (the bundle's {TIKTOKEN_FILE})")
        return cls(parse_ranks(path.read_bytes(), str(path)), max_chars, max_text_tokens)

    # --- ids ---

    def encode(self, text: str) -> list[int]:
        """`encode(text, allowed_special="all")`: every special token written in the text is one id."""
        return self.encoding.encode(text, allowed_special="all")

    def language_id(self, lang: str) -> int:
        """The GPT's language id (lang_embedding row): en 0, zh 1, es 3, ja 7, ar 13, zhen 105."""
        return lang_to_token(self._check_lang(lang))

    def prefix(self, lang: str) -> str:
        """`<|lang|> ` (a special token for all but zhen, then a space)."""
        return f"<|{self._check_lang(lang)}|> "

    # --- text ---

    def prepare(self, text: str, lang: str, normalize: bool = True) -> str:
        """Checked input -> the text after steps 2-7 (module docstring), without the prefix."""
        self._check_lang(lang)
        check_text(text, self.max_chars, "max_chars")
        out = clean(text)
        if normalize:
            out = self._normalize(out, lang)
        out = apply_annotations(apply_case(out, lang))
        if lang == "ja":
            out = segment_japanese(out, self._morphemes)
        out = upper_special_names(out)
        if not self._speakable(out):
            raise InputError(f"text {text[:40]!r} normalises to nothing speakable",
                             "it holds only spaces or symbols the front end drops (a lone `!` is dropped)")
        return out

    def segments(self, text: str, lang: str, max_tokens_per_segment: int = 120,
                 normalize: bool = True) -> list[list[int]]:
        """text -> per-segment ids, each `encode(prefix + segment)`: the prefix's ids first, no trailing
        stop id (module docstring). The budget per segment is min(max_tokens_per_segment,
        max_text_tokens) minus the prefix's own length (118 for `<|zh|> `)."""
        if max_tokens_per_segment < 1:
            raise InputError(f"max_tokens_per_segment must be >= 1, got {max_tokens_per_segment}",
                             "upstream uses 120")
        prepared = self.prepare(text, lang, normalize)
        prefix = self.prefix(lang)
        budget = max(1, min(max_tokens_per_segment, self.max_text_tokens) - len(self.encode(prefix)))
        parts = split_by_tokens(prepared, budget, lambda s: len(self.encode(s)))
        return [self.encode(prefix + part) for part in parts]

    # --- helpers ---

    @staticmethod
    def _check_lang(lang: str) -> str:
        if lang not in LANGUAGES_25:
            raise InputError(f"unknown language {lang!r} for IndexTTS-2.5",
                             f"use one of {', '.join(LANGUAGES_25)} (zhen: mixed Chinese and English)")
        return lang

    def _speakable(self, text: str) -> bool:
        """Something is left besides spaces and the ids the GPT input drops."""
        for i in self.encode(text):
            if i >= self.n_ranks or (i not in DROPPED_IDS and self.encoding.decode_single_token_bytes(i).strip()):
                return True
        return False

    def _normalize(self, text: str, lang: str) -> str:
        if lang in ("zh", "zhen", "en"):
            return normalize_zh_en(text)
        if lang == "es":
            return self._normalize_es(text)
        return text  # ja: NeMo has no Japanese grammar (upstream's call is a no-op); ar: never normalised

    def _normalize_es(self, text: str) -> str:
        """NeMo `Normalizer(input_case="cased", lang="es")` where installed; else the text as it is
        (upstream's default install has no NeMo either). Failures are logged and pass the text through."""
        with self._lock:
            if not self._nemo_tried:
                self._nemo_tried = True
                try:
                    from nemo_text_processing.text_normalization.normalize import Normalizer

                    self._nemo_es = Normalizer(input_case="cased", lang="es")
                except Exception as e:  # ImportError, or a grammar that does not build
                    logger.warning("Spanish text is not normalised: NeMo (nemo_text_processing) is not "
                                   "usable (%s: %s); upstream's default install reads it unnormalised too",
                                   type(e).__name__, e)
            normalizer = self._nemo_es
            if normalizer is None:
                return text
            try:
                return normalizer.normalize(text, verbose=False)
            except Exception as e:  # upstream logs and goes on with the text as it was
                logger.warning("NeMo failed on %r (%s: %s); the text is read as written",
                               text[:40], type(e).__name__, e)
                return text

    def _morphemes(self, run: str) -> list[str]:
        """MeCab surfaces of one space-free run (fugashi with unidic-lite, built on first use)."""
        with self._lock:
            if self._mecab is None:
                self._mecab = _unidic_lite_tagger()
            return [node.surface for node in self._mecab(run)]


def _unidic_lite_tagger():
    try:
        import fugashi
        import unidic_lite
    except ImportError as e:
        raise InputError("Japanese text needs MeCab: fugashi with the unidic-lite dictionary is not installed",
                         'pip install "indextts2-onnx[ja]"') from e
    dicdir = Path(unidic_lite.DICDIR)
    # GenericTagger: exactly this dictionary (fugashi.Tagger would prefer a full `unidic` if present)
    return fugashi.GenericTagger(f'-r "{dicdir / "mecabrc"}" -d "{dicdir}"')
