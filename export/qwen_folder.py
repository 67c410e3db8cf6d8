"""A RANDOM-weight stand-in for upstream's emotion-from-text model folder (`qwen0.6bemo4-merge/`).

Upstream ships a Qwen3-0.6B fine-tune as a Hugging Face causal-LM folder (config.yaml's `qwen_emo_path`;
spec: qwen-emotion.md). This module writes a folder of the same shape, with no transformers needed:

    config.json             the Qwen3 config it is given (configs/<name>/qwen_emo_config.json)
    generation_config.json  the generation defaults it is given (configs/<name>/qwen_generation_config.json)
    tokenizer.json          a byte-level BPE built here with `tokenizers`, shaped like Qwen2/Qwen3's
    tokenizer_config.json   Qwen3's fields, without a chat template
    chat_template.jinja     our own chat template (ChatML + `enable_thinking=False`)
    model.safetensors       bf16 random weights under Hugging Face Qwen3ForCausalLM's keys, streamed to disk

This mirrors the published folder, as inferred from its file sizes. Its tokenizer_config.json (5,433 bytes)
is too small to also hold Qwen3's ~4 KB chat template: the template lives only in chat_template.jinja
(550 bytes; transformers >= 4.52 reads that file, and it takes priority over a tokenizer_config.json
`chat_template`). Its generation_config.json is exactly the 117 bytes of `{"bos_token_id": 151643,
"eos_token_id": 151645, "pad_token_id": 151643, "transformers_version": "4.51.3"}` written key-sorted with
indent 2 and a final newline: a single eos id and no sampling keys, so transformers' defaults apply and
generation is GREEDY. configs/<name>/qwen_generation_config.json hold that (tiny: its own tokenizer's ids).

The tokenizer: the 256 byte-level characters (ids 0..255, in GPT-2's bytes_to_unicode order, as Qwen's),
then merges learned by `tokenizers`' BpeTrainer on a synthetic corpus (Chinese, English, digits and JSON
answers like the emotion model's), then, when the corpus cannot reach the requested size in reasonable
time (the official 151,643), merges generated from seed (pairs of existing short tokens whose
concatenation is new): `regular_tokens` entries in all, every merge's parts and result in the vocabulary.
After them Qwen3's 26 added tokens, so with 151,643 regular tokens every id equals Qwen3's real one.

The number of regular tokens is read from config.json's `bos_token_id`: Qwen's bos token is
`<|endoftext|>`, the first added token, so its id is the size of the regular vocabulary.
`write_qwen_folder` checks every other id the two config files hold against the tokenizer.

Everything is a pure function of the seed: the corpus, the merges and each tensor (its own generator,
`random_weights.tensor_generator`), so the same seed writes the same bytes.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from .random_weights import BIAS_STD, GAIN_STD, tensor_generator

QWEN_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
              "generation_config.json")

# Qwen3's added tokens in id order (first id = the regular vocabulary's size) and their `special` flag, as in
# Qwen3's tokenizer_config.json: only the first 14 are special (skipped by decode(skip_special_tokens=True));
# the tool/FIM/think markers are ordinary added tokens.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
ENDOFTEXT, IM_END = "<|endoftext|>", "<|im_end|>"
# Qwen's additional_special_tokens: the special added tokens but <|endoftext|> (the pad token).
ADDITIONAL_SPECIAL_TOKENS = tuple(t for t, special in ADDED_TOKENS if special and t != ENDOFTEXT)

# Qwen2/Qwen3's pre-tokenizer split (tokenizer.json "pre_tokenizer" -> Split -> Regex).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Our ChatML template, rendering what IndexTTS2 asks for as Qwen3's does: each message as
# `<|im_start|>{role}\n{content}<|im_end|>\n`; with add_generation_prompt `<|im_start|>assistant\n`, then an
# empty think block when enable_thinking is given and false. No tools branch; assistant turns verbatim.
CHAT_TEMPLATE = r"""{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# Qwen's ByteLevel pre-tokenizer, post-processor and decoder options (the split is done by SPLIT_PATTERN).
QWEN_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}

