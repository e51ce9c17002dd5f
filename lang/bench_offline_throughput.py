"""`python -m sgl.bench_offline_throughput`: see sgl.runtime.bench.offline_throughput."""

if __name__ == "__main__":
    from sgl.runtime.bench.offline_throughput import main

    main()
