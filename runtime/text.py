"""Text front end without torch: normalise -> CJK spacing and upper-case -> SentencePiece pieces ->
segments (architecture.md §3.5, upstream-quirks.md item 14).

Normalisation is upstream's `TextNormalizer.normalize` (`indextts/utils/front.py`) step for step, with
the number reading done by `wetext` (WeTextProcessing's own grammars, compiled to FSTs and run on
`kaldifst`, no pynini), the package upstream itself uses on macOS and Windows:

* Annotations `<word|pronunciation>` become `PRONPLACEHOLDER<a..z, aa..>PRONPLACEHOLDER` first and come
  back last, untouched.
* Routing (`use_chinese`, on the text with those placeholders): the Chinese path when the text holds a CJK
  ideograph (U+4E00..U+9FFF), or no Latin letter, or is a bare e-mail address, or holds a pinyin syllable
  with a tone digit (`xuan4`); otherwise the English path.
* Both paths expand `what's / it's / he's / there's ...` to `... is` (no word boundary, as upstream:
  `rabbit's` -> `rabbit is`) and shield hyphenated tech terms (`GPT-5-nano` -> `GPT<H>5<H>nano`, with `<H>`
  and the spaces around it turned back into `-` afterwards).
* Chinese path: right-strip, then pinyin syllables -> `<pinyin_a>` (restored with `ju4 -> JV4`), names
  `中文·中文` -> `<n_a>`, the zh normaliser, restore, then upstream's `zh_char_rep_map`. English path: the
  en normaliser, then `char_rep_map`. A normaliser error gives "" (Chinese) or the unnormalised text
  (English), as upstream; it is logged.

The two wetext normalisers are built on first use, once per process (`_normalizers`, thread-safe). The
zh one is `Normalizer(lang="zh", operator="tn", remove_erhua=False, remove_interjections=False,
traditional_to_simple=True, full_to_half=True)`: upstream's Linux call (WeTextProcessing
`tn.chinese.normalizer.Normalizer(remove_interjections=False, remove_erhua=False)`) keeps that class's
defaults `traditional_to_simple=True, full_to_half=True`, which wetext leaves off unless asked; upstream's
own macOS/Windows call does not ask, so on traditional characters and full-width forms this follows the
Linux path rather than upstream's wetext call. The en one is `Normalizer(lang="en", operator="tn")`.

What is not exact. Routing, protections and maps are (the tests drive this module's routing with
WeTextProcessing and get upstream's strings on every corpus row). The readings are wetext 0.1.8's, which
differ from WeTextProcessing 1.2.0 (upstream on Linux) on 18 of the 269 sentences of
tests/data/text_normalization.tsv, all listed in the README ("Text front end"): wetext leaves the FST's
escapes in its output (`"` -> `\\"`, then `\\'` after the map; `\\` -> `\\\\`), strips leading spaces
(dropped later anyway), fails on some English inputs (`3000+`, `+1 212 555 0100`: the text is then read
as written) and reads a few English patterns differently (`M.2`, `0.05`, `$1,000`, `NO.1`, the
spacing of `January 5, 1990`). No rule of our own is added on top. Where upstream's choice depends on
Python's string hashing (several distinct pinyin syllables, names or tech terms, one inside another)
the runtime replaces the longest first. The optional glossary is not implemented (upstream's is empty
unless a glossary.yaml is loaded).

Tokenisation and segmenting follow upstream exactly (`tokenize_pieces`, `split_segments`, including the
apostrophe quirk); upstream's `warnings.warn` calls become `logging` warnings. `Tokenizer.segments` is
stricter than upstream: empty, over-long, nothing-left or only-unknown text raises `InputError`.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Callable

from .errors import InputError

logger = logging.getLogger(__name__)

# --- upstream's patterns (front.py `TextNormalizer`) ----------------------------------------------------

_IDEOGRAPH = re.compile("[\u4e00-\u9fff]")
_LATIN = re.compile("[A-Za-z]")
_EMAIL = re.compile(r"[A-Za-z0-9]+@[A-Za-z0-9]+\.[A-Za-z]+\n?")  # upstream: re.match(^...$)

# Pinyin syllable + tone 1-5 (5 = neutral), not preceded by a letter: the same set of syllables as
# upstream's PINYIN_TONE_PATTERN (a match always ends at the first digit, so only the set matters).
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "z",
             "c", "s", "r", "y", "w")
_FINALS = ("iang", "iong", "uang", "vang", "üang", "ang", "eng", "ing", "ong", "ian", "iao", "uai", "uan",
           "van", "üan", "ai", "ei", "ua", "ui", "uo", "ao", "ou", "ia", "iu", "ie", "ue", "ve", "üe", "an",
           "en", "in", "un", "vn", "a", "e", "i", "o", "u", "ü", "v")
PINYIN_TONE = re.compile("(?<![a-z])(?:(?:%s)?(?:%s)|ng|er)[1-5]" % ("|".join(_INITIALS), "|".join(_FINALS)),
                         re.IGNORECASE)
_JQX_U = re.compile(r"([jqx])[uü](n|e|an)*(\d)", re.IGNORECASE)

_ANNOTATION = re.compile(r"<[^|>\n]+\|[^>\n]+>")
_CONTRACTION = re.compile(r"(what|where|who|which|how|t?here|it|s?he|that|this)'s", re.IGNORECASE)
_TECH_TERM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+")  # GPT-5-nano, F5-TTS (not 135-4567)
_NAME = re.compile("[\u4e00-\u9fff]+(?:[-·—][\u4e00-\u9fff]+){1,2}")  # 克里斯托弗·诺兰
_HYPHEN_HELD = re.compile(r"\s*<H>\s*")


def use_chinese(text: str) -> bool:
    """Upstream's routing rule (`TextNormalizer.use_chinese`)."""
    if _IDEOGRAPH.search(text) or not _LATIN.search(text) or _EMAIL.fullmatch(text):
        return True
    return PINYIN_TONE.search(text) is not None


