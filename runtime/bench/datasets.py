"""Benchmark datasets made locally (no downloads): random token prompts and generated shared prefixes."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from typing import List


@dataclass
class BenchRequest:
    input_ids: List[int]
    output_len: int
    group: int = 0


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset-name", default="random", choices=["random", "generated-shared-prefix"])
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--random-input-len", type=int, default=1024)
    parser.add_argument("--random-output-len", type=int, default=1024)
    parser.add_argument("--random-range-ratio", type=float, default=0.0,
                        help="lengths are drawn uniformly from [len * ratio, len]; 1.0 = fixed")
    parser.add_argument("--gsp-num-groups", type=int, default=64)
    parser.add_argument("--gsp-prompts-per-group", type=int, default=16)
    parser.add_argument("--gsp-system-prompt-len", type=int, default=2048)
    parser.add_argument("--gsp-question-len", type=int, default=128)
    parser.add_argument("--gsp-output-len", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)


def _ids(rng: random.Random, n: int, vocab_size: int) -> List[int]:
    # Skip the first ids, where special tokens usually live.
    return [rng.randrange(100, vocab_size) for _ in range(n)]


def _len(rng: random.Random, full: int, ratio: float) -> int:
    lo = max(int(full * ratio), 1)
    return rng.randint(lo, max(full, lo))


def random_requests(num: int, input_len: int, output_len: int, ratio: float, vocab_size: int, seed: int = 1) -> List[BenchRequest]:
    rng = random.Random(seed)
    return [
        BenchRequest(_ids(rng, _len(rng, input_len, ratio), vocab_size), _len(rng, output_len, ratio))
        for _ in range(num)
    ]


def shared_prefix_requests(groups: int, per_group: int, system_len: int, question_len: int, output_len: int,
                           vocab_size: int, seed: int = 1) -> List[BenchRequest]:
    """`groups` system prompts, each followed by `per_group` different questions; shuffled."""
    rng = random.Random(seed)
    reqs = []
    for g in range(groups):
        system = _ids(rng, system_len, vocab_size)
        reqs += [BenchRequest(system + _ids(rng, question_len, vocab_size), output_len, g) for _ in range(per_group)]
    rng.shuffle(reqs)
    return reqs


def make_requests(args: argparse.Namespace, vocab_size: int) -> List[BenchRequest]:
    if args.dataset_name == "random":
        return random_requests(args.num_prompts, args.random_input_len, args.random_output_len,
                               args.random_range_ratio, vocab_size, args.seed)
    return shared_prefix_requests(args.gsp_num_groups, args.gsp_prompts_per_group, args.gsp_system_prompt_len,
                                  args.gsp_question_len, args.gsp_output_len, vocab_size, args.seed)
