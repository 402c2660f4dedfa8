"""The optimiser: Adam with step decay, optional clipping and Li et al.'s scale floor.

`make_optimizer(config)` builds it from `config.optim`; `learning_rate(opt_state)` reads the
learning rate the last update used out of its state, so what a run logs is what Adam applied.
Training builds its state with it, and loading a run needs it for the structure of the stored
optimiser state (`checkpoints.abstract_state`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslmd_jax.models import motion_field


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Step decay from `config.optim`: `learning_rate`, times `decay_factor` after `decay_steps`,
  with a linear warm-up from 0 over the first `warmup_steps` (none when 0).

  Adam's first updates move every parameter by about the learning rate whatever its gradient
  (its second-moment estimate is still small; Liu et al. 2020, "On the Variance of the Adaptive
  Learning Rate and Beyond"); the warm-up keeps those steps short.
  """
  o = config.optim
  decay_steps = o.decay_steps or max(1, int(0.75 * o.num_steps))
  decay = optax.piecewise_constant_schedule(o.learning_rate, {decay_steps: o.decay_factor})
  if o.warmup_steps <= 0:
    return decay
  return lambda step: decay(step) * jnp.minimum((step + 1) / o.warmup_steps, 1.0)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with step decay (and optional global-norm clipping) from `config.optim`.

  Adam's learning rate is an injected hyperparameter (`optax.inject_hyperparams`): its state
  holds the rate of the last update, which `learning_rate` reads.
  """
  o = config.optim
  schedule = learning_rate_schedule(config)
  parts = []
  if o.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  # The schedule's value at each update is kept in the state: `learning_rate` reads what Adam used.
  adam = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2"))
  parts.append(adam(learning_rate=schedule, b1=o.b1, b2=o.b2))
  if config.model.pose_net == "motion_field":
    if o.motion_scale_lr_factor != 1.0:
      parts.append(scale_updates_of(motion_field.SCALE_PARAMS, o.motion_scale_lr_factor))
    parts.append(keep_at_least(motion_field.SCALE_PARAMS, motion_field.SCALE_MIN))
  return optax.chain(*parts)


def scale_updates_of(names: tuple[str, ...], factor: float) -> optax.GradientTransformation:
  """Multiplies the updates of the parameters whose (last) name is in `names` by `factor`.

  `make_optimizer` adds it after Adam for Li et al.'s learned rotation and translation scales
  when `optim.motion_scale_lr_factor` is not 1. Adam moves a scalar parameter by about the
  learning rate every step whatever its gradient's size: at 2e-4 that is 2 % of the scales'
  initial 0.01 per step, so a few dozen early steps whose gradient says "less translation" carry
  the translation scale to its floor (docs/unseen_video.md). 0 keeps them at their initial value.

  Args:
    names: parameter names (the last key of their path in the parameter tree).
    factor: the multiplier, >= 0.

  Returns:
    A stateless optax transformation.
  """
  def update_fn(updates, state, params=None):
    del params
    scale = lambda path, u: u * factor if _leaf_name(path) in names else u
    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def keep_at_least(names: tuple[str, ...], minimum: float) -> optax.GradientTransformation:
  """Projects the parameters whose (last) name is in `names` onto `[minimum, ∞)` after updates.

  Placed last in the chain: an update that would take such a parameter below `minimum` is
  replaced by one that lands it on `minimum` (projected gradient descent, like a variable
  constraint); every other update passes unchanged. `make_optimizer` adds it for
  `pose_net='motion_field'`: Li et al.'s learned rotation and translation scales
  (`models.motion_field.constrained_scale`).

  Args:
    names: parameter names (the last key of their path in the parameter tree).
    minimum: the floor.

  Returns:
    A stateless optax transformation whose `update` needs `params`.
  """
  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("keep_at_least needs the parameters: call update(updates, state, params).")

    def project(path, update, param):
      if _leaf_name(path) in names:
        return jnp.maximum(param + update, minimum) - param
      return update

    return jax.tree_util.tree_map_with_path(project, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _leaf_name(path) -> str | None:
  """The last key of a parameter's tree path (its name), or None for a non-dict leaf."""
  return getattr(path[-1], "key", None)


def learning_rate(opt_state) -> jax.Array:
  """The learning rate (float32 scalar) of the last update of an optimiser whose rate is injected
  (`optax.inject_hyperparams`, as in `make_optimizer`), read from its state `opt_state`.

  The step-0 rate for a fresh state; otherwise the rate the last update applied, whatever config
  built the optimiser.

  Raises:
    ValueError: `opt_state` holds no injected `learning_rate`.
  """
  injected = lambda x: isinstance(x, optax.InjectStatefulHyperparamsState)
  for part in jax.tree.leaves(opt_state, is_leaf=injected):
    if injected(part) and "learning_rate" in part.hyperparams:
      return part.hyperparams["learning_rate"]
  raise ValueError("no injected learning_rate in the optimiser state: expected an optimiser "
                   "built with optax.inject_hyperparams, as optim.make_optimizer builds it")
