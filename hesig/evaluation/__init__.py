"""Scoring: reconstruction metrics beside both baselines (metrics), the reconstruction risk R of
Malekzadeh & Gündüz (risk) and figures (viz). Bottom layer: imports only hesig.core."""
