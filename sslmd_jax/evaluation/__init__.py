"""Evaluation metrics of the field's protocols; host-side NumPy.

  depth     Eigen depth metrics: Garg crop, median scaling, the seven metrics.
  pose      pose conventions, 5-frame ATE of SfMLearner.
  odometry  full-trajectory KITTI metrics (t_err, r_err, ATE, RPE), Umeyama,
            `trajectory_report` (per sequence, mean, pooled; 7-DoF and 6-DoF).
"""

from sslmd_jax.evaluation.depth import (
  METRIC_NAMES,
  STEREO_SCALE_FACTOR,
  compute_errors,
  depth_metrics,
  evaluate_depth,
  garg_crop_mask,
  resize_bilinear,
  scale_consistency,
)
from sslmd_jax.evaluation.odometry import (
  KITTI_SEGMENT_LENGTHS,
  TRAJECTORY_ALIGNMENTS,
  align_trajectory,
  kitti_odometry_metrics,
  rotation_angle,
  segment_errors,
  trajectory_distances,
  trajectory_report,
  umeyama_alignment,
)
from sslmd_jax.evaluation.pose import (
  ate_5frame,
  chain_relative_poses,
  invert_rigid,
  relative_poses,
  snippet_ate,
)

__all__ = [
  "METRIC_NAMES", "STEREO_SCALE_FACTOR", "compute_errors", "depth_metrics", "evaluate_depth",
  "garg_crop_mask", "resize_bilinear", "scale_consistency",
  "KITTI_SEGMENT_LENGTHS", "align_trajectory", "kitti_odometry_metrics", "rotation_angle",
  "segment_errors", "trajectory_distances", "umeyama_alignment", "TRAJECTORY_ALIGNMENTS",
  "trajectory_report",
  "ate_5frame", "chain_relative_poses", "invert_rigid", "relative_poses", "snippet_ate",
]
