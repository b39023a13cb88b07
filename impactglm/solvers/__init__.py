"""The solvers: arrays in, a containers.FitOutput out.

Entry points: :mod:`impactglm.solvers.api` (fit_high_cardinality, fit_multinomial) and
:func:`impactglm.solvers.irls.fit_irls`."""