# --- punctuation maps: (source, replacement) in upstream's match precedence ---------------------------

_PUNCT_PAIRS = (
    ("：", ","), ("；", ","), (";", ","), ("，", ","), ("。", "."), ("！", "!"), ("？", "?"), ("\n", " "),
    ("·", "-"), ("、", ","), ("...", "…"), (",,,", "…"), ("……", "…"),  # ("，，，" is shadowed by "，")
    ("“", "'"), ("”", "'"), ('"', "'"), ("‘", "'"), ("’", "'"), ("（", "'"), ("）", "'"), ("(", "'"),
    (")", "'"), ("《", "'"), ("》", "'"), ("【", "'"), ("】", "'"), ("[", "'"), ("]", "'"), ("—", "-"),
    ("～", "-"), ("~", "-"), ("「", "'"), ("」", "'"), (":", ","),
)
_ZH_PUNCT_PAIRS = (("$", "."),) + _PUNCT_PAIRS


def _alternation(pairs) -> tuple[re.Pattern, dict[str, str]]:
    return re.compile("|".join(re.escape(src) for src, _ in pairs)), dict(pairs)


_EN_PUNCT = _alternation(_PUNCT_PAIRS)
_ZH_PUNCT = _alternation(_ZH_PUNCT_PAIRS)


def _map_punct(text: str, table) -> str:
    pattern, mapping = table
    return pattern.sub(lambda m: mapping[m.group()], text)


def clean_punctuation(text: str) -> str:
    """Upstream's `char_rep_map` on `text` (the English path's table): full-width punctuation -> `, . ! ?`,
    quotes and brackets -> `'`, `:` -> `,`, newline -> space. IndexTTS-2.5 runs it on every language."""
    return _map_punct(text, _EN_PUNCT)


# --- the wetext normalisers: built on first use, once per process -----------------------------------

# wetext.Normalizer keyword arguments (see the module docstring for the choice).
ZH_TN_ARGS = {"lang": "zh", "operator": "tn", "remove_erhua": False, "remove_interjections": False,
              "traditional_to_simple": True, "full_to_half": True}
