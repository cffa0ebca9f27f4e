"""``lm-continuation``: a causal LM continues a prompt and its perturbations.

Do continuations from nearby prompts converge or diverge with length? Every member
continues the unperturbed prompt (the *reference*) and each perturbed prompt for
``steps`` tokens, greedily by default; the outcome is how far the perturbed continuation's
next-token distributions are from the reference's, position by position.

Tokens. The tokenizer is the ``tiny-lm`` task's own: UTF-8 bytes (``vocab`` 256). A prompt
is read after a *lead-in* (default eight newlines, a paragraph break of the built-in
corpus): ``tokens = lead_in + prompt``, ``L0`` tokens in all.

A model attractor did not train. ``World.for_model(model)`` re-makes the world for a causal
LM loaded from a local Hugging Face directory (:class:`~attractor.tasks.lm_models.
LanguageModel`): prompt and lead-in are encoded by *its* tokenizer, substitutes and prefix
noise are its tokens that decode to printable ASCII (no special tokens), the vocabulary is
its logits' width and the context its position count (or the ``context`` option, if
smaller). :class:`LanguagePolicy` makes such models (one per member: a seed family) a
policy. A directory written by ``attractor lm-export`` (byte tokenizer) gives the same
world, and the same numbers, as the run member it was exported from.

State. One float64 tensor ``[m, s, L, 5]`` whose length ``L`` grows by one per step
(token ids are exact in float64), channels (:data:`CHANNELS`):

* ``TOKEN``: the sequence (perturbed prompt, then its continuation);
* ``REFERENCE``: the unperturbed prompt and *the same member's* continuation of it;
* ``JS``: at a generated position ``p``, the Jensen-Shannon divergence (nats) between the
  member's next-token distributions (``softmax`` of the logits, temperature 1) that
  produced ``TOKEN[p]`` and ``REFERENCE[p]``; 0 in the prompt;
* ``SEED``: the sequence's sampling seed (the same at every position);
* ``GENERATED``: 1 at generated positions, 0 in the prompt.

Why the reference and the divergences ride in the state: ``features(x_T, constants)`` gets
no policy, so it cannot run the model again; the step, which has the policy, runs the
reference alongside (once per member when every state carries the same reference) and
records the divergence of the very distributions it decoded from. Carrying the reference
in every state (rather than making initial state 0 the unperturbed prompt) keeps states
independent: any subset or chunking of them is still measurable, and no state is a
trivially "same" outcome in the basin counts. :func:`recompute_divergence` re-derives the
same numbers from the final token ids with one forward pass (a check of the carried ones).

Decoding. Greedy (``argmax``) at ``temperature`` 0, the default; otherwise sampling from
``softmax(logits / temperature)`` by the Gumbel-max trick with noise drawn from a CPU
generator seeded by ``(seed, position)`` (then moved to the states' device, so every device
meets the same noise). The noise depends on the state's seed, not on the member, so members
face the same random numbers, and a state whose seed is the nominal one samples with the
reference's noise: sampling alone changes nothing, "seed" is a factor.
``temperature`` is a world constant (structural stability may perturb it).

Perturbations (``initial(n, scale, generator)``), the factors named in ``perturb``; each
count is ``scale * width`` rounded stochastically (floor, plus one with probability the
fractional part) so that its mean is proportional to the scale:

* ``substitution`` (width 1): that many tokens among the prompt's last ``window`` tokens
  (distinct positions) replaced by a different printable ASCII byte (a typo);
* ``prefix`` (width 4): that many random printable ASCII bytes right before the prompt,
  overwriting the lead-in's last tokens, so every state keeps length ``L0`` (a causal LM with
  absolute positions would otherwise see every token shifted); at most ``len(lead_in)``;
* ``seed`` (only when sampling; on at any scale > 0): a fresh sampling seed.

The model's context: the policy sees at most the last ``context`` tokens (the tiny-lm
task's context length), so continuations longer than the context slide. There is no
key-value cache: each step runs the model over the whole (windowed) sequence, the states
and one reference row per member in one policy call (``EnsemblePolicy`` vmaps the tiny-lm
members); 4 default-size tiny-lm members x 65 rows x 32 steps took ~30 s on 2 CPU cores.

Basin maps (``at``): a factor's value ``v`` sets ``round(|v|)`` substitutions or prefix
tokens (at most ``window`` / the lead-in's length) at positions and with tokens drawn from a
generator seeded by the cell, so a map is the same on every run. ``describe`` renders a
final state as text: the perturbed prompt's last tokens, then the continuation.

Features (``[m, s]`` each, over the ``steps`` generated positions): ``js_first`` /
``js_last`` the mean JS over the first / last quarter of positions, ``js_mean`` over all;
``converges`` (categorical) 1 if ``js_last < js_first`` or ``js_last`` is 0 (the ends
agree), else 0; ``same_text`` (categorical, the basin) 1 if the continuation is the
reference's token for token. There is no goal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from attractor.errors import UserError
from attractor.measure.divergence import js, log_probs
from attractor.tasks.lm_models import ByteTokenizer
from attractor.world.base import Constants, Policy, World

if TYPE_CHECKING:
    from attractor.tasks.lm_models import LanguageModel, Tokenizer

SUMMARY = (
    "a causal LM continues a prompt and its perturbations (substitutions, prefix noise, "
    "sampling seeds): do continuations converge or diverge with length?"
)

#: A fixed sentence of the built-in corpus (``pydoc_data.topics["assignment"]``).
DEFAULT_PROMPT = "Assignment statements are used to (re)bind names to values and to"
#: Channels of the state's last dimension.
TOKEN, REFERENCE, JS, SEED, GENERATED = range(5)
CHANNELS = ("token", "reference", "js", "seed", "generated")
#: Factor -> count at perturbation scale 1 (``seed`` is on/off).
WIDTHS = {"substitution": 1.0, "prefix": 4.0, "seed": 1.0}
# Printable ASCII: substitutes and prefix noise look like typos, not invalid UTF-8.
_PRINTABLE = range(32, 127)
# Divergences within this many nats of each other (or of 0) are equal (round-off).
_TOL = 1e-9
# (seed, position) -> one generator seed; injective for positions below this.
_POSITIONS = 1_000_003


# ---- options -------------------------------------------------------------------------


def _fail(message: str) -> UserError:
    return UserError(f"world 'lm-continuation': {message}")


def encode(text: str, vocab: int, what: str) -> list[int]:
    """UTF-8 byte ids of ``text``, each below ``vocab``; one-line :class:`UserError` otherwise."""
    try:
        ids = list(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _fail(f"{what} has a character UTF-8 cannot encode ({exc.reason})") from None
    outside = sorted({chr(i) if i < 128 else f"byte {i}" for i in ids if i >= vocab})
    if outside:
        raise _fail(
            f"{what} has characters outside the vocabulary of {vocab} byte tokens: "
            f"{', '.join(repr(c) for c in outside[:5])}"
        )
    return ids


def _perturbed(perturb: Sequence[str] | None, temperature: float, lead_in: int) -> list[str]:
    """The factors ``initial`` perturbs, checked: default all that apply."""
    if perturb is None:
        return [
            f for f in WIDTHS if (f != "seed" or temperature > 0) and (f != "prefix" or lead_in > 0)
        ]
    names = list(perturb)
    unknown = sorted(set(names) - set(WIDTHS))
    if unknown:
        raise _fail(f"unknown factor {unknown[0]!r} in perturb; factors: {', '.join(WIDTHS)}")
    if "seed" in names and temperature <= 0:
        raise _fail("factor 'seed' needs sampling: set temperature > 0 (greedy ignores seeds)")
    if "prefix" in names and lead_in == 0:
        raise _fail("factor 'prefix' needs a non-empty lead_in to overwrite")
    return sorted(set(names), key=list(WIDTHS).index)


# ---- initial states ------------------------------------------------------------------


def _alphabet(vocab: int) -> Tensor:
    """Token ids substitutes are drawn from: printable ASCII below ``vocab`` (else all)."""
    ids = [i for i in _PRINTABLE if i < vocab]
    return torch.tensor(ids if len(ids) >= 2 else list(range(vocab)), dtype=torch.int64)


def _printable_tokens(tokenizer: Tokenizer, vocab: int) -> Tensor:
    """A tokenizer's ids below ``vocab`` that decode to printable ASCII text, special tokens
    excluded: the substitutes and prefix noise of a model directory's world.
    """
    inner = getattr(tokenizer, "tokenizer", None)  # the Hugging Face one behind HFTokenizer
    special = set(getattr(inner, "all_special_ids", None) or [])
    size = min(vocab, len(inner)) if inner is not None else vocab
    ids = [i for i in range(size) if i not in special]
    texts = (
        inner.batch_decode([[i] for i in ids])
        if inner is not None
        else [tokenizer.decode([i]) for i in ids]
    )
    keep = [i for i, t in zip(ids, texts, strict=True) if t and t.isascii() and t.isprintable()]
    if len(keep) < 2:
        raise _fail(
            "the model's tokenizer has fewer than 2 tokens that decode to printable text, so "
            'prompts cannot be perturbed; use perturb = ["seed"] with temperature > 0'
        )
    return torch.tensor(keep, dtype=torch.int64)


@dataclass(frozen=True)
class _Text:
    """How text becomes the model's tokens and back: UTF-8 bytes (tiny-lm) or a tokenizer."""

    encode: Callable[[str, str], list[int]]  # (text, what) -> ids, one line if outside vocab
    decode: Callable[[list[int]], str]
    alphabet: Callable[[], Tensor]  # substitutes and prefix noise (built only if needed)
    name: str


