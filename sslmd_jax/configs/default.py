"""Every configuration field of sslmd_jax, declared once, each with a one-line comment.

The defaults are the Monodepth2 recipe (monocular, ResNet-18, 4 scales, minimum
reprojection + auto-masking) on the built-in synthetic driving world at the CPU
size 96x320, sized so that `sslmd train` with no arguments finishes in under 15
minutes on 2 CPU cores (150 steps of batch 4); longer runs set
`--config.optim.num_steps` and `--config.data.batch_size`. Recipes (`configs/sfmlearner.py`,
`monodepth2.py`, `sc_sfmlearner.py`, `dynamic_scenes.py`) import this module
(`from sslmd_jax.configs import default`) and override a few fields. The config is locked: a
mistyped `--config.x.y=...` fails before anything is compiled.

Command (trains the default recipe on the synthetic world, then evaluates it):

  sslmd train --workdir=/tmp/sslmd/default

Variants are chosen after a colon: `--config=sslmd_jax/configs/default.py:tiny` shrinks
resolution, batch and steps so that a run finishes on a 2-core CPU in minutes.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The default (Monodepth2-on-synthetic) config; `variant` is '' or 'tiny'."""
  c = ml_collections.ConfigDict()
  c.recipe = "monodepth2"  # Name recorded in logs and results; the fields below define the method.
  c.seed = 0  # Seed of parameter initialisation, data order and augmentation.

  # ------------------------------------------------------------------ data
  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic"  # 'synthetic' | 'kitti_raw' | 'kitti_odometry' | 'video_folder' | 'prepared' (a data set written by `sslmd prepare`, stored at height x width: docs/data.md).
  d.path = ""  # Data root: TFDS data dir (synthetic; '' = ~/tensorflow_datasets), KITTI raw root, odometry root, video folder, or prepared data set (sslmd prepare's --output).
  d.train_split_file = ""  # kitti_raw: split file of training frames ('<date>/<drive> <frame> <l|r>' lines).
  d.test_split_file = ""  # kitti_raw: split file of the Eigen test frames (ground truth from LiDAR).
  d.sequences = "00,01,02,03,04,05,06,07,08"  # kitti_odometry: comma-separated sequence ids for training.
  d.test_sequences = "09,10"  # kitti_odometry: sequence ids evaluated for pose.
  d.camera = 2  # kitti_odometry: camera index (0 = left grey, 2 = left colour).
  d.height = 96  # Network input height in pixels (multiple of 32).
  d.width = 320  # Network input width in pixels (multiple of 32).
  d.frame_offsets = (0, -1, 1)  # Snippet frame offsets relative to the target (offset 0).
  d.batch_size = 4  # Global batch size (split over every device of every host; Monodepth2: 12).
  d.flip_prob = 0.5  # Probability of a horizontal flip of a whole snippet (cx mirrored).
  d.color_jitter_prob = 0.5  # Probability of colour jitter (network inputs only).
  d.brightness = 0.2  # Colour jitter brightness range: factor in [1 - x, 1 + x].
  d.contrast = 0.2  # Colour jitter contrast range.
  d.saturation = 0.2  # Colour jitter saturation range.
  d.hue = 0.1  # Colour jitter hue shift range (fraction of a turn).
  d.random_scale_crop = 0.0  # SfMLearner's random scale-up factor bound (1.15) before cropping; 0 = off.
  d.static_threshold = 0.0  # Drop snippets whose mean |target - source| (in [0, 1]) is below this; 0 = off.
  d.stereo = False  # Stereo partner as a source of known pose (Godard et al. 2019 §3.1); every source, docs/data.md.
  d.worker_count = 0  # grain worker processes (0 = load in the main process).
  d.synthetic_train_sequences = 24  # synthetic: number of training scenes.
  d.synthetic_test_sequences = 4  # synthetic: number of test scenes (disjoint seeds).
  d.synthetic_frames = 40  # synthetic: frames per scene.
  d.synthetic_test_split = "test"  # synthetic: sequences served as the test split: 'test' (short scenes) | 'odometry' (long block-loop drives).
  d.synthetic_odometry_sequences = 2  # synthetic: number of odometry drives (rendered only when synthetic_test_split = 'odometry').
  d.synthetic_odometry_frames = 500  # synthetic: frames per odometry drive (>= 500 leaves room to lap a block and close the loop).
  d.synthetic_generation_workers = 1  # synthetic: processes rendering scenes when a dataset is first generated (0 = one per CPU core; > 1 needs a script guarded by `if __name__ == "__main__"`).
  d.default_focal = 0.0  # Videos without intrinsics.txt: fx = fy = this × width (0 = KITTI's normalised camera).

  # ------------------------------------------------------------------ model
  c.model = m = ml_collections.ConfigDict()
  m.depth_net = "resnet"  # 'resnet' (Monodepth2 U-Net) | 'dispnet' (SfMLearner).
  m.num_layers = 18  # ResNet depth of the depth (and pose) encoders: 18, 34 or 50.
  m.base_width = 64  # ResNet stem width (64 = standard; tiny variants use less).
  m.decoder_channels = (16, 32, 64, 128, 256)  # Monodepth2 depth-decoder channels.
  m.depth_head = "disp_to_depth"  # 'disp_to_depth' (Monodepth2) | 'scaled_sigmoid' (SfMLearner, SC) | 'softplus' (Li).
  m.min_depth = 0.1  # 'disp_to_depth' lower depth bound.
  m.max_depth = 100.0  # 'disp_to_depth' upper depth bound.
  m.norm = "batch"  # Encoder normalisation: 'batch' | 'randomized_layer' (Li) | 'none'.
  m.layer_norm_noise = 0.5  # Randomized layer norm: final noise σ, ramped as σ·min(step/10000, 1)².
  m.layer_norm_ramp_steps = 10000  # Randomized layer norm: steps of the σ ramp.
  m.pose_net = "resnet"  # 'resnet' (Monodepth2 separate ResNet) | 'posexp' (SfMLearner) | 'motion_field' (Li).
  m.dispnet_encoder_channels = (32, 64, 128, 256, 512, 512, 512)  # SfMLearner DispNet encoder widths.
  m.dispnet_decoder_channels = (512, 512, 256, 128, 64, 32, 16)  # SfMLearner DispNet decoder widths (coarsest first).
  m.pose_base_width = 64  # Pose ResNet stem width.
  m.pose_decoder_width = 256  # Monodepth2 pose-decoder channels.
  m.posexp_channels = (16, 32, 64, 128, 256, 256, 256)  # SfMLearner PoseExpNet widths.
  m.motion_channels = (16, 32, 64, 128, 256, 512, 1024)  # Li et al. motion-field encoder widths.
  m.rotation = "axis_angle"  # Rotation parameterisation of 'resnet' pose nets: 'axis_angle' | 'euler'.
  # The pose net knows each pair's order in time. 'resnet': pairs are fed earlier frame first and
  # the motion inverted for earlier sources (Monodepth2). 'motion_field': the pair's time direction
  # (+1 / −1) is a ninth input channel (not in Li et al.; without it the net must tell forward
  # from backward motion from the pixels alone, README "Results").
  m.temporal_order = True
  m.translation_scale_init = 0.01  # Li: initial value of the learned translation scale (the paper's 0.01; it sets the first translations' size next to the depth).
  m.motion_auto_mask = True  # Li: zero the residual field where its norm is below its mean.
  m.motion_burn_in_steps = 20000  # Li: residual field multiplied by clip(2·step/N − 1, 0, 1).
  m.learn_intrinsics = False  # Li/Gordon: learn fx, fy, cx, cy (used instead of the data's).
  m.pretrained = ""  # Path of a torchvision ResNet state dict (.pth) to initialise the encoders ('' = random).
  m.dtype = "float32"  # Computation dtype: 'float32' | 'bfloat16' (parameters stay float32).

  # ------------------------------------------------------------------ loss
  c.loss = l = ml_collections.ConfigDict()
  l.num_scales = 4  # Number of disparity scales in the loss.
  l.multiscale = "full_resolution"  # 'full_resolution' (Monodepth2) | 'per_scale' (SfMLearner, v1).
  l.padding = "border"  # Out-of-image samples: 'border' (Monodepth2) | 'zeros' (SfMLearner, SC).
  l.ssim_weight = 0.85  # Weight of SSIM in the photometric error (0 = L1 only, SfMLearner).
  l.clip_l1 = False  # Clip |I - Î| to [0, 1] (SC-SfMLearner).
  l.reprojection = "min"  # Combine sources per pixel: 'min' (Monodepth2) | 'mean' (average, masked by validity).
  l.automask = True  # Monodepth2 auto-masking with identity reprojection errors.
  l.automask_noise = 1e-5  # Tie-breaking noise scale added to identity errors.
  l.automask_start_step = 2000  # Auto-masking only from this step on. Monodepth2 masks from step 0 but starts from ImageNet weights; from scratch, masking from step 0 locks the pose net into sideways motion (README Results). 0 = the paper.
  l.photometric_weight = 1.0  # Weight of the photometric term.
  l.smoothness = "edge_aware"  # 'edge_aware' (Monodepth2, SC, Li) | 'second_order' (SfMLearner).
  l.smoothness_weight = 1e-3  # Smoothness weight at scale 0 (divided by 2^s at scale s).
  l.smoothness_ramp_steps = 0  # Smoothness weight ramped linearly from 0 to its value over this many steps (0 = full weight from step 0, the papers). SC-SfMLearner sets 2000 (`:tiny` 400): from scratch at its full 0.1 its depth collapses to a constant (README Results).
  l.smoothness_scales = 4  # Number of scales that carry the smoothness term (SC: 1).
  l.refine_rotation = False  # Train with the pose net's rotation replaced by direct image alignment's on the current depth (sslmd_jax/motion_refinement.py): a from-scratch pose net misses most of a turn's rotation, and the depth net then learns to explain it (docs/unseen_video.md). `configs/monodepth2.py:tiny` sets it.
  l.refine_rotation_start_step = 0  # With refine_rotation: the first step that warps with the aligned rotation (before it: the pose net's rotation, and no distillation). 0 = from the start. When > 0, a collapse after it goes back to a checkpoint from before it and moves it later (sslmd_jax/health.py, postponed_alignment_start).
  l.refine_levels = 3  # With refine_rotation: pyramid levels of the alignment (each halves the size).
  l.refine_iterations = 4  # With refine_rotation: Gauss-Newton steps per level.
  l.refine_direction_prior = 1.0  # With refine_rotation: λ of motion_refinement, the weight holding the translation's direction near the pose net's (sslmd predict uses 100).
  l.refine_length_prior = 1.0  # With refine_rotation: μ of motion_refinement, the weight holding the translation's length near the pose net's (sslmd predict uses 0). Monodepth2 :tiny's held-out AbsRel with λ = μ = 1: 0.330 (tune) and 0.302 (holdout); with λ = 100, μ = 0: 0.335 and 0.358 (docs/unseen_video.md).
  l.rotation_distillation_weight = 1.0  # With refine_rotation: weight of Σ|R_net - R_aligned| (the pose net learns the aligned rotation, which prediction starts from).
  l.explainability_weight = 0.0  # SfMLearner's explainability regulariser λ_e (0.2 when enabled; needs 'posexp').
  l.geometry_consistency_weight = 0.0  # SC-SfMLearner geometry consistency weight (0.5).
  l.geometry_consistency_ramp_steps = 0  # Geometry consistency weight ramped linearly from 0 to its value over this many steps (0 = full weight from step 0, the paper), like smoothness_ramp_steps. SC-SfMLearner `:tiny` sets 400: from scratch at its full 0.5 the depth flattened within 80 steps (docs/unseen_video.md).
  l.self_discovered_mask = False  # SC-SfMLearner: weight the photometric map by 1 - D_diff.
  l.both_directions = False  # Use every (target, source) pair in both directions (SC, Li).
  l.occlusion_aware = False  # Li: photometric terms only where the transformed depth is closer.
  l.li_rgb_weight = 1.0  # Li: L1 photometric weight.
  l.li_ssim_weight = 3.0  # Li: depth-weighted SSIM weight (the SSIM term is also ×0.5).
  l.motion_smoothness_weight = 1.0  # Li: group smoothness of the residual field.
  l.motion_sparsity_weight = 0.2  # Li: L1/2 sparsity of the residual field.
  l.rotation_cycle_weight = 1e-3  # Li: rotation cycle consistency.
  l.translation_cycle_weight = 5e-2  # Li: translation cycle consistency.
  l.term_scale = 1.0  # Multiplies every weighted term (Li's reference: 2).

  # ------------------------------------------------------------------ optimisation
  c.optim = o = ml_collections.ConfigDict()
  o.learning_rate = 1e-4  # Adam learning rate.
  o.b1 = 0.9  # Adam β1.
  o.b2 = 0.999  # Adam β2.
  o.decay_steps = 0  # Step decay: multiply the rate by `decay_factor` after this many steps (0 = 3/4 of num_steps).
  o.decay_factor = 0.1  # Step decay factor (Monodepth2: 1e-4 → 1e-5).
  o.warmup_steps = 0  # Linear learning-rate warm-up from 0 over this many steps (0 = none, the papers).
  o.grad_clip_norm = 0.0  # Global-norm gradient clipping (Li: 10; 0 = off).
  o.num_steps = 150  # Training steps (the default run fits in 15 minutes on 2 CPU cores; papers: ~66k).
  o.motion_scale_lr_factor = 1.0  # Li et al.'s learned rotation/translation scales (motion_field): their Adam updates are multiplied by this (1 = the paper; 0 keeps them at 0.01). Adam moves a scalar by about the rate each step, and early "less translation" steps carried the translation scale to its floor (docs/unseen_video.md).
  o.microbatches = 1  # Gradient accumulation: the step runs the batch as this many chunks, one call at a time, and makes one update (less memory; BatchNorm statistics per chunk).

  # ------------------------------------------------------------------ run
  c.run = r = ml_collections.ConfigDict()
  r.log_every = 10  # Steps between metric logs (and host transfers of metrics).
  r.image_every = 50  # Steps between TensorBoard image summaries.
  r.checkpoint_every = 50  # Steps between checkpoints.
  r.keep_checkpoints = 2  # The newest checkpoints kept in the workdir (besides the one at loss.refine_rotation_start_step, when > 0: a collapse under the aligned rotation goes back there).
  r.evaluate = True  # Evaluate on the test split at the end of training.
  r.max_recoveries = 3  # Collapses (constant depth, no predicted motion) recovered from before the run fails (sslmd_jax/health.py).
  r.recovery_factor = 0.5  # Each recovery goes back to the newest checkpoint with the learning rate, smoothness and geometry-consistency weights times this (the weights kept after a depth that ran toward the head's maximum: sslmd_jax/health.py).
  r.min_final_depth_spread = 0.1  # The run fails (exit 3) if it ends with a depth flatter than this (median depth_spread of the last 5 checks; street scenes: 0.4-1.0; 0 disables; sslmd_jax/health.py).
  r.progress = "auto"  # 'auto' (bar on a terminal, lines otherwise) | 'bar' | 'lines'.

  if variant == "tiny":
    apply_tiny(c)
  elif variant:
    raise ValueError(f"unknown config variant {variant!r}: expected '' or 'tiny'")
  c.lock()
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a CPU smoke-sized run: 64x192 inputs, batch 4, a few hundred steps, narrow nets."""
  c.data.height, c.data.width = 64, 192
  c.data.batch_size = 4
  c.data.synthetic_train_sequences = 6
  c.data.synthetic_test_sequences = 2
  c.data.synthetic_frames = 20
  c.model.base_width = 16
  c.model.pose_base_width = 16
  c.model.decoder_channels = (8, 16, 32, 64, 128)
  c.model.pose_decoder_width = 64
  c.model.posexp_channels = (8, 16, 32, 64, 128, 128, 128)
  c.model.dispnet_encoder_channels = (8, 16, 32, 64, 128, 128, 128)
  c.model.dispnet_decoder_channels = (128, 128, 64, 32, 16, 8, 4)
  c.model.motion_channels = (8, 16, 32, 64, 128, 128, 256)
  c.optim.num_steps = 300
  c.optim.learning_rate = 5e-4
  # From scratch at 5e-4, Adam's first steps drove the depth to its maximum (a constant, whose
  # sigmoid gradient is then 0) within 20 steps on turning and stopping clips, before the pose
  # network's translation had grown; a 100-step warm-up avoided it (docs/unseen_video.md).
  c.optim.warmup_steps = 100
  c.loss.automask_start_step = 400
  c.run.log_every = 20
  c.run.image_every = 100
  c.run.checkpoint_every = 100
