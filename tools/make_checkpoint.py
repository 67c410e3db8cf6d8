"""Write a RANDOM-weight IndexTTS2 checkpoint folder in the official layout and file formats.

    python tools/make_checkpoint.py --config tiny --out checkpoints/tiny --seed 0
    python tools/make_checkpoint.py --config official --out checkpoints/official --seed 0 --force
    python tools/make_checkpoint.py --model 2.5 --config tiny --out checkpoints/tiny25

The real weights cannot be downloaded in CI, so everything is tested on these. The folder mirrors the
official one (upstream-quirks.md 15): `config.yaml`, `gpt.pth` (plain state dict), `s2mel.pth`
(`{"net": {"cfm", "length_regulator", "gpt_layer"}}`), `bpe.model`, `wav2vec2bert_stats.pt`,
`feat1.pt`, `feat2.pt` and `hf_cache/` (w2v-BERT and codec safetensors, CAMPPlus state dict,
BigVGAN `{"generator": ...}` in weight-norm form, and the two `config.json`), and the emotion-from-text
model at config.yaml's `qwen_emo_path` (`qwen0.6bemo4-merge/`: a Hugging Face Qwen3 causal-LM folder with
`config.json`, `generation_config.json`, `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`
and bf16 `model.safetensors`, from configs/<config>/qwen_emo_config.json and qwen_generation_config.json;
as the published folder, inferred from its file sizes, the chat template is only in chat_template.jinja
and the generation config is greedy (one eos id, no sampling keys); see export/qwen_folder.py). Values come from `export/random_weights.py` (deterministic from --seed); computed
buffers hold their real values. `--no-qwen-emo` leaves the emotion model out.

`--model 2.5` writes an IndexTTS-2.5 folder from configs/<config>25/ (indextts25.md §1): the published
config.yaml (`version: 2.0`, absolute weight paths), `gpt.pth` in the campplus layout, `s2mel.pth` as
above (upstream still ships the unused gpt_layer), `codec.pth` (`{"model": EnhancedCodec state dict}`),
the tiktoken tokenizer instead of `bpe.model`, no MaskGCT codec under hf_cache/, and the same
emotion-from-text folder.

The folder is written into a temporary sibling and renamed into place, so --out is either complete or
untouched. An existing non-empty --out is refused unless --force is given.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

from indextts2_onnx.export import checkpoint_layout as layouts
from indextts2_onnx.export.checkpoint import CODEC_FILE as CODEC_25_FILE
from indextts2_onnx.export.checkpoint import TIKTOKEN_FILE
from indextts2_onnx.export.config import IndexTTS2Config, load_bigvgan_config, load_config, load_w2v_config
from indextts2_onnx.export.qwen_folder import write_qwen_folder
from indextts2_onnx.export.random_weights import random_state_dict, randomize_module_
from indextts2_onnx.export.staging import check_out, staged_folder
from indextts2_onnx.export.tiktoken_vocab import tiktoken_vocabulary
from indextts2_onnx.runtime.multilingual import N_SPECIALS

REPO = Path(__file__).resolve().parents[1]
CONFIG_NAMES = ("tiny", "official")
MODELS = ("2.0", "2.5")  # the family: 2.5 reads configs/<config>25/

# Paths of the external models inside the checkpoint folder (upstream model_download.py).
W2V_DIR = "hf_cache/w2v-bert-2.0"
CODEC_FILE = "hf_cache/semantic_codec_model.safetensors"
CAMPPLUS_FILE = "hf_cache/campplus_cn_common.bin"
BIGVGAN_DIR = "hf_cache/bigvgan"


# --- one writer per file format --------------------------------------------------------------------


def _nest(flat: dict[str, torch.Tensor], depth: int) -> dict:
    """{"a.b.c.d": t} -> {"a": {"b": {"c.d": t}}} for depth 2 (keys below `depth` stay flattened)."""
    nested: dict = {}
    for key, value in flat.items():
        parts = key.split(".", depth)
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _save_torch(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def _save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def write_gpt(path: Path, cfg: IndexTTS2Config, seed: int) -> None:
    """gpt.pth: our UnifiedVoice's state dict (= the official keys), parameters randomised, buffers kept."""
    from indextts2_onnx.export.modules.gpt import UnifiedVoice

    model = randomize_module_(UnifiedVoice(cfg.gpt), seed, cfg.gpt_checkpoint)
    _save_torch(path, dict(model.state_dict()))


def write_bpe(path: Path, vocab_size: int, seed: int) -> None:
    path.write_bytes(train_bpe(vocab_size, seed))


# --- bpe.model -----------------------------------------------------------------------------------------

_ONSETS = ("", "", "B", "C", "D", "F", "G", "H", "J", "K", "L", "M", "N", "P", "QU", "R", "S", "T", "V",
           "W", "Y", "Z", "BL", "BR", "CH", "CL", "CR", "DR", "FL", "FR", "GL", "GR", "PL", "PR", "SC",
           "SH", "SK", "SL", "SM", "SN", "SP", "ST", "STR", "SW", "TH", "TR", "WH")
