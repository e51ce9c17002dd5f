"""Triton kernels, one op per module, each with a PyTorch oracle in `reference.py`:
decode_attention, extend_attention, fused_moe, kv_store, rmsnorm, rope, silu_and_mul, token_bitmask (`utils` holds the
dispatch switch `use_triton`). Importing this package imports neither torch nor triton."""
