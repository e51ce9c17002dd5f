"""`python -m sgl.router [flags]`: the cache-aware load balancer in front of several servers
(SGLang's router flags; see docs/parallel.md)."""

if __name__ == "__main__":
    import sys

    from sgl.runtime.router.launch import main

    sys.exit(main())
