"""What every Ray job shares (train, the dense loop, compress, distill), in one place:

- ``config.py``: the ``ray`` config section and the run name derived from ``output_dir``;
- ``ray.py``: connect to a cluster or start an embedded local Ray, check its resources, run a
  job's workers (``run_job_workers``) and map their failures (``fail_fast.py``);
- ``cluster.py``: the connected cluster's nodes, the refusal of local paths on more than one
  node (unless declared shared), and which node each worker ran on;
- ``worker.py``: the one Ray Train entry point, which runs a job's per-worker function by name
  (distrec/jobs.py);
- ``session.py``: where a worker reports and checkpoints (Ray Train, or a folder);
- ``checkpoint.py`` (+ ``dcp_metadata.py``): every checkpoint file a job writes or reads;
  ``reshard.py``: a TorchRec checkpoint restored on another number of workers or layout;
- ``epochs.py``: the resumable epoch loop and its per-epoch reporting.

Nothing here imports a job package (train, compress, distill, tune); importing this package
imports nothing heavy.
"""
