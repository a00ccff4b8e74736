"""Sibling attacks in the same harness: He et al.'s split-inference attacks and vicious classifiers."""
