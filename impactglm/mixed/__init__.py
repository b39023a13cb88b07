"""Linear mixed models as lme4 fits them: ``lmm()`` in :mod:`impactglm.mixed.model`."""
