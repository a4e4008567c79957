"""Step-level batching: requests merged into one U-Net call per step, joining and leaving between steps, each
ending where it would end alone (the oracle: the same request through the one-request pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from difftrt.pipeline import SampleRequest
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config

REQUESTS = [  # (request, scheduler, the step of the first request's run at which it joins)
    (SampleRequest("a red circle on the left", steps=6, guidance=5.0, seed=1), "ddim", 0),
    (SampleRequest("a blue square", negative_prompt="a red circle", steps=4, guidance=7.5, seed=2,
                   num_images=2), "euler-a", 0),  # stochastic: its own generator must stay its own
    (SampleRequest("a green star at the top", steps=5, guidance=1.0, seed=3), "dpm++2m", 2),  # unguided: N rows
    (SampleRequest("a yellow triangle", steps=3, guidance=3.0, seed=4), "heun", 3),  # second order
]


@pytest.fixture(scope="module")
def pipe_and_config(export_dir):
    pipe, artifact = load_pipeline(export_dir)
    return pipe, artifact.scheduler_config


def test_batched_requests_end_where_each_would_alone(pipe_and_config):
    pipe, config = pipe_and_config
    alone = [pipe(req, from_config(config, name)) for req, name, _ in REQUESTS]
    active, finished, rows_seen, tick = [], {}, [], 0
    pending = list(enumerate(REQUESTS))
    while pending or active:
        while pending and pending[0][1][2] <= tick:
            i, (req, name, _) = pending.pop(0)
            active.append((i, pipe.start(req, from_config(config, name))))
        rows_seen.append(pipe.step([s for _, s in active]))
        for i, state in [a for a in active if a[1].done]:
            finished[i] = pipe.finish(state)
        active = [a for a in active if not a[1].done]
        tick += 1
    assert max(rows_seen) == 2 + 4 + 1 + 2  # at tick 3 all four share one call
    for i, want in enumerate(alone):
        np.testing.assert_array_equal(finished[i].latents, want.latents)  # ORT's CPU kernels: batch-invariant
        np.testing.assert_array_equal(finished[i].images, want.images)


def test_states_of_different_sizes_do_not_share_a_call(pipe_and_config):
    pipe, config = pipe_and_config
    a = pipe.start(SampleRequest("a red circle", steps=2, height=64, width=64), from_config(config, "ddim"))
    b = pipe.start(SampleRequest("a red circle", steps=2, height=32, width=64), from_config(config, "ddim"))
    with pytest.raises(ValueError, match="different latent shapes"):
        pipe.step([a, b])
