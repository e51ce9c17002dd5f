"""`python -m sgl.bench_serving`: see sgl.runtime.bench_serving."""

if __name__ == "__main__":
    from sgl.runtime.bench_serving import main

    main()
