"""`python -m sgl.bench_router`: see sgl.runtime.bench.router."""

if __name__ == "__main__":
    from sgl.runtime.bench.router import main

    main()
