"""The family-agnostic training loop, its optimisers and the distributed (torchrun/DDP) glue."""
