"""Data sources (synthetic world, KITTI raw, KITTI odometry, video folders) and the grain pipeline."""
