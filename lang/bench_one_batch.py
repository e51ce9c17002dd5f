"""`python -m sgl.bench_one_batch`: see sgl.runtime.bench.one_batch."""

if __name__ == "__main__":
    from sgl.runtime.bench.one_batch import main

    main()
