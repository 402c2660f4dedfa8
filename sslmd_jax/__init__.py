"""sslmd_jax: self-supervised monocular depth and ego-motion learning in JAX/Flax.

Modules (data flows top to bottom):
  data/        files -> numpy frame sequences -> grain snippets -> sharded global batches
  models/      depth, ego-motion, explainability and object-motion networks (Flax Linen)
  geometry     cameras, rotations, transforms, sampling and warps (pure, broadcasting)
  losses/      per-pixel photometric, smoothness, mask and consistency terms
  motion       one adapter per motion network: its output as b_from_a, fields, intrinsics
  loss_terms   the named terms, reduced over pixels, pairs and scales
  objectives   the config-driven total loss of the four method recipes (composes the above)
  train        state, make_train_step, train_and_evaluate, checkpointing
  evaluation   depth and pose metrics of the field's protocols
"""

__version__ = "0.1.0"
