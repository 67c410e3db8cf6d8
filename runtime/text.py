"""Text front end without torch or WeTextProcessing: normalise -> CJK spacing and upper-case ->
SentencePiece pieces -> segments (architecture.md §3.5, upstream-quirks.md item 14).

Upstream (`indextts/utils/front.py`, `indextts/utils/common.py`) runs WeTextProcessing's pynini FSTs for
number reading. Here the same *routing* and the same punctuation maps are reproduced exactly, and number
reading is a small table-driven rewrite:

* Language choice (exact): the Chinese path is taken when the text holds a CJK ideograph
  (U+4E00..U+9FFF), or no Latin letter, or is a bare e-mail address, or contains a pinyin syllable with a
  tone digit (`xuan4`); otherwise the English path.
* Both paths (exact): `<word|pronunciation>` annotations pass through untouched; `what's / it's /
  he's / there's ...` become `... is`; finally upstream's punctuation map (`char_rep_map`, plus `$` -> `.`
  on the Chinese path) turns full-width and bracket/quote characters into `, . ! ? ' -` and `...` into `…`.
* Chinese path: pinyin-with-tone syllables keep their digit (and `ju4 -> JV4` as upstream); `2024年5月1日`,
  `2024/5/1`, `2024-05-01` -> `二零二四年五月一日`; `20:00` -> `二十点`, `8:30` -> `八点三十分`, `8:05:09` ->
  `八点零五分九秒`; `¥12999` -> `一万二千九百九十九元` (also `$ € £`: 美元 欧元 英镑); `2.5%` -> `百分之二点五`;
  `1/2` -> `二分之一`; `-3` -> `负三`; `2.5` -> `二点五`; `123` -> `一百二十三`; numbers with a leading zero or
  more than 10 digits are read digit by digit.
* English path: `$5` -> `five dollars`, `$12.50` -> `twelve dollars and fifty cents` (also `£ € ¥`);
  `2.5%` -> `two point five percent`; `3:30` -> `three thirty`, `8:00` -> `eight o'clock`, `8:05` ->
  `eight oh five`; `1st 22nd` -> `first twenty second`; `1,234` -> `one thousand two hundred and thirty
  four`; `2.5` -> `two point five`; `-3` -> `minus three`; `beta2` -> `beta two`; leading-zero or over
  10-digit numbers digit by digit.

Tokenisation and segmenting follow upstream exactly (`tokenize_pieces`, `split_segments`, including the
apostrophe quirk); upstream's `warnings.warn` calls become `logging` warnings. `Tokenizer.segments` is
stricter than upstream: empty, over-long, nothing-left or only-unknown text raises `InputError`.

Known differences from upstream's WeTextProcessing output (listed for the README):
* No measure units (`10km/h`), no `+` suffixes (`3000+`), no phone-number grammar (`135-4567-8900` is read as
  three cardinals joined by `-`), no abbreviations/whitelist (`Mr.`, `Dr.`, `etc.`), no Roman numerals, no
  traditional -> simplified conversion, no interjection or erhua handling (upstream disables both anyway).
* Chinese: `2` is always `二` (WeTextProcessing may say `两`, e.g. before measure words or `千`); a bare
  4-digit number without `年` or a date shape is a cardinal (`2024` -> `二千零二十四`).
* Full-width digits and Latin letters are mapped to ASCII before number reading on both paths.
* English: 4-digit numbers are cardinals, never years (`1998` -> `one thousand nine hundred and ninety
  eight`); `AM/PM` are left as written; cardinals put `and` only after `hundred`.
* Upstream's name protection (`中文·中文`) and tech-term protection (`GPT-5-nano`) exist only to keep
  WeTextProcessing from reading `·`/`-` as symbols; here `-` is a minus sign only when no letter or digit
  precedes it, which gives the same `GPT-五-nano`. The optional glossary is not implemented.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .errors import InputError

logger = logging.getLogger(__name__)

# --- language routing -------------------------------------------------------------------------------

_IDEOGRAPH = re.compile("[\u4e00-\u9fff]")
_LATIN = re.compile("[A-Za-z]")
_EMAIL = re.compile(r"[A-Za-z0-9]+@[A-Za-z0-9]+\.[A-Za-z]+\n?")

# Pinyin syllable + tone 1-5 (5 = neutral), not preceded by a letter: initials x finals as upstream accepts.
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "z",
             "c", "s", "r", "y", "w")
_FINALS = ("iang", "iong", "uang", "vang", "üang", "ang", "eng", "ing", "ong", "ian", "iao", "uai", "uan",
           "van", "üan", "ai", "ei", "ua", "ui", "uo", "ao", "ou", "ia", "iu", "ie", "ue", "ve", "üe", "an",
           "en", "in", "un", "vn", "a", "e", "i", "o", "u", "ü", "v")
_PINYIN = re.compile("(?<![a-z])(?:(?:%s)?(?:%s)|ng|er)[1-5]" % ("|".join(_INITIALS), "|".join(_FINALS)),
                     re.IGNORECASE)
_JQX_U = re.compile(r"([jqx])[uü](n|e|an)*(\d)", re.IGNORECASE)

_ANNOTATION = re.compile(r"<[^|>\n]+\|[^>\n]+>")
_CONTRACTION = re.compile(r"(what|where|who|which|how|t?here|it|s?he|that|this)'s", re.IGNORECASE)


def use_chinese(text: str) -> bool:
    """Upstream's routing rule (`TextNormalizer.use_chinese`)."""
    if _IDEOGRAPH.search(text) or not _LATIN.search(text) or _EMAIL.fullmatch(text):
        return True
    return _PINYIN.search(text) is not None


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


