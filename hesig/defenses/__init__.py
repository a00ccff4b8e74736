"""Defenses, each measured against attackers who know them: feature noise on split-inference
outputs (He et al. §7.4), output defenses of a released vector (Malekzadeh & Gündüz, Appendix I),
and, against the perturbation-signature attack, client policies (hesig.oracles.policies: they
live below the oracles that apply them), the client's search detector and the honest-utility
measure (issue 19)."""
