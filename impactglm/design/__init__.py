"""The design layer: a formula and a table in, plain arrays (containers.Design) out.

Entry point: :func:`impactglm.design.build.build_design`."""
