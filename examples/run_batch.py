"""run_batch: run one program over many inputs on a thread pool, with a tqdm progress bar.
Results keep the input order; the shared few-shot prefix is cached once up front.

Usage:
    python examples/run_batch.py [--backend-url URL | --engine] [--num 8] [--generator]
"""

import sgl
from example_backend import backend_from_args, parser_with_backend_args

COUNTRIES = ["Japan", "Kenya", "Peru", "Norway", "Egypt", "Canada", "India", "Chile", "Spain", "Ghana"]


@sgl.function
def capital(s, country):
    s += "Q: What is the capital of France?\nA: Paris\n"
    s += "Q: What is the capital of Italy?\nA: Rome\n"
    s += "Q: What is the capital of " + country + "?\nA:" + sgl.gen("answer", stop="\n", max_tokens=8)


def main() -> None:
    parser = parser_with_backend_args(__doc__)
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--generator", action="store_true", help="yield results as they finish (in order)")
    args = parser.parse_args()
    countries = (COUNTRIES * (args.num // len(COUNTRIES) + 1))[: args.num]
    with backend_from_args(args):
        states = capital.run_batch([{"country": c} for c in countries], temperature=0, progress_bar=True,
                                   generator_style=args.generator)
        for country, state in zip(countries, states):
            meta = state.get_meta_info("answer")
            print(f"{country:8s} ->{state['answer']!s:20s} cached_tokens={meta.get('cached_tokens')}")


if __name__ == "__main__":
    main()
