"""`python -m sgl.bench_json_corpus`: see sgl.runtime.bench.json_corpus."""

if __name__ == "__main__":
    from sgl.runtime.bench.json_corpus import main

    main()
