"""Training health: detecting a collapsed run, and the record of what was done about it.

Self-supervised depth and motion can fall into degenerate solutions from which the
gradients do not lead back: the depth network predicts the same depth at every pixel
(then no camera motion changes the warp's parallax, and the photometric loss is
explained by rotation alone), or the motion network stops predicting any translation
(then no depth changes the warp), or its translation runs away until every pixel warps out of
view (then the photometric loss, a mean over the pixels left in view, is 0), or the depth runs
toward the depth head's maximum while the translation stays put (then the warp is nearly a
rotation, which a young pose network predicts better than its translation, and the photometric
loss falls as the depth rises; `CEILING_DEPTH_FRACTION`). All four are visible in three scalars
of every step, `depth_mean` (the mean predicted depth) and:

  * `depth_spread`: per image std / mean of the predicted depth, batch mean (0 for a
    constant depth; 0.16-0.32 at initialisation and 0.2-1.5 for trained runs in this
    project's runs; collapsed runs logged 0.0 and 4e-8);
  * `translation_to_depth`: the mean norm of the predicted translations divided by the
    mean predicted depth of the target frames: roughly the camera's motion per frame in
    units of the scene's distance (about 0.05 for a car driving 1 m per frame past
    things 20 m away; 0 when the motion network outputs no translation; above 1 when the
    camera would move farther than the scene is deep).

The trainer checks them at every log step and before every checkpoint
(`health_problem`), so every checkpoint holds a healthy state. When a check fails it
restores the newest checkpoint (or the initial state), multiplies the learning rate and the
weights of the terms that a constant depth minimises (edge-aware smoothness and SC-SfMLearner's
geometry consistency) by `config.run.recovery_factor` (after a depth that ran toward the head's
maximum it keeps those weights and switches the auto-mask on instead:
`regulariser_factor_after`, `automask_after_runaway`) and goes on; each such recovery is
appended to `workdir/recoveries.json` (`Recovery`), so a resumed run keeps the reduced values.
These are the causes of a constant depth seen in this project: Adam's first steps driving the
depth head into saturation before the motion network has learnt any translation, and
regularisers that outweigh the photometric term while the motion is still small (SC-SfMLearner
from scratch: its geometry consistency fell from 0.021 to 0.0035 while its depth flattened;
docs/unseen_video.md). A third is a rotation aligned on a depth that has not formed
(`config.loss.refine_rotation`): a collapse after the alignment started sends the run back to a
checkpoint from before it and starts the alignment later (`postponed_alignment_start`).
After `config.run.max_recoveries` recoveries a further failure ends the run with
`TrainingCollapsedError` (exit code `COLLAPSE_EXIT_CODE` from `sslmd train`).

A depth can also flatten slowly, over hundreds of steps, without ever reaching the collapse
threshold: such runs learned no depth (held-out AbsRel no better than a constant depth's) and
ended "Done". So the depth is also judged on the median of its last checks
(`flat_depth_problem`): a run whose last checks show a nearly flat depth ends with
`TrainingCollapsedError` as well, its checkpoints kept; and a recovery does not go back to a
checkpoint saved while the depth was nearly flat (a Monodepth2 run went back to such checkpoints
three times and ended collapsed; docs/unseen_video.md, "A collapse no longer goes back to a
checkpoint whose depth was already flat"). The last checks' `depth_spread` are saved with each
checkpoint, so a run resumed after a kill judges its depth, and its checkpoints, the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslmd_jax.models import depth as depth_models

# Below this `depth_spread` the predicted depth is a constant (module docstring).
DEPTH_COLLAPSE_SPREAD = 0.02
# Below this `translation_to_depth` the motion network predicts no translation next to the depth:
# a hundredth of a slow car's (0.5 m per frame past things 50 m away gives 0.01). Healthy `:tiny`
# runs on unseen clips logged 3e-4 to 3e-2; an SC-SfMLearner run whose depth ran to its maximum
# over part of every image (so the warp became a pure rotation) logged 4e-5 to 6e-5 for its last
# 160 steps and ended with AbsRel 2.9 against a constant depth's 0.64 (docs/unseen_video.md).
TRANSLATION_COLLAPSE_RATIO = 1e-4
# Above this `translation_to_depth` the camera moves farther between two frames than the scene is
# deep: every pixel warps out of view, the photometric loss (a mean over pixels that stay in view)
# has nothing left to compare and falls to 0. A SfMLearner `:tiny` run with the rotation aligned
# in training ran into it within 60 warm-up steps (0.003 at step 20, 2.0 at step 60, 16-22 for
# the rest of the run, photometric 0.0) and ended with a constant depth's AbsRel
# (docs/unseen_video.md); healthy runs log at most a few hundredths.
TRANSLATION_RUNAWAY_RATIO = 1.0
# The depth "ran to the ceiling" when its mean reaches this fraction of the depth head's maximum
# (`depth_ceiling`) while `translation_to_depth` is below `CEILING_TRANSLATION_RATIO`: the depth
# has run away from a motion that stayed put, so the warp is nearly a pure rotation and the
# photometric loss keeps falling as the depth rises. Five runs that failed did this
# (SC-SfMLearner `:tiny` on real KITTI frames: mean depth 20 of 100 at step 40, translation 3e-4
# of it, caught by the constant-depth check only at step 180, after a checkpoint of the run-away
# depth had been saved; a Monodepth2 `:tiny` seed; three more SC-SfMLearner runs); none of the
# 38 other logged runs met both conditions at any check: 30 stayed below 4 % of the maximum, a
# Monodepth2 seed reached 6 % (and came back by itself), and Li et al.'s six runs, whose
# unbounded depth's scale grew to 6-25 % of 100, kept their translation above 1e-2 of it
# (docs/unseen_video.md, "The depth that runs to the ceiling"). It is a collapse at once: a
# second check 20 steps later would come after a checkpoint of the run-away depth (a run that
# ran away between steps 80 and 100 saved one at step 100). A recovery from it switches the
# paper's binary auto-mask on from the step it goes back to (`automask_after_runaway`) and keeps
# the regularisers' weights (`regulariser_factor_after`).
CEILING_DEPTH_FRACTION = 0.1
CEILING_TRANSLATION_RATIO = 1e-3
CEILING_PROBLEM = "the depth ran toward the head's maximum"
# At the end of training (and at a checkpoint a recovery may go back to), the median
# `depth_spread` of the last `FINAL_CHECKS` health checks must reach
# `config.run.min_final_depth_spread` (default 0.1). The true depth of the rendered street scenes
# spreads 0.39-0.98 (median 0.78, capped at 80 m); five runs whose held-out depth beat a
# constant one ended at 0.18-0.59, while six of ten runs that learned no depth (held-out AbsRel
# 0.57-0.63 against a constant depth's 0.60) ended at 0.02-0.095, passing the collapse check above
# and ending "Done" (docs/unseen_video.md, "A nearly flat depth at the end").
FINAL_CHECKS = 5
# `sslmd train`'s exit code for a run that ended collapsed (1 is any other error).
COLLAPSE_EXIT_CODE = 3
RECOVERIES_FILE = "recoveries.json"


class TrainingCollapsedError(RuntimeError):
  """Training stayed collapsed after every allowed recovery; the message says how and where."""


def depth_spread(depth: jax.Array) -> jax.Array:
  """Relative spread of predicted depth maps: per image std / mean over pixels, batch mean.

  Args:
    depth: `[B, H, W, 1]` depth (any unit; the ratio is scale-free).

  Returns:
    Scalar float32; 0 for a constant depth.
  """
  depth = depth.astype(jnp.float32)
  return jnp.mean(jnp.std(depth, axis=(1, 2, 3)) / jnp.mean(depth, axis=(1, 2, 3)))


def translation_to_depth(b_from_a: jax.Array, depth: jax.Array) -> jax.Array:
  """Mean predicted translation norm over mean predicted depth (scale-free; module docstring).

  Args:
    b_from_a: `[B, P, 4, 4]` predicted rigid motion of each pair (depth units).
    depth: `[B, H, W, 1]` predicted depth of the target frames (the same units).

  Returns:
    Scalar float32 >= 0; 0 when every predicted translation is 0.
  """
  translation = jnp.linalg.norm(b_from_a[..., :3, 3].astype(jnp.float32), axis=-1)
  return jnp.mean(translation) / jnp.mean(depth.astype(jnp.float32))


def depth_ceiling(config: ml_collections.ConfigDict) -> float | None:
  """The largest depth the config's depth head can output (network units), or None if unbounded.

  'disp_to_depth': `config.model.max_depth`; 'scaled_sigmoid': `1 / MIN_DISP` (100);
  'softplus' (Li et al.): None.
  """
  head = config.model.depth_head
  if head == "disp_to_depth":
    return float(config.model.max_depth)
  if head == "scaled_sigmoid":
    return 1.0 / depth_models.MIN_DISP
  return None


def health_problem(metrics: dict[str, float], previous: dict[str, float] | None = None,
                   ceiling: float | None = None) -> str | None:
  """What is wrong with a step's logged metrics, in one sentence, or None when healthy.

  A depth that ran toward the head's maximum with the translation left behind
  (`CEILING_DEPTH_FRACTION`; named first, also when that depth has become constant, since its
  recovery acts on the cause), a constant depth and a translation longer than the scene is deep
  are collapses at once. No translation is one only when the previous check saw none either: a
  batch of snippets that all stand still (a car waiting at a light) rightly predicts none.

  Args:
    metrics: host floats with `depth_spread`, `depth_mean` and (when the recipe predicts
      rigid motion) `translation_to_depth`.
    previous: the previous check's metrics (None: this is the run's first check).
    ceiling: the depth head's maximum (`depth_ceiling`; None: unbounded, not checked).
  """
  mean, ratio = metrics.get("depth_mean"), metrics.get("translation_to_depth")
  if (ceiling and mean is not None and ratio is not None
      and mean >= CEILING_DEPTH_FRACTION * ceiling and ratio < CEILING_TRANSLATION_RATIO):
    return (f"{CEILING_PROBLEM} while the translation stayed behind, so the warp became a "
            f"rotation (mean depth {mean:.3g} of at most {ceiling:g}, translation_to_depth "
            f"{ratio:.3g}; expected a mean depth below {CEILING_DEPTH_FRACTION:g} of the maximum "
            f"or translation_to_depth >= {CEILING_TRANSLATION_RATIO:g})")
  spread = metrics.get("depth_spread")
  if spread is not None and not spread >= DEPTH_COLLAPSE_SPREAD:
    return (f"the predicted depth is constant (depth_spread {spread:.3g}, expected >= "
            f"{DEPTH_COLLAPSE_SPREAD})")
  if ratio is not None and ratio > TRANSLATION_RUNAWAY_RATIO:
    return (f"the motion network's translation ran away: every pixel warps out of view "
            f"(translation_to_depth {ratio:.3g}, expected <= {TRANSLATION_RUNAWAY_RATIO})")
  before = (previous or {}).get("translation_to_depth")
  if (ratio is not None and before is not None and not ratio >= TRANSLATION_COLLAPSE_RATIO
      and not before >= TRANSLATION_COLLAPSE_RATIO):
    return (f"the motion network predicts no translation (translation_to_depth {ratio:.3g} "
            f"and {before:.3g} at the previous check, expected >= {TRANSLATION_COLLAPSE_RATIO})")
  return None


def flat_depth_problem(spreads: list[float], minimum: float) -> str | None:
  """What is wrong with a run's recent depth, in one phrase, or None when it is not flat.

  Args:
    spreads: `depth_spread` of the health checks that led to the run's state, oldest first
      (a restored state brings those saved with its checkpoint); the median of the last
      `FINAL_CHECKS` is judged (none: nothing to judge).
    minimum: `config.run.min_final_depth_spread` (0 disables the check).
  """
  recent = spreads[-FINAL_CHECKS:]
  if not recent or minimum <= 0:
    return None
  median = float(np.median(recent))
  if median >= minimum:
    return None
  return (f"a nearly flat depth (depth_spread {median:.3g}, the median of the last {len(recent)} "
          f"checks, expected >= {minimum:g})")


@dataclasses.dataclass(frozen=True)
class Recovery:
  """One recovery from a collapse, as recorded in `workdir/recoveries.json`.

  Attributes:
    step: the step whose health check failed.
    problem: `health_problem`'s sentence.
    restored_step: the checkpoint the run went back to (0: the initial state).
    factor: the factor on `config.optim.learning_rate` from then on (cumulative:
      `recovery_factor ** number_of_recoveries`).
    regulariser_factor: the factor on `config.loss.smoothness_weight` and
      `config.loss.geometry_consistency_weight` from then on (`regulariser_factor_after`;
      None: the same as `factor`, as in files written before it existed).
    refine_rotation_start_step: the step from which the run warps with the aligned rotation
      from then on (`postponed_alignment_start`), or None when this recovery left it as it was.
    automask_start_step: the step from which the run auto-masks from then on
      (`automask_after_runaway`), or None when this recovery left it as it was.
  """
  step: int
  problem: str
  restored_step: int
  factor: float
  refine_rotation_start_step: int | None = None
  automask_start_step: int | None = None
  regulariser_factor: float | None = None

  @property
  def regularisers(self) -> float:
    """The factor on the regularisers' weights from this recovery on."""
    return self.factor if self.regulariser_factor is None else self.regulariser_factor


