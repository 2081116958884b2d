"""The Locust engine: the only code that imports locust, run in its own process.

``python -m scalefinder.loadgen.engine`` is started by the orchestrator (``client.EngineProcess``) and
offers open-model load (``generator``): a constant arrival rate per step whatever the target
does. With workers it becomes a Locust master (``distributed``) whose workers each offer a
share of the rate. ``client``, ``protocol`` and ``recorder`` are imported by the orchestrator
and must not import locust; the other modules run only inside the engine process.
"""