MODEL_MAX_LENGTH = 131072  # Qwen3-0.6B's tokenizer_config.json
NAMESPACE = "qwen_emo/model.safetensors"  # random_weights.tensor_generator namespace of the weights
TRAIN_TOKENS = 4096  # BpeTrainer stops here (bpe_corpus supports ~2,700 tokens); more are generated
_CHUNK_ELEMENTS = 1 << 23  # weights are drawn and written this many values at a time


# --- weights ---------------------------------------------------------------------------------------------


def qwen_state_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Hugging Face Qwen3ForCausalLM's state dict for `config` (a Qwen3 config.json): key -> shape, in
    the model's order. Without `lm_head.weight` when the embeddings are tied (as save_pretrained writes)."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    vocab = int(config["vocab_size"])
    bias = bool(config.get("attention_bias", False))
    layout: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        for name, out_dim, in_dim in (("q_proj", heads * head_dim, hidden), ("k_proj", kv_heads * head_dim, hidden),
                                      ("v_proj", kv_heads * head_dim, hidden), ("o_proj", hidden, heads * head_dim)):
            layout[f"{p}self_attn.{name}.weight"] = (out_dim, in_dim)
            if bias:
                layout[f"{p}self_attn.{name}.bias"] = (out_dim,)
        layout[f"{p}self_attn.q_norm.weight"] = (head_dim,)
        layout[f"{p}self_attn.k_norm.weight"] = (head_dim,)
        layout[f"{p}mlp.gate_proj.weight"] = (inter, hidden)
        layout[f"{p}mlp.up_proj.weight"] = (inter, hidden)
        layout[f"{p}mlp.down_proj.weight"] = (hidden, inter)
        layout[f"{p}input_layernorm.weight"] = (hidden,)
        layout[f"{p}post_attention_layernorm.weight"] = (hidden,)
    layout["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings", False):
        layout["lm_head.weight"] = (vocab, hidden)
    return layout


def _is_norm(key: str) -> bool:
    return key.endswith(("norm.weight", "layernorm.weight"))


def _random_chunks(key: str, shape: tuple[int, ...], seed: int) -> Iterator[torch.Tensor]:
    """The tensor's bf16 values in row blocks of about _CHUNK_ELEMENTS. Matrices (projections and the
    embedding table) N(0, 1/in_features), so every layer keeps O(1) activations and the tied logits are
    O(1) at any width (official: std 0.03, near Qwen's initializer_range 0.02); norm gains 1 + 0.1 N(0, 1);
    biases N(0, 0.02). One generator per tensor, chunks drawn in order: a pure function of (seed, key)."""
    gen = tensor_generator(seed, NAMESPACE, key)
    if _is_norm(key):
        mean, std = 1.0, GAIN_STD
    elif len(shape) == 2:
        mean, std = 0.0, 1.0 / math.sqrt(shape[1])
    else:
        mean, std = 0.0, BIAS_STD
    row = math.prod(shape[1:])
    rows = max(1, _CHUNK_ELEMENTS // max(row, 1))
    for start in range(0, shape[0], rows):
        n = min(rows, shape[0] - start)
        yield torch.empty((n, *shape[1:])).normal_(mean, std, generator=gen).to(torch.bfloat16)


def write_safetensors_bf16(path: Path, layout: dict[str, tuple[int, ...]], seed: int) -> None:
    """A safetensors file (metadata {"format": "pt"}, tensors in key order) of random bf16 values for
    `layout`, written tensor by tensor: memory stays at one chunk, whatever the file's size."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    keys = sorted(layout)  # safetensors' own order for tensors of one dtype
    for key in keys:
        size = 2 * math.prod(layout[key])
        header[key] = {"dtype": "BF16", "shape": list(layout[key]), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key in keys:
            for chunk in _random_chunks(key, layout[key], seed):
                f.write(chunk.view(torch.int16).numpy().astype("<i2", copy=False).tobytes())


# --- tokenizer -------------------------------------------------------------------------------------------


def byte_alphabet() -> list[str]:
    """GPT-2's bytes_to_unicode characters in its order (printable bytes as themselves first, then the
    others as chr(256 + n)): Qwen's ids 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


