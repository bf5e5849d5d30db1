"""Independent members (seeds) stacked along a leading dimension.

Every tensor the engine holds has a leading *member* dimension ``M`` (``M = 1`` for one seed).
Functions that describe one member (an inner objective, an outer loss) are written for a single
member's shapes; :func:`per_member` maps them over the stack. For ``M = 1`` the leading dimension is
indexed away instead of calling ``vmap``, so a single run pays nothing for the abstraction.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_map


def _in_dims(tree: Any) -> Any:
    return tree_map(lambda leaf: 0 if isinstance(leaf, Tensor) else None, tree)


def per_member(fn: Callable[..., Any], num_members: int) -> Callable[..., Any]:
    """Return ``fn`` mapped over the leading member dimension of every tensor argument.

    ``fn`` sees one member's tensors (leading dimension removed); its tensor outputs come back
    with the member dimension in front. Non-tensor arguments are passed unchanged.
    """
    if num_members == 1:

        def single(*args: Any) -> Any:
            # squeeze, not t[0]: its backward is a view, where select_backward allocates and copies
            squeezed = tree_map(lambda t: t.squeeze(0) if isinstance(t, Tensor) else t, args)
            out = fn(*squeezed)
            return tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, out)

        return single

    def mapped(*args: Any) -> Any:
        return torch.func.vmap(fn, in_dims=_in_dims(args), randomness="error")(*args)

    return mapped


def stack_members(trees: list[Any]) -> Any:
    """Stack per-member trees (same structure) into one tree with a leading member dimension.

    Non-tensor leaves (step counters) must agree across members and are kept as they are.
    """

    def stack(*leaves: Any) -> Any:
        if isinstance(leaves[0], Tensor):
            return torch.stack(leaves)
        if any(leaf != leaves[0] for leaf in leaves[1:]):
            raise ValueError(f"members disagree on a non-tensor value: {leaves}")
        return leaves[0]

    return tree_map(stack, trees[0], *trees[1:])


def member(tree: Any, index: int, copy: bool = False) -> Any:
    """The ``index``-th member's slice of a stacked tree (views unless ``copy``)."""
    return tree_map(lambda t: (t[index].clone() if copy else t[index]) if isinstance(t, Tensor) else t, tree)
