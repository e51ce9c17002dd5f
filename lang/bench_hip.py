"""`python -m sgl.bench_hip`: see sgl.runtime.bench.hip."""

if __name__ == "__main__":
    from sgl.runtime.bench.hip import main

    main()
