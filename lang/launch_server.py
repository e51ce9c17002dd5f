"""`python -m sgl.launch_server [flags]`: the HTTP server (SGLang's flags; see docs/server.md)."""

if __name__ == "__main__":
    import sys

    from sgl.runtime.server.launch import main

    sys.exit(main())
