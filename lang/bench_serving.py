"""`python -m sgl.bench_serving`: see sgl.runtime.bench.serving."""

if __name__ == "__main__":
    from sgl.runtime.bench.serving import main

    main()