EN_TN_ARGS = {"lang": "en", "operator": "tn"}

_normalizers_lock = threading.Lock()
_loaded: tuple | None = None


def _normalizers() -> tuple:
    """(zh, en) wetext normalisers. The first call imports wetext, which reads its FSTs (see README)."""
    global _loaded
    if _loaded is None:
        with _normalizers_lock:
            if _loaded is None:
                from wetext import Normalizer

                _loaded = (Normalizer(**ZH_TN_ARGS), Normalizer(**EN_TN_ARGS))
    return _loaded


# --- normalize ----------------------------------------------------------------------------------------


def _alpha_tag(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (upstream's annotation placeholder numbering)."""
    tag = ""
    while True:
        tag = chr(ord("a") + n % 26) + tag
        n = n // 26 - 1
        if n < 0:
            return tag


def _hold_annotations(text: str) -> tuple[str, dict[str, str]]:
    held: dict[str, str] = {}

    def hold(m: re.Match) -> str:
        key = f"PRONPLACEHOLDER{_alpha_tag(len(held))}PRONPLACEHOLDER"
        held[key] = m.group()
        return key

    return _ANNOTATION.sub(hold, text), held


def _hold(text: str, pattern: re.Pattern, placeholder: str) -> tuple[str, list[str]]:
    """Replace every occurrence of each distinct match by `placeholder` with its letter (a, b, ...).

    Upstream orders the distinct matches as a Python `set` does (hash-dependent); here the longest go
    first (then first occurrence), so a match inside a longer one never splits it."""
    found = list(dict.fromkeys(pattern.findall(text)))
    found.sort(key=len, reverse=True)
    for i, span in enumerate(found):
        text = text.replace(span, placeholder.format(chr(ord("a") + i)))
    return text, found


def _release(text: str, found: list[str], placeholder: str) -> str:
    for i, span in enumerate(found):
        text = text.replace(placeholder.format(chr(ord("a") + i)), span)
    return text


def _hold_tech_terms(text: str) -> tuple[str, bool]:
    terms = sorted(dict.fromkeys(_TECH_TERM.findall(text)), key=len, reverse=True)
    for term in terms:
        text = text.replace(term, term.replace("-", "<H>"))
    return text, bool(terms)


def _correct_pinyin(syllable: str) -> str:
    """`ju4 -> JV4`, `que2 -> QVE2` (upstream upper-cases only the j/q/x syllables)."""
    if syllable[0] not in "jqxJQX":
        return syllable
    return _JQX_U.sub(r"\1v\2\3", syllable).upper()


def normalize_with(text: str, zh_tn: Callable[[str], str], en_tn: Callable[[str], str]) -> str:
    """Upstream's `TextNormalizer.normalize` around two number readers (the zh and the en normaliser's
    `normalize`): `normalize` passes wetext's, the tests also WeTextProcessing's."""
    text, annotations = _hold_annotations(text)
    chinese = use_chinese(text)
    text = _CONTRACTION.sub(r"\1 is", text)
    if chinese:
        held, hyphens = _hold_tech_terms(text.rstrip())
        held, syllables = _hold(held, PINYIN_TONE, "<pinyin_{}>")
        held, names = _hold(held, _NAME, "<n_{}>")
        try:
            out = zh_tn(held)
        except Exception as e:  # upstream prints the traceback and goes on with ""
            logger.warning("the zh normaliser failed on %r (%s: %s); upstream then reads nothing",
                           held, type(e).__name__, e)
            out = ""
        out = _release(out, names, "<n_{}>")
        out = _release(out, [_correct_pinyin(s) for s in syllables], "<pinyin_{}>")
        out = _HYPHEN_HELD.sub("-", out) if hyphens else out
        out = _map_punct(out, _ZH_PUNCT)
    else:
        held, hyphens = _hold_tech_terms(text)
        try:
            out = en_tn(held)
            out = _HYPHEN_HELD.sub("-", out) if hyphens else out
        except Exception as e:  # upstream prints the traceback and goes on with the text as it was
            logger.warning("the en normaliser failed on %r (%s: %s); the text is read as written, as "
                           "upstream does", held, type(e).__name__, e)
            out = text
        out = _map_punct(out, _EN_PUNCT)
    for key, annotation in annotations.items():
        out = out.replace(key, annotation)
    return out


def normalize(text: str) -> str:
    """Upstream's `TextNormalizer.normalize` with wetext reading the numbers (module docstring)."""
    zh, en = _normalizers()
    return normalize_with(text, zh.normalize, en.normalize)


# --- tokenisation ------------------------------------------------------------------------------------

# Blocks split off as single characters (upstream `tokenize_by_CJK_char`): Hangul Jamo; CJK radicals ..
# Yi; Phags-pa .. Hangul syllables; CJK compatibility ideographs; CJK compatibility forms; half-width
# katakana .. full-width signs; CJK extension B and beyond (plane 2).
_CJK_BLOCKS = ((0x1100, 0x11FF), (0x2E80, 0xA4CF), (0xA840, 0xD7AF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F),
               (0xFF65, 0xFFDC), (0x20000, 0x2FFFF))
_CJK_CHAR = re.compile("([%s])" % "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_BLOCKS))


def cjk_split_upper(text: str) -> str:
    """Put single spaces around every CJK character, upper-case the rest, trim each run:
    `"你好 world"` -> `"你 好 WORLD"`."""
    runs = (run.strip() for run in _CJK_CHAR.split(text.strip()))
    return " ".join(run.upper() for run in runs if run)


def tokenize_pieces(text: str, sp) -> list[str]:
    """SentencePiece pieces of `text` as upstream `TextTokenizer.tokenize` makes them.

    A text that is one character once stripped is encoded as is: no normalisation, no upper-casing
    (upstream's shortcut)."""
    if not text:
        return []
    if len(text.strip()) == 1:
        return sp.encode(text, out_type=str)
    return sp.encode(cjk_split_upper(normalize(text)), out_type=str)


# --- segmenting ---------------------------------------------------------------------------------------

SENTENCE_END = (".", "!", "?", "▁.", "▁?", "▁...")  # upstream's closing pieces ("▁!" is unk)
COMMA = (",", "▁,")
HYPHEN = ("-",)
APOSTROPHE = ("'", "▁'")


def _split_by(pieces: list[str], closers: tuple[str, ...], max_tokens: int, quick: int) -> list[list[str]]:
    """One level of upstream `split_segments_by_token` (architecture.md §3.5), recursion included."""
    parts: list[list[str]] = []
    run: list[str] = []
    for i, piece in enumerate(pieces):
        run.append(piece)
        if closers != COMMA and any(c in run for c in COMMA):
            # a comma anywhere in the running piece: split that piece on commas (checked before length)
            parts += _split_by(run, COMMA, max_tokens, quick)
        elif closers != HYPHEN and HYPHEN[0] in run:
            parts += _split_by(run, HYPHEN, max_tokens, quick)
        elif len(run) <= max_tokens:
            if piece in closers and len(run) > 2:
                if i + 1 < len(pieces) and pieces[i + 1] in APOSTROPHE:
                    # upstream quirk: the apostrophe closes this piece AND still opens the next one
                    run.append(pieces[i + 1])
                parts.append(run)
                run = []
            continue
        else:
            logger.warning("a segment reached %d pieces with no place to split; cut every %d pieces: %s",
                           len(run), max_tokens, "".join(run))
            parts += [run[j:j + max_tokens] for j in range(0, len(run), max_tokens)]
        run = []
    if run:
        assert len(run) <= max_tokens
        parts.append(run)
    return _merge(parts, max_tokens, quick)


def _merge(parts: list[list[str]], max_tokens: int, quick: int) -> list[list[str]]:
    """Greedy merge of neighbours: while the merged length fits and more than `quick` tokens have been
    seen (counting the candidate), or while the merged length is at most max/2."""
    merged: list[list[str]] = []
    seen = 0
    for part in parts:
        seen += len(part)
        if not part:
            continue
        if merged and len(merged[-1]) + len(part) <= max_tokens and seen > quick:
            merged[-1] = merged[-1] + part
        elif merged and len(merged[-1]) + len(part) <= max_tokens / 2:
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    return merged


def split_segments(pieces: list[str], max_tokens: int = 120, quick_streaming_tokens: int = 0) -> list[list[str]]:
    """Upstream `TextTokenizer.split_segments`: pieces -> segments of at most `max_tokens` pieces (plus a
    trailing apostrophe in the quirk case)."""
    if max_tokens < 1:
        raise InputError(f"max_tokens_per_segment must be >= 1, got {max_tokens}",
                         "upstream uses 120; values below about 20 make very short segments")
    if not pieces:
        return []
    return _split_by(list(pieces), SENTENCE_END, max_tokens, quick_streaming_tokens)


# --- Tokenizer ----------------------------------------------------------------------------------------

DEFAULT_MAX_CHARS = 5000


def check_text(text, max_chars: int, limit: str) -> str:
    """`text` when it is a non-blank str of at most `max_chars` characters, else InputError (`limit`:
    where the caller's limit is raised, for the hint)."""
    if not isinstance(text, str):
        raise InputError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty", "pass at least one word to speak")
    if len(text) > max_chars:
        raise InputError(f"text has {len(text)} characters, more than the limit of {max_chars}",
                         f"split it into several calls, or raise the limit with {limit}")
    return text


class Tokenizer:
    """The checkpoint's `bpe.model` plus the front end above.

        tok = Tokenizer.load("bundle/bpe.model")
        for ids in tok.segments("Hello world. 你好。"):
            ...
    """

    def __init__(self, processor, max_chars: int = DEFAULT_MAX_CHARS):
        self.sp = processor  # a loaded sentencepiece.SentencePieceProcessor
        self.max_chars = max_chars
        self.unk_id = processor.unk_id()

    @classmethod
    def load(cls, source: str | Path | bytes, max_chars: int = DEFAULT_MAX_CHARS) -> Tokenizer:
        """From a `bpe.model` path or its bytes."""
        import sentencepiece as spm

        if isinstance(source, bytes):
            return cls(spm.SentencePieceProcessor(model_proto=source), max_chars)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path} (the bundle's bpe.model)")
        try:
            return cls(spm.SentencePieceProcessor(model_file=str(path)), max_chars)
        except (RuntimeError, OSError) as e:
            raise InputError(f"cannot read SentencePiece model {path}: {e}",
                             "pass the checkpoint's bpe.model") from e

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def pieces(self, text: str) -> list[str]:
        """Checked input -> pieces; raises InputError for unusable text."""
        check_text(text, self.max_chars, "Tokenizer(max_chars=...)")
        pieces = tokenize_pieces(text, self.sp)
        if not any(p != "\u2581" for p in pieces):
            raise InputError(f"text {text[:40]!r} normalises to nothing speakable",
                             "it holds only spaces or symbols the front end drops")
        return pieces

    def segments(self, text: str, max_tokens_per_segment: int = 120,
                 quick_streaming_tokens: int = 0) -> list[list[int]]:
        """text -> per-segment BPE ids (raw `piece_to_id`, no start/stop ids added)."""
        pieces = self.pieces(text)
        unknown = sorted({p for p in pieces if self.sp.piece_to_id(p) == self.unk_id})
        if unknown:
            if all(p == "\u2581" or p in unknown for p in pieces):
                raise InputError(f"text {text[:40]!r} holds only characters the vocabulary does not know: "
                                 f"{' '.join(unknown)}", "use Chinese or English text")
            logger.warning("text holds %d piece(s) unknown to bpe.model, spoken as <unk>: %s",
                           len(unknown), " ".join(unknown))
        segs = split_segments(pieces, max_tokens_per_segment, quick_streaming_tokens)
        return [[self.sp.piece_to_id(p) for p in seg] for seg in segs]