def read_recoveries(workdir: str | os.PathLike) -> list[Recovery]:
  """The recoveries recorded in `workdir` (empty for a run that never collapsed)."""
  path = pathlib.Path(workdir) / RECOVERIES_FILE
  if not path.exists():
    return []
  try:
    return [Recovery(**row) for row in json.loads(path.read_text())]
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path}: not a list of recoveries ({e}); expected what sslmd train "
                     "writes, e.g. [{\"step\": 200, \"problem\": \"...\", \"restored_step\": 100, "
                     "\"factor\": 0.5}]") from None


def write_recoveries(workdir: str | os.PathLike, recoveries: list[Recovery]) -> None:
  """Writes the recoveries atomically (a kill leaves the old or the new file, never half)."""
  path = pathlib.Path(workdir) / RECOVERIES_FILE
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps([dataclasses.asdict(r) for r in recoveries], indent=2) + "\n")
  os.replace(tmp, path)


def with_recoveries(config: ml_collections.ConfigDict,
                    recoveries: list[Recovery]) -> ml_collections.ConfigDict:
  """`config` as the run continues after its recoveries (a copy; `config` is unchanged).

  The learning rate and the weights of the terms a constant depth minimises (smoothness,
  geometry consistency) are multiplied by the newest recovery's factors, `seed` is moved on by
  the number of recoveries (fresh initial parameters if the run went back to step 0, fresh
  per-step randomness; the data order stays the checkpoint's), the aligned rotation starts
  at the step the newest recovery that moved it chose (`postponed_alignment_start`), and
  auto-masking at the step the newest recovery that switched it on chose
  (`automask_after_runaway`).
  """
  if not recoveries:
    return config
  out = config.copy_and_resolve_references()
  starts = [r.refine_rotation_start_step for r in recoveries
            if r.refine_rotation_start_step is not None]
  if starts:
    out.loss.refine_rotation_start_step = starts[-1]
  masked = [r.automask_start_step for r in recoveries if r.automask_start_step is not None]
  if masked:
    out.loss.automask, out.loss.automask_start_step = True, masked[-1]
  out.optim.learning_rate = config.optim.learning_rate * recoveries[-1].factor
  out.loss.smoothness_weight = config.loss.smoothness_weight * recoveries[-1].regularisers
  out.loss.geometry_consistency_weight = (config.loss.geometry_consistency_weight
                                          * recoveries[-1].regularisers)
  out.seed = config.seed + len(recoveries)
  return out


