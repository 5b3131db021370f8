"""Orchestration of a federated run: settings, the round planner, the round loop, records.

``settings`` (:class:`RunConfig`, the one declaration of every run setting), ``planner``
(each round's channel draw and solver call, and aggregation), ``workload`` (the shared
frozen model and each device's cached data), ``loop`` (the round loop shared by every
backend, resume), ``runlog`` (records and checkpoints) and ``backends/`` (how devices train:
in-process or over Flower; each backend owns its devices' state).
"""
