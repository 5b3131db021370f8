"""The optimization problem of one round: the system, what it costs, what a solver returns.

Pure numpy, no torch: ``system`` (the frozen per-device model of a round), ``cost`` (delay
and energy, eqs. 1-12, and the one feasibility kernel), ``compute`` (CPU cycles of a
transformer's trained layers), ``presets`` (ready device populations), ``result`` (the one
result type of every solver) and ``system_file`` (the ``SYSTEM.toml`` reader). Nothing
here imports the learner or the federation.
"""
