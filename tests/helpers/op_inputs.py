"""Random inputs and shapes of the local attention op tests."""
import random

import torch


def make_inputs(B, C, Cv, T, H, W, dtype=torch.float32, seed=0,
                requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    k = torch.randn(B, T, C, H, W, generator=g, dtype=dtype)
    v = torch.randn(B, T, Cv, H, W, generator=g, dtype=dtype)
    return [x.requires_grad_(requires_grad) for x in (q, k, v)]


def random_shapes(n, seed=1234):
    rnd = random.Random(seed)
    shapes = []
    for _ in range(n):
        window = rnd.choice([1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21])
        shapes.append((rnd.randint(1, 3), rnd.randint(1, 12),
                       rnd.randint(1, 20), rnd.randint(1, 5),
                       rnd.randint(1, 14), rnd.randint(1, 24), window,
                       rnd.randint(1, 3)))
    return shapes


def _ids(shapes):
    return ['B{}C{}Cv{}T{}H{}W{}w{}d{}'.format(*s) for s in shapes]
