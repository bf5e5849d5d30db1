"""Helper of the stacked-seeds tests: one algorithm trained with its seeds as members of one
computation, and each seed alone, on the same data streams (``MemberSampler`` per seed)."""

from __future__ import annotations

from metaconstraint.rl.buffer import MemberSampler


def train_stacked_and_alone(cls, config, buffer, spec, seeds, iterations, device, batch_size=64):
    """Returns ``(stacked_state, [state of each seed trained alone])`` after ``iterations`` updates."""

    def train(members):
        algorithm = cls(config, spec, len(members), device)
        state = algorithm.init_state(members)
        sampler = MemberSampler(buffer, batch_size, members)
        for iteration in range(1, iterations + 1):
            state, _ = algorithm.update(state, sampler, iteration)
        return state

    return train(list(seeds)), [train([seed]) for seed in seeds]