_VOWELS = ("A", "E", "I", "O", "U", "A", "E", "I", "O", "AI", "EA", "EE", "OO", "OU", "OW", "IE", "Y")
_CODAS = ("", "", "", "N", "R", "S", "T", "L", "M", "ND", "NG", "NT", "RT", "ST", "CK", "SS", "LL", "TH",
          "SH", "CH", "RD", "LD", "X")
_CLITICS = ("'S", "'T", "'LL", "'RE", "'D", "'M")
_PUNCT = (",", ",", ".", ".", "!", "?", "-")
_CJK_FIRST, _CJK_LAST = 0x4E00, 0x9FA5  # CJK Unified Ideographs
# Very common Chinese characters, taken first so that everyday text is not all <unk>.
_COMMON_CJK = tuple(dict.fromkeys(
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么"
    "心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分"
    "将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重"
    "被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住"
))


def bpe_corpus(vocab_size: int, seed: int) -> list[str]:
    """Sentences shaped like upstream's tokenizer input: upper-case English-like words (with clitics,
    hyphens and `, . ! ?` attached), digits, and CJK characters separated by spaces.

    Sizes scale with the vocabulary so that BPE has enough distinct merges to reach it exactly. The CJK
    set (common characters first, then random ones) is capped at vocab/4 so that a tiny vocabulary still
    holds every character (character_coverage 1.0)."""
    rng = random.Random(seed)
    n_cjk = min(400, vocab_size // 4)
    cjk = list(_COMMON_CJK[:n_cjk])
    while len(cjk) < n_cjk:
        char = chr(rng.randint(_CJK_FIRST, _CJK_LAST))
        if char not in cjk:
            cjk.append(char)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < max(200, 3 * vocab_size):
        n_syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    cum, total = [], 0.0  # Zipf-like word frequencies
    for i in range(len(words)):
        total += 1.0 / (i + 1) ** 0.9
        cum.append(total)

    def word() -> str:
        return words[min(bisect.bisect(cum, rng.random() * total), len(words) - 1)]

    lines = []
    for _ in range(max(500, 6 * vocab_size)):
        tokens = []
        for _ in range(rng.randint(4, 14)):
            r = rng.random()
            if r < 0.2:
                tokens.append(" ".join(rng.choices(cjk, k=rng.randint(1, 6))))
            elif r < 0.25:
                tokens.append(str(rng.randint(0, 10 ** rng.randint(1, 4))))
            elif r < 0.3:
                tokens.append(f"{word()}-{word()}")
            elif r < 0.35:
                tokens.append(word() + rng.choice(_CLITICS))
            else:
                tokens.append(word())
            if rng.random() < 0.15:
                tokens[-1] += rng.choice(_PUNCT)
        lines.append(" ".join(tokens) + rng.choice((".", ".", "?", "!", ",", "")))
    return lines


def train_bpe(vocab_size: int, seed: int) -> bytes:
    """A SentencePiece BPE model with exactly `vocab_size` pieces and `<s>`=0, `</s>`=1, `<unk>`=2, no pad."""
    model = io.BytesIO()
    with open(os.devnull, "w") as quiet:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(bpe_corpus(vocab_size, seed)),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=1.0,
            bos_id=0,
            eos_id=1,
            unk_id=2,
            pad_id=-1,
            num_threads=1,
            logstream=quiet,
        )
    return model.getvalue()


def write_tiktoken(path: Path, cfg: IndexTTS2Config, seed: int) -> None:
    """The 2.5 tokenizer: as many BPE ranks as the config's text tokens leave after upstream's 1,673
    special tokens (58,836 for the official 60,509)."""
    path.write_bytes(tiktoken_vocabulary(cfg.gpt.number_text_tokens - N_SPECIALS, seed))


def qwen_emo_dir(cfg: IndexTTS2Config) -> str | None:
    """config.yaml's `qwen_emo_path` (upstream joins it to the checkpoint folder), without its trailing
    slash; None when the config names none. ValueError for a path that leaves the folder."""
    rel = str(cfg.raw.get("qwen_emo_path") or "").strip().rstrip("/")
    if not rel:
        return None
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise ValueError(f"config.yaml: qwen_emo_path {rel!r} must be a folder inside the checkpoint")
    return rel


def write_qwen_emo(path: Path, config_dir: Path, seed: int) -> None:
    """The emotion-from-text model folder from configs/<name>/qwen_emo_config.json and
    qwen_generation_config.json."""
    config = json.loads((config_dir / "qwen_emo_config.json").read_text(encoding="utf-8"))
    generation = json.loads((config_dir / "qwen_generation_config.json").read_text(encoding="utf-8"))
    write_qwen_folder(path, config, generation, seed)


# --- the folder --------------------------------------------------------------------------------------


