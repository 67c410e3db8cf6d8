"""What every non-GPT file of an official IndexTTS2 checkpoint folder holds: keys, shapes, dtypes, buffers.

Each `*_layout` function walks the upstream module structure (architecture.md §2) over the sizes in our
config objects and returns the ordered `{state_dict_key: TensorSpec(shape, dtype)}` of one file, keys
flattened with `.` exactly as in `official_keys.json` (s2mel keys start with `net.`, BigVGAN keys with
`generator.`, bare tensors use the key ""). With the official configs the result equals
`official_keys.json` / `official_keys.dtypes.json`; a test checks that.

Persistent buffers hold values upstream computes at construction, not learned ones. `s2mel_buffers` and
`bigvgan_buffers` return them (DiT `input_pos`, time-embedder `freqs`, the anti-alias filters). BatchNorm
running statistics are buffers too, but they are trained values, so they are randomised like parameters.
The GPT (`gpt.pth`) is not declared here: its layout is `UnifiedVoice(cfg.gpt).state_dict()`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .config import BigVGANConfig, IndexTTS2Config, S2MelConfig, SemanticCodecConfig, W2VBertConfig
from .modules.bigvgan import kaiser_sinc_filter
from .modules.dit import timestep_freqs

F32, I64 = torch.float32, torch.int64


class TensorSpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype = F32


Layout = dict[str, TensorSpec]

# Widths upstream hard-codes in code rather than in any config file.
GPT_LAYER_HIDDEN = (256, 128)  # s2mel gpt_layer: Linear(gpt_dim, 256), Linear(256, 128), Linear(128, C)
TIMESTEP_FREQ_DIM = 256  # DiT TimestepEmbedder frequency_embedding_size (-> `freqs` [128])
CAMPPLUS_FEAT_DIM = 80
CAMPPLUS_HEAD_CHANNELS = 32  # FCM m_channels
CAMPPLUS_GROWTH = 32
CAMPPLUS_BN_SIZE = 4
CAMPPLUS_INIT_CHANNELS = 128
CAMPPLUS_BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))  # (layers, kernel, dilation) per CAMDenseTDNNBlock
CAMPPLUS_CAM_REDUCTION = 2
VOCOS_KERNEL = 7  # VocosBackbone embed / ConvNeXt depthwise kernel
BIGVGAN_PRE_POST_KERNEL = 7
ANTI_ALIAS_RATIO = 2  # Activation1d up/down ratio
ANTI_ALIAS_TAPS = 12  # int(6 * ratio // 2) * 2
ANTI_ALIAS_CUTOFF = 0.5  # the filters use cutoff 0.5 / ratio and half_width 0.6 / ratio
ANTI_ALIAS_HALF_WIDTH = 0.6


# --- building blocks: each returns the keys of one torch module, relative to it --------------------


def _put(layout: Layout, prefix: str, part: Layout) -> None:
    for key, spec in part.items():
        layout[f"{prefix}.{key}" if key else prefix] = spec


def _linear(n_out: int, n_in: int, bias: bool = True) -> Layout:
    part = {"weight": TensorSpec((n_out, n_in))}
    if bias:
        part["bias"] = TensorSpec((n_out,))
    return part


def _conv(n_out: int, n_in: int, *kernel: int, bias: bool = True) -> Layout:
    """Conv1d/Conv2d weight (out, in/groups, *kernel)."""
    return {"weight": TensorSpec((n_out, n_in, *kernel)), **({"bias": TensorSpec((n_out,))} if bias else {})}


def _weight_norm(weight_shape: tuple[int, ...], bias_dim: int | None) -> Layout:
    """torch.nn.utils.weight_norm(dim=0) form: g has weight's dim 0 and ones elsewhere.

    For ConvTranspose1d dim 0 is the *input* channel axis, so g follows it and the bias does not."""
    part = {"bias": TensorSpec((bias_dim,))} if bias_dim is not None else {}
    part["weight_g"] = TensorSpec((weight_shape[0],) + (1,) * (len(weight_shape) - 1))
    part["weight_v"] = TensorSpec(weight_shape)
    return part


def _norm(dim: int, bias: bool = True) -> Layout:
    """LayerNorm / GroupNorm / RMSNorm gain (and shift)."""
    return {"weight": TensorSpec((dim,)), **({"bias": TensorSpec((dim,))} if bias else {})}


def _batch_norm(dim: int, affine: bool = True) -> Layout:
    part = _norm(dim) if affine else {}
    part["running_mean"] = TensorSpec((dim,))
    part["running_var"] = TensorSpec((dim,))
    part["num_batches_tracked"] = TensorSpec((), I64)
    return part


def _embedding(rows: int, dim: int) -> Layout:
    return {"weight": TensorSpec((rows, dim))}


# --- s2mel.pth: {"net": {"cfm": ..., "length_regulator": ..., "gpt_layer": ...}} ----------------------


def s2mel_layout(cfg: IndexTTS2Config) -> Layout:
    """`s2mel.pth` (architecture §2.2): keys `net.cfm.estimator.*`, `net.length_regulator.*`, `net.gpt_layer.*`."""
    s2 = cfg.s2mel
    layout: Layout = {}
    _put(layout, "net.cfm.estimator", dit_layout(s2))
    _put(layout, "net.length_regulator", length_regulator_layout(s2))
    # gpt_layer: three plain linears gpt_dim -> 256 -> 128 -> semantic feature width (1024 upstream)
    widths = (s2.gpt_dim, *GPT_LAYER_HIDDEN, s2.length_regulator.in_channels)
    for i in range(3):
        _put(layout, f"net.gpt_layer.{i}", _linear(widths[i + 1], widths[i]))
    return layout


def length_regulator_layout(s2: S2MelConfig) -> Layout:
    """InterpolateRegulator: per sampling ratio [Conv1d k3, GroupNorm, Mish], then a 1x1 Conv1d."""
    lr = s2.length_regulator
    c = lr.channels
    layout: Layout = {}
    n = len(lr.sampling_ratios)
    for i in range(n):
        _put(layout, f"model.{3 * i}", _conv(c, c, 3))
        _put(layout, f"model.{3 * i + 1}", _norm(c))  # GroupNorm(1, c); 3*i+2 is Mish (no weights)
    _put(layout, f"model.{3 * n}", _conv(c, c, 1))
    _put(layout, "embedding", _embedding(lr.content_codebook_size, c))  # unused at inference
    layout["mask_token"] = TensorSpec((1, c))  # unused at inference
    _put(layout, "content_in_proj", _linear(c, lr.in_channels))
    return layout


def _gpt_fast_hidden(dim: int) -> int:
    """gpt-fast ModelArgs: find_multiple(int(2 * 4 * dim / 3), 256)."""
    n = int(2 * 4 * dim / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def _adaptive_norm(dim: int) -> Layout:
    """AdaptiveLayerNorm(dim, RMSNorm(dim)): RMSNorm gain + Linear(dim -> 2 dim) giving (scale, shift)."""
    layout: Layout = {}
    _put(layout, "project_layer", _linear(2 * dim, dim))
    _put(layout, "norm", _norm(dim, bias=False))
    return layout


def _dit_transformer(s2: S2MelConfig) -> Layout:
    d = s2.dit
    dim, hidden = d.hidden_dim, _gpt_fast_hidden(d.hidden_dim)
    layout: Layout = {}
    for i in range(d.depth):
        p = f"layers.{i}"
        _put(layout, f"{p}.attention.wqkv", _linear(3 * dim, dim, bias=False))  # n_local_heads == n_head
        _put(layout, f"{p}.attention.wo", _linear(dim, dim, bias=False))
        _put(layout, f"{p}.feed_forward.w1", _linear(hidden, dim, bias=False))
        _put(layout, f"{p}.feed_forward.w3", _linear(hidden, dim, bias=False))
        _put(layout, f"{p}.feed_forward.w2", _linear(dim, hidden, bias=False))
        _put(layout, f"{p}.ffn_norm", _adaptive_norm(dim))
        _put(layout, f"{p}.attention_norm", _adaptive_norm(dim))
        if d.uvit_skip_connection:
            _put(layout, f"{p}.skip_in_linear", _linear(dim, 2 * dim))
    _put(layout, "norm", _adaptive_norm(dim))
    return layout


def _timestep_embedder(dim: int) -> Layout:
    layout: Layout = {}
    _put(layout, "mlp.0", _linear(dim, TIMESTEP_FREQ_DIM))  # mlp.1 is SiLU
    _put(layout, "mlp.2", _linear(dim, dim))
    layout["freqs"] = TensorSpec((TIMESTEP_FREQ_DIM // 2,))
    return layout


def _wavenet(hidden: int, kernel: int, n_layers: int, gin: int) -> Layout:
    """VITS-style WN with weight-normed SConv1d (keys `<name>.conv.conv.*`)."""
    layout: Layout = {}
    for i in range(n_layers):
        _put(layout, f"in_layers.{i}.conv.conv", _weight_norm((2 * hidden, hidden, kernel), 2 * hidden))
    for i in range(n_layers):
        out = 2 * hidden if i < n_layers - 1 else hidden
        _put(layout, f"res_skip_layers.{i}.conv.conv", _weight_norm((out, hidden, 1), out))
    _put(layout, "cond_layer.conv.conv", _weight_norm((2 * hidden * n_layers, gin, 1), 2 * hidden * n_layers))
    return layout


def dit_layout(s2: S2MelConfig) -> Layout:
    """DiT estimator (architecture §2.2.3), keys relative to `net.cfm.estimator`."""
    d = s2.dit
    h, wn, c_in = d.hidden_dim, d.wavenet_hidden_dim, d.in_channels
    layout: Layout = {}
    _put(layout, "transformer", _dit_transformer(s2))
    _put(layout, "x_embedder", _weight_norm((h, c_in), h))  # unused in forward
    _put(layout, "cond_embedder", _embedding(d.content_codebook_size, h))  # unused
    _put(layout, "cond_projection", _linear(h, d.content_dim))
    _put(layout, "t_embedder", _timestep_embedder(h))
    layout["input_pos"] = TensorSpec((d.block_size,), I64)
    _put(layout, "t_embedder2", _timestep_embedder(wn))
    _put(layout, "conv1", _linear(wn, h))
    _put(layout, "conv2", _conv(c_in, wn, 1))
    _put(layout, "wavenet", _wavenet(wn, d.wavenet_kernel_size, d.wavenet_num_layers, gin=wn))
    # FinalLayer(wn, patch 1, wn): LayerNorm without affine, WN Linear, adaLN_modulation = [SiLU, Linear]
    _put(layout, "final_layer.linear", _weight_norm((wn, wn), wn))
    _put(layout, "final_layer.adaLN_modulation.1", _linear(2 * wn, wn))
    _put(layout, "res_projection", _linear(wn, h))
    _put(layout, "content_mask_embedder", _embedding(1, h))  # unused
    _put(layout, "skip_linear", _linear(h, h + c_in))
    # cat([x, prompt_x, cond_projection(cond), style]) -> hidden
    _put(layout, "cond_x_merge_linear", _linear(h, h + 2 * c_in + s2.style_dim))
    return layout


# --- hf_cache/semantic_codec_model.safetensors ----------------------------------------------------------


def _vocos_backbone(n_in: int, dim: int, intermediate: int, n_layers: int) -> Layout:
    layout: Layout = {}
    _put(layout, "embed", _conv(dim, n_in, VOCOS_KERNEL))
    _put(layout, "norm", _norm(dim))
    for i in range(n_layers):
        p = f"convnext.{i}"
        layout[f"{p}.gamma"] = TensorSpec((dim,))  # layer scale
        _put(layout, f"{p}.dwconv", _conv(dim, 1, VOCOS_KERNEL))  # depthwise
        _put(layout, f"{p}.norm", _norm(dim))
        _put(layout, f"{p}.pwconv1", _linear(intermediate, dim))
        _put(layout, f"{p}.pwconv2", _linear(dim, intermediate))
    _put(layout, "final_layer_norm", _norm(dim))
    return layout


def codec_layout(sc: SemanticCodecConfig) -> Layout:
    """MaskGCT RepCodec (architecture §2.3): encoder / decoder = [VocosBackbone, Linear], one FVQ."""
    layout: Layout = {}
    for side in ("encoder", "decoder"):
        _put(layout, f"{side}.0", _vocos_backbone(sc.hidden_size, sc.vocos_dim, sc.vocos_intermediate_dim,
                                                  sc.vocos_num_layers))
        _put(layout, f"{side}.1", _linear(sc.hidden_size, sc.vocos_dim))
    q = "quantizer.quantizers.0"
    _put(layout, f"{q}.in_project", _weight_norm((sc.codebook_dim, sc.hidden_size, 1), sc.codebook_dim))
    _put(layout, f"{q}.out_project", _weight_norm((sc.hidden_size, sc.codebook_dim, 1), sc.hidden_size))
    _put(layout, f"{q}.codebook", _embedding(sc.codebook_size, sc.codebook_dim))
    return layout


# --- hf_cache/campplus_cn_common.bin ---------------------------------------------------------------


def _res_block(n_in: int, planes: int, stride: int) -> Layout:
    """FCM BasicResBlock (stride on the frequency axis only)."""
    layout: Layout = {}
    _put(layout, "conv1", _conv(planes, n_in, 3, 3, bias=False))
    _put(layout, "bn1", _batch_norm(planes))
    _put(layout, "conv2", _conv(planes, planes, 3, 3, bias=False))
    _put(layout, "bn2", _batch_norm(planes))
    if stride != 1 or n_in != planes:
        _put(layout, "shortcut.0", _conv(planes, n_in, 1, 1, bias=False))
        _put(layout, "shortcut.1", _batch_norm(planes))
    return layout


def _fcm_head() -> Layout:
    m = CAMPPLUS_HEAD_CHANNELS
    layout: Layout = {}
    _put(layout, "conv1", _conv(m, 1, 3, 3, bias=False))
    _put(layout, "bn1", _batch_norm(m))
    for name in ("layer1", "layer2"):  # _make_layer(BasicResBlock, m, 2, stride=2): strides [2, 1]
        for j, stride in enumerate((2, 1)):
            _put(layout, f"{name}.{j}", _res_block(m, m, stride))
    _put(layout, "conv2", _conv(m, m, 3, 3, bias=False))
    _put(layout, "bn2", _batch_norm(m))
    return layout


def _dense_tdnn_layer(n_in: int, kernel: int) -> Layout:
    """CAMDenseTDNNLayer: BN-ReLU, Conv1x1 -> bn_channels, BN-ReLU, CAMLayer -> growth."""
    bn_ch, growth = CAMPPLUS_BN_SIZE * CAMPPLUS_GROWTH, CAMPPLUS_GROWTH
    layout: Layout = {}
    _put(layout, "nonlinear1.batchnorm", _batch_norm(n_in))
    _put(layout, "linear1", _conv(bn_ch, n_in, 1, bias=False))
    _put(layout, "nonlinear2.batchnorm", _batch_norm(bn_ch))
    _put(layout, "cam_layer.linear_local", _conv(growth, bn_ch, kernel, bias=False))
    _put(layout, "cam_layer.linear1", _conv(bn_ch // CAMPPLUS_CAM_REDUCTION, bn_ch, 1))
    _put(layout, "cam_layer.linear2", _conv(growth, bn_ch // CAMPPLUS_CAM_REDUCTION, 1))
    return layout


def campplus_layout(embedding_size: int) -> Layout:
    """CAMPPlus(feat_dim=80, embedding_size) (architecture §2.4); only the embedding size is configurable."""
    layout: Layout = {}
    _put(layout, "head", _fcm_head())
    channels = CAMPPLUS_HEAD_CHANNELS * (CAMPPLUS_FEAT_DIM // 8)  # FCM output: 32 x (80 / 8) = 320
    _put(layout, "xvector.tdnn.linear", _conv(CAMPPLUS_INIT_CHANNELS, channels, 5, bias=False))
    _put(layout, "xvector.tdnn.nonlinear.batchnorm", _batch_norm(CAMPPLUS_INIT_CHANNELS))
    channels = CAMPPLUS_INIT_CHANNELS
    for b, (n_layers, kernel, _dilation) in enumerate(CAMPPLUS_BLOCKS, start=1):
        for j in range(n_layers):
            _put(layout, f"xvector.block{b}.tdnnd{j + 1}", _dense_tdnn_layer(channels + j * CAMPPLUS_GROWTH, kernel))
        channels += n_layers * CAMPPLUS_GROWTH
        _put(layout, f"xvector.transit{b}.nonlinear.batchnorm", _batch_norm(channels))
        _put(layout, f"xvector.transit{b}.linear", _conv(channels // 2, channels, 1, bias=False))
        channels //= 2
    _put(layout, "xvector.out_nonlinear.batchnorm", _batch_norm(channels))
    # StatsPool -> 2 * channels; DenseLayer: Conv1d k1 without bias + BatchNorm1d(affine=False)
    _put(layout, "xvector.dense.linear", _conv(embedding_size, 2 * channels, 1, bias=False))
    _put(layout, "xvector.dense.nonlinear.batchnorm", _batch_norm(embedding_size, affine=False))
    return layout


# --- hf_cache/bigvgan/bigvgan_generator.pt: {"generator": ...} ---------------------------------------


def _anti_aliased_snake(channels: int) -> Layout:
    """Activation1d(SnakeBeta(channels)): log-scale alpha/beta + the two filter buffers."""
    return {
        "act.alpha": TensorSpec((channels,)),
        "act.beta": TensorSpec((channels,)),
        "upsample.filter": TensorSpec((1, 1, ANTI_ALIAS_TAPS)),
        "downsample.lowpass.filter": TensorSpec((1, 1, ANTI_ALIAS_TAPS)),
    }


def bigvgan_layout(b: BigVGANConfig) -> Layout:
    """BigVGAN v2 generator in weight-norm form (architecture §2.5), keys prefixed `generator.`."""
    layout: Layout = {}
    c0 = b.upsample_initial_channel
    _put(layout, "conv_pre", _weight_norm((c0, b.num_mels, BIGVGAN_PRE_POST_KERNEL), c0))
    for i, (u, k) in enumerate(zip(b.upsample_rates, b.upsample_kernel_sizes)):
        c_in, c_out = c0 // 2**i, c0 // 2 ** (i + 1)
        _put(layout, f"ups.{i}.0", _weight_norm((c_in, c_out, k), c_out))  # ConvTranspose1d: (in, out, k)
    n_kernels = len(b.resblock_kernel_sizes)
    for i in range(len(b.upsample_rates)):
        ch = c0 // 2 ** (i + 1)
        for j, (k, dilations) in enumerate(zip(b.resblock_kernel_sizes, b.resblock_dilation_sizes)):
            p = f"resblocks.{i * n_kernels + j}"
            for conv in ("convs1", "convs2"):
                for m in range(len(dilations)):
                    _put(layout, f"{p}.{conv}.{m}", _weight_norm((ch, ch, k), ch))
            for m in range(2 * len(dilations)):
                _put(layout, f"{p}.activations.{m}", _anti_aliased_snake(ch))
    ch = c0 // 2 ** len(b.upsample_rates)
    _put(layout, "activation_post", _anti_aliased_snake(ch))
    _put(layout, "conv_post", _weight_norm((1, ch, BIGVGAN_PRE_POST_KERNEL), 1 if b.use_bias_at_final else None))
    return {f"generator.{k}": spec for k, spec in layout.items()}


# --- hf_cache/w2v-bert-2.0/model.safetensors ------------------------------------------------------


def w2v_layout(w: W2VBertConfig) -> Layout:
    """transformers Wav2Vec2BertModel (relative_key attention, no adapter), architecture §2.6."""
    h, ff = w.hidden_size, w.intermediate_size
    layout: Layout = {"masked_spec_embed": TensorSpec((h,))}  # present since mask_time_prob > 0
    _put(layout, "feature_projection.layer_norm", _norm(w.feature_projection_input_dim))
    _put(layout, "feature_projection.projection", _linear(h, w.feature_projection_input_dim))
    n_distances = w.left_max_position_embeddings + w.right_max_position_embeddings + 1
    for i in range(w.num_hidden_layers):
        p = f"encoder.layers.{i}"
        for ffn in ("ffn1", "ffn2"):
            _put(layout, f"{p}.{ffn}_layer_norm", _norm(h))
            _put(layout, f"{p}.{ffn}.intermediate_dense", _linear(ff, h))
            _put(layout, f"{p}.{ffn}.output_dense", _linear(h, ff))
        _put(layout, f"{p}.self_attn_layer_norm", _norm(h))
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            _put(layout, f"{p}.self_attn.{name}", _linear(h, h))
        _put(layout, f"{p}.self_attn.distance_embedding", _embedding(n_distances, h // w.num_attention_heads))
        cm = f"{p}.conv_module"
        _put(layout, f"{cm}.layer_norm", _norm(h))
        _put(layout, f"{cm}.pointwise_conv1", _conv(2 * h, h, 1, bias=False))
        _put(layout, f"{cm}.depthwise_conv", _conv(h, 1, w.conv_depthwise_kernel_size, bias=False))
        _put(layout, f"{cm}.depthwise_layer_norm", _norm(h))
        _put(layout, f"{cm}.pointwise_conv2", _conv(h, h, 1, bias=False))
        _put(layout, f"{p}.final_layer_norm", _norm(h))
    return layout


# --- small files ---------------------------------------------------------------------------------------


def stats_layout(dim: int) -> Layout:
    """`wav2vec2bert_stats.pt`: per-feature mean and variance of the w2v-BERT semantic layer."""
    return {"mean": TensorSpec((dim,)), "var": TensorSpec((dim,))}


def matrices_layout(cfg: IndexTTS2Config) -> dict[str, Layout]:
    """`{file: layout}` of the two bare-tensor files (key ""): spk_matrix (feat1) rows are compared with the
    CAMPPlus style, emo_matrix (feat2) rows are added to the GPT-width emotion vector (architecture §2.8)."""
    rows = sum(cfg.emo_num)
    return {
        cfg.spk_matrix: {"": TensorSpec((rows, cfg.s2mel.style_dim))},
        cfg.emo_matrix: {"": TensorSpec((rows, cfg.gpt.model_dim))},
    }


# --- computed buffers --------------------------------------------------------------------------------


def dit_input_pos(block_size: int) -> torch.Tensor:
    """DiT `input_pos`: arange(block_size), int64 (block_size is hard-coded 16384 upstream)."""
    return torch.arange(block_size, dtype=I64)


def anti_alias_filter() -> torch.Tensor:
    """The filter every BigVGAN Activation1d holds twice (UpSample1d and DownSample1d's low-pass)."""
    return kaiser_sinc_filter(ANTI_ALIAS_CUTOFF / ANTI_ALIAS_RATIO, ANTI_ALIAS_HALF_WIDTH / ANTI_ALIAS_RATIO,
                              ANTI_ALIAS_TAPS)


def s2mel_buffers(cfg: IndexTTS2Config) -> dict[str, torch.Tensor]:
    """Computed persistent buffers of `s2mel.pth` (flat keys as in `s2mel_layout`)."""
    e = "net.cfm.estimator"
    return {
        f"{e}.input_pos": dit_input_pos(cfg.s2mel.dit.block_size),
        f"{e}.t_embedder.freqs": timestep_freqs(),
        f"{e}.t_embedder2.freqs": timestep_freqs(),
    }


def bigvgan_buffers(b: BigVGANConfig) -> dict[str, torch.Tensor]:
    """Every `upsample.filter` / `downsample.lowpass.filter` of the generator (one tensor each)."""
    filt = anti_alias_filter()
    return {k: filt.clone() for k in bigvgan_layout(b) if k.endswith((".upsample.filter", ".lowpass.filter"))}


# --- codec.pth (IndexTTS-2.5): {"model": EnhancedCodec state dict} -------------------------------------


ENHANCED_CODEC_RESAMPLE_KERNEL = 3  # EnhancedCodec `down` (stride 2) and `up` (after nearest x2): Conv1d k3 p1


def enhanced_codec_layout(sc: SemanticCodecConfig) -> Layout:
    """IndexTTS-2.5 EnhancedCodec (indextts25 spec §4): RepCodec with downsample_scale 2, keys relative to
    the file's `model` dict, in upstream's registration order (down, up, encoder, decoder, quantizer).

    Only quantizer / decoder / up feed `decode`; encoder and down are the quantize path (declared extras
    of the loader, modules/enhanced_codec.py)."""
    h, k = sc.hidden_size, ENHANCED_CODEC_RESAMPLE_KERNEL
    layout: Layout = {}
    _put(layout, "down", _conv(h, h, k))
    _put(layout, "up", _conv(h, h, k))
    for side in ("encoder", "decoder"):
        _put(layout, f"{side}.0", _vocos_backbone(h, sc.vocos_dim, sc.vocos_intermediate_dim, sc.vocos_num_layers))
        _put(layout, f"{side}.1", _linear(h, sc.vocos_dim))
    q = "quantizer.quantizers.0"  # num_quantizers = 1 (upstream default; not in config.yaml)
    _put(layout, f"{q}.in_project", _weight_norm((sc.codebook_dim, h, 1), sc.codebook_dim))
    _put(layout, f"{q}.out_project", _weight_norm((h, sc.codebook_dim, 1), h))
    _put(layout, f"{q}.codebook", _embedding(sc.codebook_size, sc.codebook_dim))
    return layout
