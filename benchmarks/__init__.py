"""finesyn benchmarks (issue 9): `python -m benchmarks.run [--quick]` / `make bench`.

One module per benchmark, each exposing ``run(ctx) -> dict`` (see ``benchmarks.run``):

- ``machine``     CPU model, cores, threads, library versions, git revision; the measured
                  matrix-multiply peak (a large ``torch.mm``), the denominator of ``efficiency``.
- ``throughput``  pretraining images/s of every registered method with and without the module,
                  at the params.yaml defaults and at a paper-like setting scaled to the CPU; the
                  module/baseline step-time ratio of each method, measured in the same run.
- ``peer``        our MoCo v2 step against the same MoCo v2 built from lightly, on the same
                  pre-augmented views (lightly is loaded from ``.bench-deps/``, never a project dependency).
- ``parity``      issue 16.5: whole MoCo v2 runs of our loop and of a minimal loop built from
                  lightly's pieces (same data, views, optimiser, schedule, steps), 3 seeds; the
                  seed-mean linear / kNN-20 top-1 must agree within 2 binomial SEs.
- ``efficiency``  achieved FLOP/s of the training step (FlopCounterMode) over the matmul peak;
                  torch.profiler tables of one step in ``profile_<setting>*.txt``.
- ``evaluation``  extraction images/s, lbfgs probe fit time, retrieval time against a NumPy
                  brute-force reference (each retrieval implementation in its own process: time + peak RSS).
- ``stage_memory`` peak RSS and wall time of every ``stages/*.py`` run as a subprocess on a tiny
                  prepared cache.
- ``e2e``         wall time of the default ``dvc repro`` in a fresh copy of the project (full mode).
"""
