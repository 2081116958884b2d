"""scalefinder: find which metric to auto-scale a service on, and at what target, by load-testing it.

The code is split in two halves joined by a run directory on disk:

* ``loadgen``  - the run side: profiles, the local cluster, the Locust engine, capacity
  controllers and metric sources; it writes a run directory.
* ``analysis`` - the read side: pure functions from a run directory to findings, the report
  and the CI gate.

This package holds what both halves share: the error family, the run-directory format, the
metric catalogue and the command line.
"""

__version__ = "0.1.0"
