"""Feature extractors (torsos): MLP, Nature CNN, IMPALA CNN. Every hidden activation is sown under
``intermediates`` with the name of its ``UnitGroup`` so metrics and ReDo see the same units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
from flax import linen as nn

from plasticine_jax.errors import ConfigError
from plasticine_jax.nets.activations import get_activation
from plasticine_jax.nets.initializers import kernel_and_bias
from plasticine_jax.nets.pooling import max_pool
from plasticine_jax.nets.seed_conv import seed_conv
from plasticine_jax.nets.structure import ParamRef, UnitGroup

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class NetConfig:
    """Architecture options. ``widths``: MLP hidden widths, or the final Dense width(s) of a CNN."""

    torso: str = "mlp"  # mlp | nature_cnn | impala_cnn
    widths: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    layer_norm: bool = False  # LayerNorm before every hidden nonlinearity (ln, nap)
    ln_eps: float = 1e-5  # torch default (flax's is 1e-6)
    shared: bool = False  # one torso for actor and critic (Procgen) or two towers (Craftax, CartPole)
    init: str = "orthogonal"  # torso init: orthogonal (gain sqrt 2) | torch (nn.Linear default) | lecun (flax)
    policy_gain: float = 0.01
    value_gain: float = 1.0
    channels: tuple[int, ...] = (16, 32, 32)  # IMPALA ConvSequence channels
    injection: bool = False  # pre-allocated plasticity-injection heads
    head_init: str = "orthogonal"  # heads: orthogonal with their gain (layer_init) | torch | lecun


def _dense(features: int, init: str, gain: float, fan_in: int, name: str) -> nn.Dense:
    k, b = kernel_and_bias(init, gain, fan_in)
    return nn.Dense(features, kernel_init=k, bias_init=b, name=name)


def _conv(features: int, kernel: int, stride: int, padding, init: str, fan_in: int, name: str) -> nn.Conv:
    k, b = kernel_and_bias(init, SQRT2, fan_in)
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=padding, kernel_init=k, bias_init=b,
                   conv_general_dilated=seed_conv, name=name)


def _check_image(x, torso: str) -> None:
    """CNN torsos take batched images [B, H, W, C]; anything else is a config error, not a shape traceback."""
    if x.ndim != 4:
        raise ConfigError(f"--net.torso {torso} needs image observations [H, W, C]; this env's observations have "
                          f"shape {tuple(x.shape[1:])}: use --net.torso mlp or an image env")


def _normalise_activate(module: nn.Module, x, ln_name: str, act_name: str):
    """[LayerNorm] -> activation -> sow, the tail of every hidden layer."""
    act, _ = get_activation(module.cfg.activation)
    if module.cfg.layer_norm:
        x = nn.LayerNorm(epsilon=module.cfg.ln_eps, name=ln_name)(x)
    x = act(x)
    module.sow("intermediates", act_name, x)
    return x


class MLPTorso(nn.Module):
    """Dense -> [LayerNorm] -> act, per hidden width. Units: ``act_i``."""

    cfg: NetConfig

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, w in enumerate(self.cfg.widths):
            x = _dense(w, self.cfg.init, SQRT2, x.shape[-1], f"dense_{i}")(x)
            x = _normalise_activate(self, x, f"ln_{i}", f"act_{i}")
        return x


def mlp_structure(cfg: NetConfig, prefix: tuple[str, ...]) -> list[UnitGroup]:
    _, copies = get_activation(cfg.activation)
    groups = []
    for i, w in enumerate(cfg.widths):
        prod = [ParamRef((*prefix, f"dense_{i}", "kernel"), 1), ParamRef((*prefix, f"dense_{i}", "bias"), 0)]
        if cfg.layer_norm:
            prod += [ParamRef((*prefix, f"ln_{i}", "scale"), 0, reset_value=1.0),
                     ParamRef((*prefix, f"ln_{i}", "bias"), 0, reset_value=0.0)]
        cons = []
        if i + 1 < len(cfg.widths):
            cons = [ParamRef((*prefix, f"dense_{i + 1}", "kernel"), 0)]
        groups.append(UnitGroup(f"act_{i}", w, copies, cfg.activation, tuple(prod), tuple(cons)))
    return groups


class NatureCNN(nn.Module):
    """Nature-DQN CNN (conv 32x8s4, 64x4s2, 64x3s1, dense 512); obs in [0, 255] are scaled by 1/255."""

    cfg: NetConfig

    @nn.compact
    def __call__(self, x):
        _check_image(x, "nature_cnn")
        x = x.astype(jnp.float32) / 255.0
        specs = [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
        for i, (c, k, s) in enumerate(specs):
            x = _conv(c, k, s, "VALID", self.cfg.init, x.shape[-1] * k * k, f"conv_{i}")(x)
            x = _normalise_activate(self, x, f"ln_{i}", f"act_{i}")
        x = x.reshape(x.shape[0], -1)
        for j, w in enumerate(self.cfg.widths):
            i = len(specs) + j
            x = _dense(w, self.cfg.init, SQRT2, x.shape[-1], f"dense_{j}")(x)
            x = _normalise_activate(self, x, f"ln_{i}", f"act_{i}")
        return x


def nature_structure(cfg: NetConfig, prefix: tuple[str, ...]) -> list[UnitGroup]:
    _, copies = get_activation(cfg.activation)
    convs = [f"conv_{i}" for i in range(3)] + [f"dense_{j}" for j in range(len(cfg.widths))]
    widths = [32, 64, 64, *cfg.widths]
    groups = []
    for i, (layer, w) in enumerate(zip(convs, widths, strict=True)):
        is_conv = layer.startswith("conv")
        prod = [ParamRef((*prefix, layer, "kernel"), 3 if is_conv else 1), ParamRef((*prefix, layer, "bias"), 0)]
        if cfg.layer_norm:
            prod += [ParamRef((*prefix, f"ln_{i}", "scale"), 0, reset_value=1.0),
                     ParamRef((*prefix, f"ln_{i}", "bias"), 0, reset_value=0.0)]
        cons = []
        if i + 1 < len(convs):
            nxt = convs[i + 1]
            if nxt.startswith("conv"):
                cons = [ParamRef((*prefix, nxt, "kernel"), 2)]
            else:  # conv -> flatten -> dense (flatten only after the last conv)
                cons = [ParamRef((*prefix, nxt, "kernel"), 0, flatten=is_conv)]
        groups.append(UnitGroup(f"act_{i}", w, copies, cfg.activation, tuple(prod), tuple(cons)))
    return groups


def _max_pool_3x3_s2(x):
    """MaxPool(k=3, s=2, pad=1) as torch's (padding with -inf)."""
    return max_pool(x, 3, 2, 1)