def regulariser_factor_after(config: ml_collections.ConfigDict, recoveries: list[Recovery],
                             problem: str) -> float:
  """The factor on the regularisers' weights after a recovery from `problem`.

  The regularisers pull towards a flat depth, so after a constant depth, no translation or a
  translation that ran away they are multiplied by `config.run.recovery_factor`, as the
  learning rate is. After a depth that ran toward the head's maximum (`CEILING_PROBLEM`) they
  are kept: the edge-aware smoothness is what holds part of the image from running there. On
  real KITTI frames, SC-SfMLearner `:tiny` seed 1 (auto-mask from step 0), 200 steps: as
  documented its mean depth peaked at 6.8 units and came back to 0.19; at half the learning
  rate it stayed below 0.44; with half the smoothness and consistency weights it ran to 27 of
  100 by step 80 (docs/unseen_video.md, "The depth that runs to the ceiling").

  Args:
    config: the run's config (the recovery factor).
    recoveries: the recoveries before this one.
    problem: `health_problem`'s sentence.
  """
  before = recoveries[-1].regularisers if recoveries else 1.0
  if problem.startswith(CEILING_PROBLEM):
    return before
  return before * config.run.recovery_factor


def automask_after_runaway(config: ml_collections.ConfigDict, problem: str,
                           restored_step: int) -> int | None:
  """The step from which a recovery from `problem` auto-masks, or None to leave it as it was.

  Where the depth ran toward the head's maximum (`CEILING_PROBLEM`), a warp that barely moves
  those pixels beat the young pose network's there; the binary auto-mask (Godard et al. 2019
  §3.2; Bian et al. 2021 for SC-SfMLearner) drops the pixels where the unwarped source beats the
  warp from the loss, so moving less no longer lowers it. On real KITTI
  frames SC-SfMLearner `:tiny` without it ran away by step 40 and ended collapsed; with it from
  step 0 it learned without a recovery (docs/unseen_video.md, "SC-SfMLearner on real video: the
  auto-mask"; with it and half the regularisers' weights, seeds 1-3 ran away again:
  `regulariser_factor_after`). So such a recovery masks from the step it goes back to, unless
  the run already masks from then on, or uses Li et al.'s occlusion-aware loss, which has no
  auto-mask.

  Args:
    config: the run's config as it stood at the collapse (`with_recoveries`).
    problem: `health_problem`'s sentence.
    restored_step: the step the recovery goes back to (0: the initial state).
  """
  lo = config.loss
  if not problem.startswith(CEILING_PROBLEM) or lo.occlusion_aware:
    return None
  if lo.automask and lo.automask_start_step <= restored_step:
    return None
  return restored_step


