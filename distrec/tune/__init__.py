"""Ray Tune sweeps over any job config (``jobs/tune.py``)."""