# Full-width digits and Latin letters -> ASCII (before number reading).
_FULL_WIDTH = {code: code - 0xFEE0 for lo, hi in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
               for code in range(lo, hi + 1)}

# --- numbers ---------------------------------------------------------------------------------------

_MAX_CARDINAL_DIGITS = 10  # longer integers (and those with a leading zero) are read digit by digit
_NUM = r"\d{1,3}(?:,\d{3})+|\d+"  # integer, optionally with thousands commas

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_GROUPS = ("", "万", "亿", "万亿")
_ZH_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_GROUPS = ("", "thousand", "million", "billion")
_EN_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
               "nine": "ninth", "twelve": "twelfth"}
_EN_CURRENCY = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros"),
                "¥": ("yen", "yen"), "￥": ("yen", "yen")}


def _digit_wise(digits: str, zh: bool) -> str:
    return "".join(_ZH_DIGITS[int(d)] for d in digits) if zh else " ".join(_EN_ONES[int(d)] for d in digits)


def _zh_under_10k(n: int) -> str:
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d == 0:
            zero = zero or bool(out)
            continue
        out += ("零" if zero else "") + _ZH_DIGITS[d] + unit
        zero = False
    return out


def zh_cardinal(n: int) -> str:
    """123 -> 一百二十三, 1005 -> 一千零五, 100010000 -> 一亿零一万, 15 -> 十五."""
    if n == 0:
        return "零"
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out, zero = "", False
    for idx in range(len(groups) - 1, -1, -1):
        g = groups[idx]
        if g == 0:
            zero = zero or bool(out)
            continue
        if out and (zero or g < 1000):
            out += "零"
        out += _zh_under_10k(g) + _ZH_GROUPS[idx]
        zero = False
    return out[1:] if out.startswith("一十") else out