def postponed_alignment_start(config: ml_collections.ConfigDict, step: int) -> int | None:
  """Where a recovery from a collapse at `step` moves the start of the aligned rotation, or None.

  With `config.loss.refine_rotation` and a start step S > 0 (the recipe trains with the pose
  network's own rotation until the depth has formed: Monodepth2 `:tiny`), a collapse at a step
  >= S happened under the aligned rotation. Fitted to a depth that has not formed enough, that
  rotation can absorb the parallax the depth should explain: on `holdout`, two of four Monodepth2
  `:tiny` seeds collapsed 40 and 160 steps after S = 300, and collapsed again after going back
  to the newest checkpoint. Such a recovery goes back to a state from before S
  (`sslmd_jax.train`; the step-S checkpoint is kept for it) and starts the alignment later: as
  many steps after the collapse as the collapse came after S, and at least
  `config.run.checkpoint_every`, so that a checkpoint from before the new start exists to go
  back to if it happens again. On a `tune`-range run that replaced a restart from scratch by one
  step back to S; on those two `holdout` seeds it did not change the outcome, because their
  depth had nearly flattened before S (docs/unseen_video.md, "A collapse under the aligned
  rotation: back to its start, and the alignment later"). A recipe that aligns from step 0
  (S = 0: SC-SfMLearner and SfMLearner `:tiny`, which collapsed without the alignment) keeps it.

  Args:
    config: the run's config as it stood at the collapse (`with_recoveries`).
    step: the step whose health check failed.

  Returns:
    The new start step (> `step`), or None when the rotation was not aligned at `step`.
  """
  start = alignment_start(config)
  if start is None or step < start:
    return None
  return step + max(step - start, config.run.checkpoint_every)


def alignment_start(config: ml_collections.ConfigDict) -> int | None:
  """The step where the aligned rotation takes over, for a recipe that trains with the network's
  own rotation before it (`refine_rotation` with `refine_rotation_start_step` > 0), else None."""
  lo = config.loss
  if not lo.refine_rotation or lo.refine_rotation_start_step <= 0:
    return None
  return lo.refine_rotation_start_step