# Common Chinese characters (everyday text, the emotion names and the system prompt 文本情感分类), English
# words and the emotion model's JSON keys: the synthetic corpus the merges are learned from.
_EMOTIONS = ("高兴", "愤怒", "悲伤", "恐惧", "反感", "低落", "惊讶", "自然")
_ZH_PHRASES = ("文本情感分类", "今天真开心", "我很生气", "他很难过", "有点害怕", "真讨厌", "心情不好", "太意外了",
               "平静", "开心", "快乐", "生气", "伤心", "害怕", "讨厌", "情绪", "感觉", "非常", "一点", "觉得")
_ZH_CHARS = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心"
    "多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外"
    "但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电"
    "四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性"
    "通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清"
    "物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连"
    "远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告"
    "江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单"
    "怒悲伤恐惧惊讶低落兴奋喜欢哭泣担忧烦恼痛苦温柔紧张激动失望羡慕孤独寂寞幸福愉悦愁厌恶恨惜怕慌"
)
_EN_WORDS = (
    "the system user assistant be to of and a in that have I it for not on with he as you do at this but his by "
    "from they we say her she or an will my one all would there their what so up out if about who get which go me "
    "when make can like time no just him know take people into year your good some could them see other than then "
    "now look only come its over think also back after use two how our work first well way even new want because "
    "any these give day most us is are was were been has had did said very really today feel feeling happy angry "
    "sad afraid disgusted melancholic surprised calm emotion text love hate fear joy sorry great terrible wonderful "
    "awful excited nervous tired lonely hello world thank thanks please yes okay never always life friend family "
    "home night morning music story voice"
).split()
_EN_EMOTIONS = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")


def _zipf(rng: random.Random, items, exponent: float = 1.0):
    cum, total = [], 0.0
    for i in range(len(items)):
        total += 1.0 / (i + 1) ** exponent
        cum.append(total)
    return lambda: items[min(bisect.bisect(cum, rng.random() * total), len(items) - 1)]


