"""Tensor parallelism over torch.distributed: the TP group, how weights are split, and the batch plans rank 0 broadcasts."""