class ImpalaCNN(nn.Module):
    """IMPALA CNN (Espeholt et al.): per channel count, conv3x3 -> maxpool -> 2 pre-activation ResBlocks;
    then act -> flatten -> dense -> act. Residual-stream activations are measured but not recyclable."""

    cfg: NetConfig

    @nn.compact
    def __call__(self, x):
        _check_image(x, "impala_cnn")
        act, copies = get_activation(self.cfg.activation)
        x = x.astype(jnp.float32) / 255.0
        for s, c in enumerate(self.cfg.channels):
            x = _conv(c, 3, 1, ((1, 1), (1, 1)), self.cfg.init, x.shape[-1] * 9, f"seq{s}_conv")(x)
            x = _max_pool_3x3_s2(x)
            for r in range(2):
                p = f"seq{s}_res{r}"
                h = _normalise_activate(self, x, f"{p}_ln0", f"{p}_act0")
                h = _conv(c, 3, 1, ((1, 1), (1, 1)), self.cfg.init, h.shape[-1] * 9, f"{p}_conv0")(h)
                h = _normalise_activate(self, h, f"{p}_ln1", f"{p}_act1")
                h = _conv(c, 3, 1, ((1, 1), (1, 1)), self.cfg.init, h.shape[-1] * 9, f"{p}_conv1")(h)
                x = x + h
        x = act(x)
        self.sow("intermediates", "stream_act", x)
        x = x.reshape(x.shape[0], -1)
        for j, w in enumerate(self.cfg.widths):
            x = _dense(w, self.cfg.init, SQRT2, x.shape[-1], f"dense_{j}")(x)
            x = _normalise_activate(self, x, f"dense_{j}_ln", f"dense_{j}_act")
        return x


def impala_structure(cfg: NetConfig, prefix: tuple[str, ...]) -> list[UnitGroup]:
    _, copies = get_activation(cfg.activation)
    a = cfg.activation
    groups: list[UnitGroup] = []
    for s, c in enumerate(cfg.channels):
        for r in range(2):
            p = f"seq{s}_res{r}"
            groups.append(UnitGroup(f"{p}_act0", c, copies, a, (), (ParamRef((*prefix, f"{p}_conv0", "kernel"), 2),),
                                    recyclable=False))
            prod = [ParamRef((*prefix, f"{p}_conv0", "kernel"), 3), ParamRef((*prefix, f"{p}_conv0", "bias"), 0)]
            if cfg.layer_norm:
                prod += [ParamRef((*prefix, f"{p}_ln1", "scale"), 0, reset_value=1.0),
                         ParamRef((*prefix, f"{p}_ln1", "bias"), 0, reset_value=0.0)]
            groups.append(UnitGroup(f"{p}_act1", c, copies, a, tuple(prod),
                                    (ParamRef((*prefix, f"{p}_conv1", "kernel"), 2),)))
    groups.append(UnitGroup("stream_act", cfg.channels[-1], copies, a, (),
                            (ParamRef((*prefix, "dense_0", "kernel"), 0, flatten=True),), recyclable=False))
    for j, w in enumerate(cfg.widths):
        prod = [ParamRef((*prefix, f"dense_{j}", "kernel"), 1), ParamRef((*prefix, f"dense_{j}", "bias"), 0)]
        if cfg.layer_norm:
            prod += [ParamRef((*prefix, f"dense_{j}_ln", "scale"), 0, reset_value=1.0),
                     ParamRef((*prefix, f"dense_{j}_ln", "bias"), 0, reset_value=0.0)]
        cons = (ParamRef((*prefix, f"dense_{j + 1}", "kernel"), 0),) if j + 1 < len(cfg.widths) else ()
        groups.append(UnitGroup(f"dense_{j}_act", w, copies, a, tuple(prod), cons))
    return groups


TORSOS = {"mlp": (MLPTorso, mlp_structure), "nature_cnn": (NatureCNN, nature_structure),
          "impala_cnn": (ImpalaCNN, impala_structure)}


