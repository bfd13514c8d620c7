"""Video as motion: person tracking, temporal smoothing, per-person sequences and animation exports."""