def _en_under_1000(n: int) -> list[str]:
    words = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"] + (["and"] if n % 100 else [])
        n %= 100
    if n >= 20:
        words.append(_EN_TENS[n // 10])
        n %= 10
        if n:
            words.append(_EN_ONES[n])
    elif n or not words:
        words.append(_EN_ONES[n])
    return words


def en_cardinal(n: int) -> str:
    """1234 -> one thousand two hundred and thirty four (no hyphens: `-` is a segmenting token)."""
    if n == 0:
        return "zero"
    words, idx = [], 0
    while n:
        n, g = divmod(n, 1000)
        if g:
            words = _en_under_1000(g) + ([_EN_GROUPS[idx]] if idx else []) + words
        idx += 1
    return " ".join(words)


def en_ordinal(n: int) -> str:
    words = en_cardinal(n).split()
    last = words[-1]
    if last in _EN_ORDINAL:
        words[-1] = _EN_ORDINAL[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _integer(text: str, zh: bool) -> str:
    digits = text.replace(",", "")
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > _MAX_CARDINAL_DIGITS:
        return _digit_wise(digits, zh)
    return zh_cardinal(int(digits)) if zh else en_cardinal(int(digits))


def _number(integer: str, fraction: str | None, zh: bool) -> str:
    """Cardinal, or decimal with the fraction read digit by digit."""
    head = _integer(integer, zh)
    if not fraction:
        return head
    return head + "点" + _digit_wise(fraction, True) if zh else f"{head} point {_digit_wise(fraction, False)}"


# --- the two rule tables ------------------------------------------------------------------------------
# Each rule: (regex, function(match) -> replacement). Applied in order; English replacements are padded
# with spaces where they touch a letter or digit.

def _zh_date(m: re.Match) -> str:
    year, month, day = m.group("y"), m.group("m"), m.group("d")
    out = _digit_wise(year, True) + "年" if year else ""
    out += zh_cardinal(int(month)) + "月" if month else ""
    return out + (zh_cardinal(int(day)) + (m.group("dsuf") or "日") if day else "")


def _zh_time(m: re.Match) -> str:
    h, mi, s = int(m.group(1)), int(m.group(2)), m.group(3)
    out = zh_cardinal(h) + "点"
    if mi or s:
        out += ("零" if 0 < mi < 10 else "") + zh_cardinal(mi) + "分"
    if s and int(s):
        out += zh_cardinal(int(s)) + "秒"
    return out


_ZH_RULES = (
    # 2024/5/1, 2024-05-01
    (re.compile(r"(?<!\d)(?P<y>\d{4})[/-](?P<m>0?[1-9]|1[0-2])[/-](?P<d>0?[1-9]|[12]\d|3[01])(?P<dsuf>)(?!\d)"),
     _zh_date),
    # 2024年[5月[1日/号]], then 5月[1日/号], then 1日/号
    (re.compile(r"(?<!\d)(?P<y>\d{4})年(?:(?P<m>0?[1-9]|1[0-2])月(?:(?P<d>0?[1-9]|[12]\d|3[01])(?P<dsuf>[日号]))?)?"),
     _zh_date),
    (re.compile(r"(?<!\d)(?P<y>)(?P<m>0?[1-9]|1[0-2])月(?:(?P<d>0?[1-9]|[12]\d|3[01])(?P<dsuf>[日号]))?"),
     _zh_date),
    (re.compile(r"(?<!\d)(?P<y>)(?P<m>)(?P<d>0?[1-9]|[12]\d|3[01])(?P<dsuf>[日号])"), _zh_date),
    (re.compile(r"(?<!\d)([01]?\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?(?!\d)"), _zh_time),
    (re.compile(r"([¥￥$€£])\s?(%s)(?:\.(\d+))?" % _NUM),
     lambda m: _number(m.group(2), m.group(3), True) + _ZH_CURRENCY[m.group(1)]),
    (re.compile(r"(?<![A-Za-z0-9.])-(?=\d)"), lambda m: "负"),
    (re.compile(r"(%s)(?:\.(\d+))?\s?[%%％]" % _NUM), lambda m: "百分之" + _number(m.group(1), m.group(2), True)),
    (re.compile(r"(?<![\d/])(\d+)/(\d+)(?![\d/])"),
     lambda m: _integer(m.group(2), True) + "分之" + _integer(m.group(1), True)),
    (re.compile(r"(%s)(?:\.(\d+))?" % _NUM), lambda m: _number(m.group(1), m.group(2), True)),
)


def _en_time(m: re.Match) -> str:
    h, mi = int(m.group(1)), int(m.group(2))
    if mi == 0:
        return f"{en_cardinal(h)} o'clock"
    return f"{en_cardinal(h)} {'oh ' if mi < 10 else ''}{en_cardinal(mi)}"


def _en_money(m: re.Match) -> str:
    one, many = _EN_CURRENCY[m.group(1)]
    whole, frac = m.group(2), m.group(3)
    if frac and len(frac) > 2:
        return f"{_number(whole, frac, False)} {many}"
    n = int(whole.replace(",", ""))
    out = f"{_integer(whole, False)} {one if n == 1 else many}"
    cents = int(frac.ljust(2, "0")) if frac else 0
    if cents:
        out += f" and {en_cardinal(cents)} {'cent' if cents == 1 else 'cents'}"
    return out


_EN_RULES = (
    (re.compile(r"([$£€¥￥])\s?(%s)(?:\.(\d+))?" % _NUM), _en_money),
    (re.compile(r"(?<![A-Za-z0-9.])-(?=\d)"), lambda m: "minus"),
    (re.compile(r"(%s)(?:\.(\d+))?\s?%%" % _NUM), lambda m: _number(m.group(1), m.group(2), False) + " percent"),
    (re.compile(r"(?<!\d)([01]?\d|2[0-4]):([0-5]\d)(?!\d)"), _en_time),
    (re.compile(r"(?<!\d)(\d+)(st|nd|rd|th)\b", re.IGNORECASE), lambda m: en_ordinal(int(m.group(1)))),
    (re.compile(r"(%s)(?:\.(\d+))?" % _NUM), lambda m: _number(m.group(1), m.group(2), False)),
)


def _apply_rules(text: str, rules, pad: bool) -> str:
    for pattern, fn in rules:
        def replace(m: re.Match, fn=fn) -> str:
            out = fn(m)
            if pad:
                before, after = m.string[m.start() - 1:m.start()], m.string[m.end():m.end() + 1]
                out = (" " if before.isalnum() else "") + out + (" " if after.isalnum() else "")
            return out
        text = pattern.sub(replace, text)
    return text


# --- normalize ----------------------------------------------------------------------------------------

_PLACEHOLDER = 0x100000  # plane-16 private-use characters stand in for protected spans while rewriting


def _protect(text: str, pattern: re.Pattern, store: list[str]) -> str:
    """Replace each match by one private-use character indexing `store` (shared by all protections)."""
    def hold(m: re.Match) -> str:
        store.append(m.group())
        return chr(_PLACEHOLDER + len(store) - 1)
    return pattern.sub(hold, text)


def _restore(text: str, store: list[str], first: int = 0) -> str:
    for i in range(first, len(store)):
        text = text.replace(chr(_PLACEHOLDER + i), store[i])
    return text


def _correct_pinyin(syllable: str) -> str:
    """`ju4 -> JV4`, `que2 -> QVE2` (upstream upper-cases only the j/q/x syllables)."""
    if syllable[0] not in "jqxJQX":
        return syllable
    return _JQX_U.sub(r"\1v\2\3", syllable).upper()


def normalize(text: str) -> str:
    """Upstream `TextNormalizer.normalize` without WeTextProcessing (see the module docstring)."""
    held: list[str] = []
    text = _protect(text, _ANNOTATION, held)
    n_annotations = len(held)
    # Upstream routes on text whose annotations are letter-only placeholders: route the same way.
    chinese = use_chinese(_restore(text, ["A"] * n_annotations))
    text = _CONTRACTION.sub(r"\1 is", text).translate(_FULL_WIDTH)
    if chinese:
        text = _protect(text.rstrip(), _PINYIN, held)
        held[n_annotations:] = [_correct_pinyin(p) for p in held[n_annotations:]]
        text = _apply_rules(text, _ZH_RULES, pad=False)
        text = _map_punct(_restore(text, held, first=n_annotations), _ZH_PUNCT)
    else:
        text = _map_punct(_apply_rules(text, _EN_RULES, pad=True), _EN_PUNCT)
    return _restore(text, held[:n_annotations])


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
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise InputError("text is empty", "pass at least one word to speak")
        if len(text) > self.max_chars:
            raise InputError(f"text has {len(text)} characters, more than the limit of {self.max_chars}",
                             "split it into several calls, or raise the limit with Tokenizer(max_chars=...)")
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
