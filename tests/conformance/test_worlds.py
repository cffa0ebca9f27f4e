"""The World contract, checked for every built-in world (one file + one registry line each).

What each world must do without its model: draw initial states deterministically and at
the right shape, set factors one by one (``at``) where it can, describe states and their
features in the shapes the experiment reads, and refuse unknown constants. Each world's own
test file checks its numbers (gymnasium, DDIM, exact continuations); this one checks that
they all keep the same promises.
"""

from __future__ import annotations

import pytest
import torch

from attractor.errors import UserError
from attractor.world import WORLDS, World, get_world
from attractor.world.rollout import initial_batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=sorted(WORLDS), scope="module")
def world(request: pytest.FixtureRequest) -> World:
    return get_world(request.param)


def test_the_world_names_itself_and_its_factors(world: World) -> None:
    assert world.name in WORLDS and world.description and world.steps >= 1
    assert world.factors and all(width > 0 for width in world.factors.values())
    assert len(world.axes) == 2 and all(world.axes)
    with pytest.raises(UserError, match="no constant"):
        world.with_constants(no_such_constant=1.0)


def test_initial_states_are_seeded_and_batched(world: World) -> None:
    x = world.initial(6, 1.0, torch.Generator().manual_seed(0))
    assert x.shape[0] == 6 and torch.isfinite(x).all()
    assert torch.equal(x, world.initial(6, 1.0, torch.Generator().manual_seed(0)))
    wider = world.initial(6, 3.0, torch.Generator().manual_seed(1))
    assert wider.shape == x.shape


def test_features_and_projection_of_states(world: World) -> None:
    x = initial_batch(world.initial(5, 1.0, torch.Generator().manual_seed(2)), 2)
    features = world.features(x, world.constants)
    assert world.basin_feature in features or world.goal is not None
    for name, value in features.items():
        assert value.shape == (2, 5), name
    if world.basin_feature in features:
        assert not features[world.basin_feature].is_floating_point()  # categorical
    if world.goal is not None:
        assert world.goal(x, world.constants).dtype == torch.bool
    assert world.project(x).shape == (2, 5, 2)


def test_at_sets_each_factor_alone(world: World) -> None:
    if world.at is None:
        pytest.skip(f"{world.name} cannot set its factors one by one")
    template = world.initial(1, 1.0, torch.Generator().manual_seed(3))
    for factor, width in world.factors.items():
        values = torch.tensor([0.0, width, -width], dtype=torch.float64)
        x = world.at({factor: values})
        assert x.shape == (3, *template.shape[1:]), factor
        assert torch.equal(x, world.at({factor: values}))  # the same states every time
    with pytest.raises(UserError):
        world.at({"no_such_factor": torch.zeros(2)})


def test_describe_renders_one_item_per_state(world: World) -> None:
    if world.describe is None:
        pytest.skip(f"{world.name} does not render states")
    x = world.initial(3, 1.0, torch.Generator().manual_seed(4))
    rendered = world.describe(x)
    assert len(rendered) == 3
    assert all(isinstance(item, str) for item in rendered) or isinstance(rendered, torch.Tensor)


def test_a_world_without_a_model_steps_alone(world: World) -> None:
    if world.task is not None:
        pytest.skip(f"{world.name} needs its model to step")
    x = initial_batch(world.initial(4, 1.0, torch.Generator().manual_seed(5)), 1)
    assert world.step(x, None, 0, world.constants).shape == x.shape
