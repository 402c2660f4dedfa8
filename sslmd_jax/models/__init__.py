"""Networks of the four method recipes, Flax Linen modules used through `init`/`apply`.

Every model returns `(output, aux)`; every constructor takes explicit arguments (the objective /
trainer maps configs to them) and has a `tiny_*` variant for tests. Parameters are float32; `dtype`
sets the computation dtype (bfloat16 on accelerators); outputs are float32.

| Recipe         | Depth network                                   | Motion network                                    |
|----------------|-------------------------------------------------|---------------------------------------------------|
| SfMLearner     | `DispNet(head="scaled_sigmoid")`                | `PoseExpNet` (Euler, source_from_target, masks)   |
| Monodepth2     | `ResNetDepthNet(head="disp_to_depth")`, BN      | `ResNetPoseNet(num_input_images=2)` (axis-angle)  |
| SC-SfMLearner  | `ResNetDepthNet(head="scaled_sigmoid")`, BN     | `ResNetPoseNet(num_input_images=2)` (read Euler)  |
| Li et al. 2020 | `ResNetDepthNet(head="softplus",                | `MotionFieldNet` (RGB-D pair, residual field,     |
|                |   norm="randomized_layer")`                     |   learned intrinsics)                             |

Calling conventions:
  * Depth: `net.apply(variables, images[B,H,W,3], train=..., noise_stddev=...)` →
    `({"disp": per-scale, "depth": per-scale}, {"raw": per-scale, "features": ...})`, scale `s`
    shaped `[B, H/2^s, W/2^s, 1]`, finest first.
  * Pose: `{"rotation": [B, S, 3], "translation": [B, S, 3]}`; see each class for the rotation
    parameterisation and the frame (`source_from_target` / `b_from_a`).
  * BatchNorm models in train mode need `mutable=["batch_stats"]`; randomized layer
    normalisation in train mode needs `rngs={"noise": key}`.
"""

from sslmd_jax.models.depth import (DEPTH_HEADS, DepthDecoder, DispNet, ResNetDepthNet, depth_head,
                                    tiny_disp_net, tiny_resnet_depth_net)
from sslmd_jax.models.layers import NORM_KINDS, Norm, RandomizedLayerNorm
from sslmd_jax.models.motion_field import (IntrinsicsHead, MotionFieldNet, auto_mask_residual,
                                           constrained_scale, tiny_motion_field_net)
from sslmd_jax.models.pose import (PoseDecoder, PoseExpNet, ResNetPoseNet, tiny_pose_exp_net,
                                   tiny_resnet_pose_net)
from sslmd_jax.models.resnet import ResNetEncoder, encoder_channels, tiny_resnet_encoder

__all__ = [
    "DEPTH_HEADS", "NORM_KINDS", "DepthDecoder", "DispNet", "IntrinsicsHead", "MotionFieldNet",
    "Norm", "PoseDecoder", "PoseExpNet", "RandomizedLayerNorm", "ResNetDepthNet", "ResNetEncoder",
    "ResNetPoseNet", "auto_mask_residual", "constrained_scale", "depth_head", "encoder_channels",
    "tiny_disp_net", "tiny_motion_field_net", "tiny_pose_exp_net", "tiny_resnet_depth_net",
    "tiny_resnet_encoder", "tiny_resnet_pose_net",
]
