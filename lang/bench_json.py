"""`python -m sgl.bench_json`: see sgl.runtime.bench.json_decode."""

if __name__ == "__main__":
    from sgl.runtime.bench.json_decode import main

    main()
