import torch

from dsv32.config import preset


def tiny_config():
    # 16 indexer heads instead of 4: with 4, ReLU zeroes every head of a key often enough (1/16) that
    # index scores tie at exactly 0, and which tied key a top-k keeps depends on the tensor shape.
    # Exact engine-vs-forward comparisons need a selection without ties.
    return preset("tiny").replace(index_n_heads=16)


def random_prompts(config, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, config.vocab_size, (n,), generator=g).tolist() for n in lengths]
