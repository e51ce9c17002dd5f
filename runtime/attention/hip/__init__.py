"""HiP attention (docs/hip.md): the `hip` backend, its configuration and mask pipeline."""
