"""A random stand-in for IndexTTS-2.5's `multilingual_zh_ja_yue_char_del.tiktoken` (random-weight checkpoints).

The official file is a byte-level BPE rank file (58,836 ranks). This one has the same form and any size
from 256 ranks up, deterministic from a seed:

* ranks 0..255 are the 256 single bytes in GPT-2's byte order (printable bytes first), so rank 0 is `!`
  and rank 1 is `"` as in the official file, which the GPT input's id 0/1 filter depends on;
* then tokens tiktoken's merges can reach: every token's byte prefixes of two bytes or more come before
  it, so encoding a token alone always ends in that token (each merge of the first two parts makes a
  longer prefix, which is a token). The tokens are taken round-robin from five groups, so even a
  1,000-rank file splits every 2.5 language into sensible pieces: Latin words (common English, upper-case
  Spanish, CMU phones, pinyin, digits, then synthetic words from the seed; with and without a leading
  space), CJK ideographs (a common list, then the block U+4E00..U+9FFF), kana, Arabic letters and Spanish
  letters with accents;
* if the groups run out first, unique filler tokens that valid UTF-8 never contains (they start with
  0xFF) make up the count.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator

from ..runtime.multilingual import TIKTOKEN_FILE

__all__ = ["TIKTOKEN_FILE", "tiktoken_vocabulary", "gpt2_byte_order"]

_ENGLISH = (
    "the be to of and a in that have i it for not on with he as you do at this but his by from they we say "
    "her she or an will my one all would there their what so up out if about who get which go me when make "
    "can like time no just him know take people into year your good some could them see other than then "
    "now look only come its over think also back after use two how our work first well way even new want "
    "because any these give day most us is was are hello world speech voice test going morning today "
    "eight zero am pm one two three four five six seven nine ten twenty hundred thousand"
).split()
_SPANISH = (  # upper case: 2.5 upper-cases Spanish
    "HOLA MUNDO EL LA DE QUE Y EN UN UNA ES POR CON NO LOS LAS DEL SE PARA COMO MÁS PERO SU AL LO ESTE "
    "BUENOS DÍAS GRACIAS SEÑOR AÑO ESPAÑA TIENE ESTÁ SÍ MUY BIEN HOY"
).split()
_CMU = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
        "ZH").split()
_PINYIN = "XING HANG ZHONG WEN NI HAO LE DE SHI YI BU CHONG QING".split()
_MARKERS = ("SPECIAL", "TOKEN", "<|", "|>", "_")  # the Japanese annotation quirk's pieces

# Frequent simplified Chinese characters first, then a few Japanese forms; the rest of the block follows.
_COMMON_CJK = (
    "的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里用"
    "道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实日军"
    "者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见"
    "被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真"
    "论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直"
    "德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记"
    "南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风步改收根干造言联持"
    "组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵连调深商算质团集百需"
    "价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越器容照须九增研写称企八功吗包片史委乎查"
    "轻易早曾除农找装广显吧阿李标谈吃图念六引历首医局突专费号尽另周较注语仅考落青随选列武红响虽推势参希古众"
    "零今時間本語東京私會見來書讀聞話車電気"
)
_HIRAGANA = "".join(chr(c) for c in range(0x3041, 0x3097))
_KATAKANA = "".join(chr(c) for c in range(0x30A1, 0x30FB)) + "ー"
_ARABIC = "".join(chr(c) for c in (*range(0x0621, 0x063B), *range(0x0641, 0x0653))) + "،؟"
_SPANISH_LETTERS = "áéíóúüñÁÉÍÓÚÜÑ¿¡"
_SYMBOLS = ("…", " …", " '", "',", "'.", ".'", "  ")


def gpt2_byte_order() -> list[int]:
    """The 256 byte values in GPT-2's order: `!`..`~`, `¡`..`¬`, `®`..`ÿ`, then the other 68 ascending."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    return printable + [b for b in range(256) if b not in set(printable)]


def _latin(seed: int) -> Iterator[str]:
    for word in (*_ENGLISH, *_SPANISH, *_CMU, *_PINYIN):
        yield word
        yield " " + word
    yield from _MARKERS
    yield from _SYMBOLS
    for d in range(100):
        yield str(d) if d >= 10 else f" {d}"
    yield from (f"{d:02d}" for d in range(100))
    rng = random.Random(seed)
    letters, weights = "etaoinshrdlcumwfgypbvkjxqz", (12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2,
                                                        1, 1, 1, 1, 1, 1, 1)
    while True:  # synthetic words: lower, Capitalised or UPPER, with or without a leading space
        word = "".join(rng.choices(letters, weights, k=rng.randint(2, 8)))
        word = (word, word.capitalize(), word.upper())[rng.randrange(3)]
        yield (" " + word) if rng.random() < 0.5 else word


def _cjk() -> Iterator[str]:
    yield from _COMMON_CJK
    yield from (chr(c) for c in range(0x4E00, 0xA000))


def _targets(seed: int) -> Iterator[bytes]:
    """Target tokens, round-robin over the groups (a group that runs out drops out; Latin never does)."""
    groups = [_latin(seed), _cjk(), iter(_HIRAGANA + _KATAKANA), iter(_ARABIC), iter(_SPANISH_LETTERS)]
    while groups:
        for group in list(groups):
            token = next(group, None)
            if token is None:
                groups.remove(group)
            else:
                yield token.encode("utf-8")


def tiktoken_vocabulary(n_ranks: int, seed: int = 0) -> bytes:
    """The content of a `.tiktoken` rank file (`base64(token) rank` per line) with exactly `n_ranks`
    unique tokens, deterministic from `seed` (module docstring)."""
    if n_ranks < 256:
        raise ValueError(f"a byte-level BPE needs at least the 256 single bytes, got n_ranks={n_ranks}")
    tokens = [bytes([b]) for b in gpt2_byte_order()]
    seen = set(tokens)
    max_draws = 4 * n_ranks  # synthetic words repeat more and more; stop drawing well before it matters
    for draws, target in enumerate(_targets(seed)):
        if len(tokens) >= n_ranks or draws >= max_draws:
            break
        for end in range(2, len(target) + 1):  # byte prefixes first: they get the lower ranks
            if target[:end] not in seen and len(tokens) < n_ranks:
                seen.add(target[:end])
                tokens.append(target[:end])
    filler = 0
    while len(tokens) < n_ranks:
        tokens.append(b"\xff\xfe" + filler.to_bytes(4, "big"))  # 0xFF never occurs in UTF-8
        filler += 1
    return "".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)).encode()
