"""The learner: the split encoder with LoRA, the LoRA algebra, the data, local training.

torch, transformers and peft live here and nowhere above it in :mod:`fsl_opt.problem`.
``split_model`` (frozen bottom, adapted top, head), ``lora`` (rank changes and
aggregation of adapter payloads), ``data`` (datasets and their split over devices) and
``local`` (one device's local training and evaluation, a plain function of its inputs).
Nothing here knows about rounds, solvers or backends.
"""