def _write_files(root: Path, config_dir: Path, seed: int, report: Callable[[str, int, float], None],
                 family: str = "2.0", qwen_emo: bool = True) -> None:
    """Write every file of the folder into `root`, one at a time (each is freed before the next)."""
    cfg = load_config(config_dir / "config.yaml", family)
    w2v = load_w2v_config(config_dir / "w2v_config.json")
    bigvgan = load_bigvgan_config(config_dir / "bigvgan_config.json")

    def write(rel: str, writer) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        writer(path)
        report(rel, path.stat().st_size, time.perf_counter() - start)

    def state(rel: str, layout, buffers=None) -> dict[str, torch.Tensor]:
        return random_state_dict(layout, seed, namespace=rel, buffers=buffers)

    write("config.yaml", lambda p: shutil.copyfile(config_dir / "config.yaml", p))
    write(f"{W2V_DIR}/config.json", lambda p: shutil.copyfile(config_dir / "w2v_config.json", p))
    write(f"{BIGVGAN_DIR}/config.json", lambda p: shutil.copyfile(config_dir / "bigvgan_config.json", p))
    if cfg.is_25:
        write(TIKTOKEN_FILE, lambda p: write_tiktoken(p, cfg, seed))
    else:
        write(cfg.bpe_model, lambda p: write_bpe(p, cfg.gpt.number_text_tokens, seed))
    write(cfg.gpt_checkpoint, lambda p: write_gpt(p, cfg, seed))

    rel = cfg.s2mel_checkpoint
    s2mel = layouts.s2mel_layout(cfg), layouts.s2mel_buffers(cfg)
    write(rel, lambda p: _save_torch(p, _nest(state(rel, *s2mel), depth=2)))  # {"net": {"cfm": {...}, ...}}

    rel = cfg.w2v_stat
    write(rel, lambda p: _save_torch(p, state(rel, layouts.stats_layout(w2v.hidden_size))))
    for rel, layout in layouts.matrices_layout(cfg).items():
        write(rel, lambda p, rel=rel, layout=layout: _save_torch(p, state(rel, layout)[""]))  # a bare tensor

    rel = f"{W2V_DIR}/model.safetensors"
    write(rel, lambda p: _save_safetensors(p, state(rel, layouts.w2v_layout(w2v))))
    if cfg.is_25:  # {"model": state dict} of the whole EnhancedCodec
        codec = layouts.enhanced_codec_layout(cfg.semantic_codec)
        write(CODEC_25_FILE, lambda p: _save_torch(p, {"model": state(CODEC_25_FILE, codec)}))
    else:
        write(CODEC_FILE, lambda p: _save_safetensors(p, state(CODEC_FILE, layouts.codec_layout(cfg.semantic_codec))))
    write(CAMPPLUS_FILE, lambda p: _save_torch(p, state(CAMPPLUS_FILE, layouts.campplus_layout(cfg.s2mel.style_dim))))

    rel = f"{BIGVGAN_DIR}/bigvgan_generator.pt"
    vocoder = layouts.bigvgan_layout(bigvgan), layouts.bigvgan_buffers(bigvgan)
    write(rel, lambda p: _save_torch(p, _nest(state(rel, *vocoder), depth=1)))  # {"generator": {...}}

    rel = qwen_emo_dir(cfg) if qwen_emo else None
    if rel is not None:  # one report line for the whole folder
        start = time.perf_counter()
        write_qwen_emo(root / rel, config_dir, seed)
        size = sum(f.stat().st_size for f in (root / rel).rglob("*") if f.is_file())
        report(f"{rel}/", size, time.perf_counter() - start)


def make_checkpoint(config_dir: Path, out: Path, seed: int, force: bool = False,
                    report: Callable[[str, int, float], None] | None = None, family: str = "2.0",
                    qwen_emo: bool = True) -> None:
    """Write the random `family` checkpoint for `config_dir` (holding config.yaml, w2v_config.json,
    bigvgan_config.json, qwen_emo_config.json, qwen_generation_config.json) into `out` atomically.
    `report(rel_path, n_bytes, seconds)` is called per file (once for the emotion model's folder).
    `qwen_emo` False: no emotion-from-text model folder."""
    with staged_folder(Path(out), force) as tmp:
        _write_files(tmp, Path(config_dir), seed, report or (lambda *a: None), family, qwen_emo)


def config_dir(config: str, model: str = "2.0") -> Path:
    """configs/<config>/ for 2.0, configs/<config>25/ for 2.5."""
    return REPO / "configs" / (config if model == "2.0" else f"{config}25")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIG_NAMES, required=True, help="configs/<name>/ to use")
    parser.add_argument("--model", choices=MODELS, default="2.0",
                        help="model family: 2.0 (IndexTTS-2, default) or 2.5 (IndexTTS-2.5, configs/<name>25/)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument("--no-qwen-emo", dest="qwen_emo", action="store_false",
                        help="write no emotion-from-text model folder")
    args = parser.parse_args(argv)

    def report(rel: str, n_bytes: int, seconds: float) -> None:
        print(f"  {rel:<45} {n_bytes / 2**20:10.2f} MiB {seconds:7.2f} s", flush=True)

    start = time.perf_counter()
    try:
        check_out(args.out, args.force)
        family = " IndexTTS-2.5" if args.model == "2.5" else ""
        print(f"writing {args.config}{family} checkpoint (seed {args.seed}) to {args.out}")
        make_checkpoint(config_dir(args.config, args.model), args.out, args.seed, args.force, report, args.model,
                        args.qwen_emo)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"done: {total / 2**20:.1f} MiB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
