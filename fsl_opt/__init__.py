"""fsl-opt: optimizer and simulator for federated split learning with LoRA.

Start with :class:`fsl_opt.problem.system.System` (one round's devices), :mod:`fsl_opt.problem.cost`
(eqs. 1-12), :func:`solvers.solve` (rank and frequencies), :mod:`fsl_opt.problem.presets`, and
:func:`fsl_opt.federation.loop.run` (federated LoRA fine-tuning driven by the solver).
"""

__version__ = "0.1.0"