def _byte_text(vocab: int) -> _Text:
    return _Text(
        encode=lambda text, what: encode(text, vocab, what),
        decode=lambda ids: bytes(ids).decode("utf-8", errors="replace"),
        alphabet=lambda: _alphabet(vocab),
        name="bytes",
    )


def _tokenizer_text(tokenizer: Tokenizer, vocab: int) -> _Text:
    def encode_text(text: str, what: str) -> list[int]:
        ids = [int(i) for i in tokenizer.encode(text)]
        if any(not 0 <= i < vocab for i in ids):
            raise _fail(f"{what} has token ids outside the model's {vocab} logits")
        return ids

    return _Text(
        encode=encode_text,
        decode=lambda ids: str(tokenizer.decode(ids)),
        alphabet=lambda: _printable_tokens(tokenizer, vocab),
        name=tokenizer.fingerprint,
    )


def _counts(n: int, mean: float, cap: int, generator: torch.Generator) -> Tensor:
    """``[n]`` counts with mean ``mean`` (stochastic rounding), at most ``cap``."""
    low = math.floor(mean)
    extra = torch.rand(n, generator=generator, dtype=torch.float64) < mean - low
    return (low + extra.long()).clamp(max=cap)


def _chosen(counts: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``bool [n, k]``: ``counts[i]`` distinct random positions of row ``i``."""
    keys = torch.rand(len(counts), k, generator=generator, dtype=torch.float64)
    ranks = keys.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


def _substitutes(original: Tensor, alphabet: Tensor, generator: torch.Generator) -> Tensor:
    """A token of ``alphabet`` other than ``original`` (elementwise), uniformly."""
    size = len(alphabet)
    j = torch.randint(0, size - 1, original.shape, generator=generator)
    # Index of the original in the alphabet (size if absent): skipping it keeps draws uniform.
    match = original[..., None] == alphabet
    where = torch.where(match.any(-1), match.long().argmax(-1), torch.full_like(original, size))
    return alphabet[j + (j >= where).long()]


def _state(tokens: Tensor, reference: Tensor, seeds: Tensor) -> Tensor:
    """Initial states ``[n, L0, 5]``: prompts ``[n, L0]``, the reference ``[L0]``, seeds ``[n]``."""
    n, length = tokens.shape
    x = torch.zeros(n, length, len(CHANNELS), dtype=torch.float64)
    x[..., TOKEN] = tokens.double()
    x[..., REFERENCE] = reference.double()
    x[..., SEED] = seeds.double()[:, None]
    return x


# ---- one step ------------------------------------------------------------------------


def _next_logits(policy: Policy, tokens: Tensor, context: int, vocab: int) -> Tensor:
    """Next-token logits ``[m, r, V]`` of token ids ``[m, r, L]`` (last ``context`` tokens)."""
    out = policy(tokens[..., -context:])
    if out.dim() == tokens.dim() + 1:
        out = out[..., -1, :]  # the policy gave logits at every position
    if out.shape[:2] != tokens.shape[:2] or out.shape[-1] != vocab:
        raise ValueError(
            f"the policy mapped token ids {tuple(tokens.shape)} to {tuple(out.shape)}; "
            f"lm-continuation wants logits [m, s, L, {vocab}] or [m, s, {vocab}]"
        )
    return out


def _gumbel(seeds: Tensor, position: int, vocab: int) -> Tensor:
    """Gumbel noise ``[..., V]`` for seeds ``[...]`` (one generator per distinct seed), on the
    seeds' device.

    Drawn on the CPU with CPU generators and then moved, so a sampled continuation meets the
    same noise on every device.
    """
    seeds_cpu = seeds.cpu()
    noise = torch.empty(*seeds.shape, vocab, dtype=torch.float64)
    for seed in seeds_cpu.unique().tolist():
        gen = torch.Generator().manual_seed(int(seed) * _POSITIONS + position)
        u = torch.rand(vocab, generator=gen, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
        noise[seeds_cpu == seed] = -torch.log(-torch.log(u))
    return noise.to(seeds.device)


def _decode(logp: Tensor, seeds: Tensor, position: int, temperature: float) -> Tensor:
    """Next token ids ``[m, r]`` from log-probabilities ``[m, r, V]`` and seeds ``[m, r]``."""
    if temperature <= 0:
        return logp.argmax(-1)
    # Gumbel-max: argmax(logits / T + G) is a draw from softmax(logits / T).
    return (logp / temperature + _gumbel(seeds, position, logp.shape[-1])).argmax(-1)


# ---- the closed loop ------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    """What ``initial`` and ``step`` need of the options, resolved once by :func:`_build`."""

    nominal: Tensor  # int64 [L0]: lead-in + prompt
    lead: int  # lead-in tokens (prefix noise overwrites their end)
    window: int  # substitutions fall among the prompt's last `window` tokens
    factors: tuple[str, ...]  # perturbed by `initial`
    seed: int  # the reference's sampling seed
    vocab: int
    context: int  # the most tokens the policy sees
    alphabet: Tensor  # int64 [A]: substitutes and prefix noise
    decode: Callable[[list[int]], str]


def _substitute(setup: _Setup, tokens: Tensor, counts: Tensor, generator: torch.Generator) -> None:
    """``counts[i]`` of row ``i``'s last ``window`` tokens replaced, in place."""
    k = setup.window
    tail = tokens[:, -k:]
    new = _substitutes(tail, setup.alphabet, generator)
    tokens[:, -k:] = torch.where(_chosen(counts, k, generator), new, tail)


def _prefix(setup: _Setup, tokens: Tensor, counts: Tensor, generator: torch.Generator) -> None:
    """The last ``counts[i]`` lead-in tokens of row ``i`` (those right before the prompt)
    overwritten with random tokens, in place.
    """
    lead = setup.lead
    draws = torch.randint(0, len(setup.alphabet), (len(tokens), lead), generator=generator)
    near = torch.arange(lead) >= lead - counts[:, None]
    tokens[:, :lead] = torch.where(near, setup.alphabet[draws], tokens[:, :lead])


def _fresh_seeds(setup: _Setup, n: int, generator: torch.Generator) -> Tensor:
    fresh = torch.randint(1, 2**31 - 1, (n,), generator=generator)
    return torch.where(fresh == setup.seed, fresh + 1, fresh)


def _initial(setup: _Setup, n: int, scale: float, generator: torch.Generator) -> Tensor:
    """``[n, L0, 5]``: the prompt with the ``setup.factors`` perturbed at ``scale``."""
    tokens = setup.nominal.repeat(n, 1)
    seeds = torch.full((n,), setup.seed, dtype=torch.int64)
    if "substitution" in setup.factors:
        counts = _counts(n, scale * WIDTHS["substitution"], setup.window, generator)
        _substitute(setup, tokens, counts, generator)
    if "prefix" in setup.factors:
        counts = _counts(n, scale * WIDTHS["prefix"], setup.lead, generator)
        _prefix(setup, tokens, counts, generator)
    if "seed" in setup.factors and scale > 0:
        seeds = _fresh_seeds(setup, n, generator)
    return _state(tokens, setup.nominal, seeds)


def _at(setup: _Setup, values: Mapping[str, Tensor]) -> Tensor:
    """``[n, L0, 5]``: ``round(|v|)`` substitutions / prefix tokens, a fresh seed where
    ``|v| >= 0.5``; positions and tokens from a generator seeded by ``setup.seed``, so the same
    values give the same states on every run.
    """
    unknown = sorted(set(values) - set(setup.factors))
    if unknown:
        perturbed = ", ".join(setup.factors)
        raise _fail(f"factor {unknown[0]!r} is not perturbed; perturbed: {perturbed}")
    n = len(next(iter(values.values())))
    generator = torch.Generator().manual_seed(setup.seed)
    tokens = setup.nominal.repeat(n, 1)
    seeds = torch.full((n,), setup.seed, dtype=torch.int64)

    def count(factor: str, cap: int) -> Tensor:
        return values[factor].double().abs().round().long().clamp(max=cap)

    if "substitution" in values:
        _substitute(setup, tokens, count("substitution", setup.window), generator)
    if "prefix" in values:
        _prefix(setup, tokens, count("prefix", setup.lead), generator)
    if "seed" in values:
        seeds = torch.where(count("seed", 1) > 0, _fresh_seeds(setup, n, generator), seeds)
    return _state(tokens, setup.nominal, seeds)


@torch.no_grad()
def _step(setup: _Setup, x: Tensor, policy: Policy | None, t: int, constants: Constants) -> Tensor:
    """``[m, s, L, 5] -> [m, s, L + 1, 5]``: every sequence and its reference, one token."""
    if policy is None:
        raise ValueError("world 'lm-continuation' needs a policy (a causal LM)")
    m, s, length = x.shape[:3]
    tokens, reference = x[..., TOKEN].long(), x[..., REFERENCE].long()
    # One reference row per member when all states share it (they do, from `initial`).
    refs = reference[:, :1] if bool((reference == reference[:, :1]).all()) else reference
    r = refs.shape[1]
    logits = _next_logits(policy, torch.cat([refs, tokens], 1), setup.context, setup.vocab)
    logp = log_probs(logits)
    ref_logp, seq_logp = logp[:, :r], logp[:, r:]
    temperature = float(constants["temperature"])
    # New tensors on the states' device: the step keeps states where they are.
    nominal_seeds = torch.full((m, r), setup.seed, dtype=torch.int64, device=x.device)
    column = torch.empty(m, s, 1, len(CHANNELS), dtype=torch.float64, device=x.device)
    column[..., 0, TOKEN] = _decode(seq_logp, x[..., 0, SEED].long(), length, temperature)
    column[..., 0, REFERENCE] = _decode(ref_logp, nominal_seeds, length, temperature)
    column[..., 0, JS] = js(seq_logp, ref_logp.expand_as(seq_logp))
    column[..., 0, SEED] = x[..., -1, SEED]
    column[..., 0, GENERATED] = 1.0
    return torch.cat([x, column], dim=2)


# ---- features ------------------------------------------------------------------------


def _generated(x: Tensor) -> Tensor:
    """Indices of the generated positions (the same for every state) ``[G]``."""
    flags = x.reshape(-1, *x.shape[-2:])[0, :, GENERATED] > 0.5
    return flags.nonzero().flatten()


def divergence_by_position(x: Tensor) -> Tensor:
    """JS (nats) between each continuation's and its reference's next-token distributions at
    every generated position: states ``[..., L, 5]`` -> ``float64 [..., steps]`` (``[m, s,
    steps]`` for a rollout's final states; clamped at 0 against round-off).
    """
    return x[..., _generated(x), JS].clamp_min(0.0)


def _features(x: Tensor, constants: Constants) -> dict[str, Tensor]:
    positions = _generated(x)
    d = divergence_by_position(x)
    if len(positions) == 0:  # nothing generated yet: every continuation is the reference's
        zero = torch.zeros(x.shape[:-2], dtype=torch.float64, device=x.device)
        one = torch.ones(x.shape[:-2], dtype=torch.int64, device=x.device)
        return {"js_first": zero, "js_last": zero, "js_mean": zero} | {
            "converges": one,
            "same_text": one,
        }
    quarter = max(1, math.ceil(len(positions) / 4))
    first, last = d[..., :quarter].mean(-1), d[..., -quarter:].mean(-1)
    same = (x[..., positions, TOKEN] == x[..., positions, REFERENCE]).all(-1)
    return {
        "js_first": first,
        "js_last": last,
        "js_mean": d.mean(-1),
        "converges": ((last < first - _TOL) | (last <= _TOL)).long(),
        "same_text": same.long(),
    }


def _project(x: Tensor) -> Tensor:
    """``[..., L, 5] -> [..., 2]``: mean JS and share of tokens unlike the reference's."""
    positions = _generated(x)
    if len(positions) == 0:
        return torch.zeros(*x.shape[:-2], 2, dtype=torch.float64, device=x.device)
    differ = (x[..., positions, TOKEN] != x[..., positions, REFERENCE]).double().mean(-1)
    return torch.stack([divergence_by_position(x).mean(-1), differ], dim=-1)


def continuations(x: Tensor, reference: bool = False) -> list[str]:
    """The generated text of states ``[k, L, 5]`` (or their references), decoded as UTF-8."""
    positions = _generated(x)
    channel = REFERENCE if reference else TOKEN
    rows = x[..., positions, channel].long().reshape(-1, len(positions)).tolist()
    return [bytes(r).decode("utf-8", errors="replace") for r in rows]


def recompute_divergence(policy: Policy, x: Tensor, context: int) -> Tensor:
    """:func:`divergence_by_position` re-derived from the final token ids alone: ``[m, s,
    steps]``.

    The next-token distribution at generated position ``p`` is the policy's output on the
    ``context`` tokens before ``p``; a causal LM gives them all in one forward pass while the
    sequence fits its context, and in one pass per position beyond that. The policy must
    return logits at every position (``[m, s, L, V]``).
    """
    positions = _generated(x).tolist()
    tokens, reference = x[..., TOKEN].long(), x[..., REFERENCE].long()
    s = tokens.shape[1]
    both = torch.cat([tokens, reference], dim=1)  # [m, 2s, L]
    out: list[Tensor] = []
    with torch.no_grad():
        inside = [p for p in positions if p <= context]
        if inside:
            logits = policy(both[..., : min(both.shape[-1], context)])
            out.append(logits[..., [p - 1 for p in inside], :])
        for p in (p for p in positions if p > context):
            out.append(policy(both[..., p - context : p])[..., -1:, :])
    logp = log_probs(torch.cat(out, dim=-2))
    return js(logp[:, :s], logp[:, s:]).clamp_min(0.0)


def _describe(setup: _Setup, x: Tensor) -> list[str]:
    """Final states ``[k, L, 5]`` as text: "…" + the prompt's last ``window`` tokens (as
    perturbed) + " ⟶ " + the continuation.
    """
    positions = _generated(x).tolist()
    start = len(setup.nominal) - setup.window
    rows = x[..., TOKEN].long().reshape(-1, x.shape[-2]).tolist()
    return [
        "…"
        + setup.decode(row[start : len(setup.nominal)])
        + " ⟶ "
        + setup.decode([row[p] for p in positions])
        for row in rows
    ]


class LanguagePolicy:
    """Causal LMs loaded from outside attractor as a policy: member ``i`` is ``modules[i]``
    (``input_ids int64 [b, T] -> logits [b, T, V]``, eval mode) applied to row ``i`` of
    ``inputs [m, r, T]``; gives the last position's logits ``[m, r, V]``.

    Rows go through in chunks of at most ``budget`` logits (``b * T * V``), so a model with a
    large vocabulary does not hold every position's logits of every state at once. Each
    module computes where its parameters are (``LanguageModel.to`` places them): the ids go
    in there and the logits come back to the inputs' device.
    """

    def __init__(self, modules: Sequence[nn.Module], vocab: int, budget: int = 2**24) -> None:
        self.modules = [module.eval() for module in modules]
        self.devices = [_device_of(module) for module in self.modules]
        self.vocab = vocab
        self.budget = budget
        self.members = len(self.modules)

    @torch.no_grad()
    def __call__(self, inputs: Tensor) -> Tensor:
        if inputs.shape[0] != self.members:
            raise ValueError(
                f"inputs have {inputs.shape[0]} member rows, the policy {self.members}"
            )
        rows = max(1, self.budget // (inputs.shape[-1] * self.vocab))
        out = [
            torch.cat([module(chunk.to(device))[:, -1, :] for chunk in ids.split(rows)])
            for module, device, ids in zip(self.modules, self.devices, inputs, strict=True)
        ]
        return torch.stack(out).to(inputs.device)


def _device_of(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its parameters' device (the CPU without parameters)."""
    first = next(module.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def _for_models(given: dict[str, Any], models: Sequence[LanguageModel]) -> tuple[World, Policy]:
    """The world made for ``models`` (loaded from outside attractor, one per member; the
    caller has checked that they share a tokenizer) and the policy of all of them.
    """
    world = _build(given, models[0])
    return world, LanguagePolicy([lm.module for lm in models], models[0].vocab_size)


# ---- the world -----------------------------------------------------------------------


def make(
    prompt: str = DEFAULT_PROMPT,
    steps: int = 32,
    temperature: float = 0.0,
    seed: int = 0,
    window: int = 8,
    lead_in: str = "\n" * 8,
    perturb: Sequence[str] | None = None,
    vocab: int | None = None,
    context: int | None = None,
    task_options: dict[str, Any] | None = None,
) -> World:
    """The ``lm-continuation`` world (see the module docstring for every option's meaning).

    Args:
        prompt: the text to continue (default: a sentence of the built-in corpus).
        steps: tokens generated (the continuation's length).
        temperature: 0 decodes greedily; above 0 samples (a world constant).
        seed: the reference's sampling seed.
        window: substitutions fall among the prompt's last ``window`` tokens.
        lead_in: nominal text before the prompt; prefix noise overwrites its end.
        perturb: factors ``initial`` perturbs (default: substitution, prefix, and seed when
            sampling).
        vocab: byte tokens below this (default 256: all; 128: ASCII); the policy's output
            width. A model directory's own vocabulary replaces it (a different value is
            refused).
        context: the most tokens the policy sees (default 128, the tiny-lm model's context
            length; for a model directory, its own context, capped by this if given).
        task_options: further ``tiny-lm`` options of the model the engine trains.
    """
    options = {
        "prompt": prompt,
        "steps": steps,
        "temperature": temperature,
        "seed": seed,
        "window": window,
        "lead_in": lead_in,
        "perturb": None if perturb is None else list(perturb),
        "vocab": vocab,
        "context": context,
        "task_options": dict(task_options or {}),
    }
    return _build(options, None)


def _build(given: dict[str, Any], model: LanguageModel | None) -> World:
    """The world for the options ``given`` to :func:`make`, for the tiny-lm the engine trains
    (``model`` None) or for ``model``, loaded from a Hugging Face directory.
    """
    o = dict(given)
    steps, temperature, seed, window = o["steps"], o["temperature"], o["seed"], o["window"]
    if steps < 1:
        raise _fail(f"steps must be at least 1, got {steps}")
    if temperature < 0 or not math.isfinite(temperature):
        raise _fail(f"temperature must be 0 (greedy) or positive, got {temperature}")
    if window < 1:
        raise _fail(f"window must be at least 1, got {window}")
    if not 0 <= seed < 2**31:
        raise _fail(f"seed must be in 0..2**31 - 1, got {seed}")
    if not o["prompt"]:
        raise _fail("prompt is empty; give the text to continue")
    if "context" in o["task_options"]:
        raise _fail("set the model's context with the world's option context, not task_options")
    if model is None:
        vocab = 256 if o["vocab"] is None else o["vocab"]
        if not 2 <= vocab <= 256:
            raise _fail(f"vocab must be in 2..256 (byte tokens), got {vocab}")
        context = 128 if o["context"] is None else o["context"]
        text = _byte_text(vocab)
    else:
        vocab = model.vocab_size
        if o["vocab"] is not None and o["vocab"] != vocab:
            raise _fail(
                f"vocab is {o['vocab']} but the model '{model.name}' has {vocab} logits; drop "
                "the vocab option (a model directory brings its own)"
            )
        context = model.context if o["context"] is None else min(o["context"], model.context)
        bytes_model = model.tokenizer.fingerprint == ByteTokenizer.fingerprint
        text = _byte_text(vocab) if bytes_model else _tokenizer_text(model.tokenizer, vocab)
    if context < 2:
        raise _fail(f"context must be at least 2 tokens, got {context}")
    prompt_ids = text.encode(o["prompt"], "prompt")
    lead_ids = text.encode(o["lead_in"], "lead_in") if o["lead_in"] else []
    if not prompt_ids:
        raise _fail("the prompt encodes to no tokens; give the text to continue")
    if len(lead_ids) + len(prompt_ids) >= context:
        raise _fail(
            f"lead_in and prompt are {len(lead_ids) + len(prompt_ids)} tokens, the context "
            f"{context}; shorten them or raise context"
        )
    factors = tuple(_perturbed(o["perturb"], temperature, len(lead_ids)))
    perturbs_tokens = bool({"substitution", "prefix"} & set(factors))
    setup = _Setup(
        nominal=torch.tensor(lead_ids + prompt_ids, dtype=torch.int64),
        lead=len(lead_ids),
        window=min(window, len(prompt_ids)),
        factors=factors,
        seed=seed,
        vocab=vocab,
        context=context,
        alphabet=text.alphabet() if perturbs_tokens else _alphabet(min(vocab, 256)),
        decode=text.decode,
    )
    task = {**o["task_options"], "name": "tiny-lm", "context": context}
    recorded = {**o, "perturb": list(factors), "vocab": vocab, "context": context}
    if model is not None:
        recorded["tokenizer"] = text.name
    return World(
        name="lm-continuation",
        description=SUMMARY,
        factors={f: WIDTHS[f] for f in factors},
        constants={"temperature": float(temperature)},
        steps=steps,
        task=task,
        initial=partial(_initial, setup),
        step=partial(_step, setup),
        features=_features,
        basin_feature="same_text",
        project=_project,
        goal=None,
        at=partial(_at, setup),
        describe=partial(_describe, setup),
        differentiable=False,
        axes=("mean JS to the reference (nats)", "share of tokens unlike the reference's"),
        options=recorded,
        for_model=partial(_for_models, given),
    )


__all__ = [
    "CHANNELS",
    "DEFAULT_PROMPT",
    "GENERATED",
    "JS",
    "REFERENCE",
    "SEED",
    "SUMMARY",
    "TOKEN",
    "LanguagePolicy",
    "continuations",
    "divergence_by_position",
    "encode",
    "make",
    "recompute_divergence",
]
