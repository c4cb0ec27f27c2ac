"""GaLore's projection, kept at the size it needs.

galore-torch 1.0 takes its projection as a slice of the SVD's U or Vh (`U[:, :rank]`), and a slice keeps
the whole min(m, n) x min(m, n) matrix alive: a d=512 model holds 1 MiB per projected matrix whatever
the rank, and saves it in every checkpoint. `CompactProjector` keeps a copy of the slice instead; its
projections are the same numbers.
"""

from __future__ import annotations

import torch
from galore_torch.galore_projector import GaLoreProjector


class CompactProjector(GaLoreProjector):
    def get_orthogonal_matrix(self, weights, rank, type):
        matrix = super().get_orthogonal_matrix(weights, rank, type)
        # clone, not contiguous: the first rows of Vh are already contiguous and still share its storage.
        return [m.clone() for m in matrix] if isinstance(matrix, list) else matrix.clone()


def use_compact_projectors(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Give each projected parameter a `CompactProjector` before GaLore would make its own on the first step."""
    for group in optimizer.param_groups:
        if "rank" in group:
            for parameter in group["params"]:
                optimizer.state[parameter]["projector"] = CompactProjector(
                    group["rank"],
                    update_proj_gap=group["update_proj_gap"],
                    scale=group["scale"],
                    proj_type=group["proj_type"],
                )
    return optimizer
