"""What lives on disk: the model_dir layout and atomic writes, checkpoints and their damage
checks, the single-writer lock, and the shipped pretrained models."""