def bpe_corpus(seed: int, lines: int = 3000) -> list[str]:
    """Deterministic synthetic text: Chinese sentences, English sentences, mixed lines and the emotion
    model's answers (`{"高兴": 0.8, "愤怒": 0.0, ...}`), word frequencies Zipf-like."""
    rng = random.Random(seed)
    zh_char = _zipf(rng, _ZH_CHARS, 0.8)
    zh_phrase = _zipf(rng, _ZH_PHRASES + _EMOTIONS, 0.6)
    en_word = _zipf(rng, _EN_WORDS, 0.9)

    def chinese() -> str:
        parts = []
        for _ in range(rng.randint(2, 8)):
            parts.append(zh_phrase() if rng.random() < 0.3 else "".join(zh_char() for _ in range(rng.randint(1, 4))))
            if rng.random() < 0.25:
                parts.append(rng.choice("，，。！？、：“”"))
        return "".join(parts) + rng.choice("。。！？")

    def english() -> str:
        words = [en_word() for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
        return " ".join(words) + rng.choice(("", ".", ".", "!", "?", ","))

    def answer() -> str:
        keys = _EMOTIONS if rng.random() < 0.8 else _EN_EMOTIONS
        pairs = [f'"{k}": {rng.choice(("0.0", "0.1", "0.2", "0.5", "0.8", "1.0", str(rng.randint(0, 100) / 100)))}'
                 for k in keys if rng.random() < 0.8]
        sep = ", " if rng.random() < 0.7 else ","
        return "{" + sep.join(pairs) + "}"

    out = []
    for _ in range(lines):
        r = rng.random()
        if r < 0.4:
            out.append(chinese())
        elif r < 0.7:
            out.append(english())
        elif r < 0.85:
            out.append(answer())
        else:
            out.append(chinese() + " " + english())
    return out


def _trained_merges(target: int, seed: int) -> list[tuple[str, str]]:
    """Merges BpeTrainer learns from bpe_corpus(seed) for a vocabulary of at most `target` (alphabet included)."""
    from tokenizers import Tokenizer, models, trainers

    alphabet = byte_alphabet()
    if target <= len(alphabet):
        return []
    tok = Tokenizer(models.BPE())
    _set_pipeline(tok)
    trainer = trainers.BpeTrainer(vocab_size=target, min_frequency=2, show_progress=False,
                                  initial_alphabet=alphabet, special_tokens=[])
    tok.train_from_iterator(bpe_corpus(seed), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _fill_merges(vocab: dict[str, int], merges: list[tuple[str, str]], size: int, seed: int) -> None:
    """Add merges (a, b) of existing short tokens whose concatenation is new until `vocab` has `size`
    entries. `a` is at most 6 characters, `b` at most 3, so tokens stay word-sized (Qwen's average ~6)."""
    rng = random.Random(seed * 7919 + 17)
    left = [t for t in vocab if len(t) <= 6]
    right = [t for t in vocab if len(t) <= 3]
    while len(vocab) < size:
        a, b = left[rng.randrange(len(left))], right[rng.randrange(len(right))]
        ab = a + b
        if ab in vocab:
            continue
        vocab[ab] = len(vocab)
        merges.append((a, b))
        if len(ab) <= 6:
            left.append(ab)
        if len(ab) <= 3:
            right.append(ab)


def _set_pipeline(tok) -> None:
    """Qwen2/Qwen3's normalizer, pre-tokenizer, post-processor and decoder."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    byte_level.trim_offsets = False  # not a constructor argument
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False), byte_level])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()  # its options, unused when decoding, are set in build_tokenizer


def build_tokenizer(regular_tokens: int, seed: int):
    """A Qwen-shaped byte-level BPE `tokenizers.Tokenizer`: `regular_tokens` BPE entries (ids
    0..regular_tokens-1: the byte alphabet, then one token per merge), then ADDED_TOKENS."""
    from tokenizers import AddedToken, Tokenizer, models

    alphabet = byte_alphabet()
    if regular_tokens < len(alphabet):
        raise ValueError(f"a byte-level BPE needs at least {len(alphabet)} regular tokens, not {regular_tokens}")
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for a, b in _trained_merges(min(regular_tokens, TRAIN_TOKENS), seed):
        if a + b not in vocab:  # never happens with BpeTrainer; keeps ids dense if it did
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    _fill_merges(vocab, merges, regular_tokens, seed)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False, ignore_merges=False))
    _set_pipeline(tok)
    for content, special in ADDED_TOKENS:  # one at a time: ids in this order
        token = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    data = json.loads(tok.to_str())
    data["decoder"] = dict(QWEN_BYTE_LEVEL)  # as Qwen's file; decoders.ByteLevel() takes no options
    tok = Tokenizer.from_str(json.dumps(data))
    for i, (content, _) in enumerate(ADDED_TOKENS):
        if tok.token_to_id(content) != regular_tokens + i:
            raise RuntimeError(f"{content} got id {tok.token_to_id(content)}, not {regular_tokens + i}")
    return tok


def tokenizer_config(regular_tokens: int) -> dict:
    """tokenizer_config.json as Qwen3's, without `chat_template`: the published folder keeps it in
    chat_template.jinja (CHAT_TEMPLATE, written by write_qwen_folder)."""
    decoder = {str(regular_tokens + i): {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                                         "single_word": False, "special": special}
               for i, (content, special) in enumerate(ADDED_TOKENS)}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# --- the folder ------------------------------------------------------------------------------------------


def regular_tokens_of(config: dict) -> int:
    """The regular vocabulary's size: config.json's bos_token_id (Qwen's bos is <|endoftext|>, the first
    added token)."""
    bos = config.get("bos_token_id")
    if not isinstance(bos, int) or isinstance(bos, bool) or bos < 256:
        raise ValueError(f"config.json: bos_token_id must be the id of {ENDOFTEXT} (= the number of regular "
                         f"tokens, at least 256), not {bos!r}")
    return bos


def check_token_ids(config: dict, generation: dict, tok) -> None:
    """ValueError unless the ids in config.json / generation_config.json are `tok`'s: bos and pad
    <|endoftext|>, eos <|im_end|> (generation: that id, as the published folder has it, or a list holding it
    and at most also <|endoftext|>), and a vocab_size that holds every token."""
    end, im_end = tok.token_to_id(ENDOFTEXT), tok.token_to_id(IM_END)
    problems = []
    if config.get("bos_token_id") != end:
        problems.append(f"config.json bos_token_id {config.get('bos_token_id')!r} != {ENDOFTEXT} id {end}")
    if config.get("eos_token_id") != im_end:
        problems.append(f"config.json eos_token_id {config.get('eos_token_id')!r} != {IM_END} id {im_end}")
    if not isinstance(config.get("vocab_size"), int) or config["vocab_size"] < tok.get_vocab_size(True):
        problems.append(f"config.json vocab_size {config.get('vocab_size')!r} < {tok.get_vocab_size(True)} tokens")
    for key in ("bos_token_id", "pad_token_id"):
        if key in generation and generation[key] != end:
            problems.append(f"generation_config.json {key} {generation[key]!r} != {ENDOFTEXT} id {end}")
    if "eos_token_id" in generation:
        eos = generation["eos_token_id"]
        if isinstance(eos, list):
            ok = im_end in eos and set(eos) <= {im_end, end}
        else:
            ok = eos == im_end and isinstance(eos, int) and not isinstance(eos, bool)
        if not ok:
            problems.append(f"generation_config.json eos_token_id {generation['eos_token_id']!r} must be "
                            f"{IM_END} id {im_end}, or a list holding it (and at most {ENDOFTEXT} id {end})")
    if problems:
        raise ValueError("; ".join(problems))


def write_tokenizer_json(path: Path, tok) -> None:
    """`tok` as tokenizer.json with merges as "a b" strings, as Qwen's file has them: tokenizers >= 0.20
    writes [a, b] pairs, which older releases cannot read (a byte-level token never holds a space)."""
    data = json.loads(tok.to_str())
    data["model"]["merges"] = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in data["model"]["merges"]]
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _dump_json(path: Path, obj: dict, sort_keys: bool) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n", encoding="utf-8")


def write_qwen_folder(out: Path, config: dict, generation: dict, seed: int) -> None:
    """Write QWEN_FILES into `out` (created if needed): `config` as config.json, `generation` as
    generation_config.json (both key-sorted with indent 2 and a final newline, as transformers writes them),
    the tokenizer for `config` (regular tokens = its bos_token_id), CHAT_TEMPLATE as chat_template.jinja
    (verbatim, as transformers' save_pretrained writes it) and random bf16 weights (_random_chunks).
    ValueError, before anything is written, if an id does not match the tokenizer."""
    out = Path(out)
    regular = regular_tokens_of(config)
    tok = build_tokenizer(regular, seed)
    check_token_ids(config, generation, tok)
    layout = qwen_state_layout(config)
    out.mkdir(parents=True, exist_ok=True)
    _dump_json(out / "config.json", config, sort_keys=True)
    _dump_json(out / "generation_config.json", generation, sort_keys=True)
    write_tokenizer_json(out / "tokenizer.json", tok)
    _dump_json(out / "tokenizer_config.json", tokenizer_config(regular), sort_keys=False)
    (out / "chat_template.jinja").write_bytes(CHAT_TEMPLATE.encode("utf-8"))
    write_safetensors_bf16(out / "model.safetensors", layout, seed)
