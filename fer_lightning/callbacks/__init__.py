"""Lightning callbacks: timing, W&B media."""
