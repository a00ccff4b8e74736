"""Defenses, each measured against attackers who know them: feature noise on split-inference
outputs (He et al. §7.4), output defenses of a released vector (Malekzadeh & Gündüz, Appendix I),
and oracle wrappers / client policies against the perturbation-signature attack."""
