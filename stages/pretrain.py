"""pretrain: SSL training of one experiment on one dataset.

Writes encoder.pt (what extract reads), train.json (settings, provenance, timings),
live/ (dvclive curves of every loss term, lr, images/s and the learning monitor, written while it
trains; a resumed run restarts them from its checkpoint, so no step is duplicated or missing)
and, with the module, pairs.png (rows of: augmented view, g(h), g(h̃), |g(h) − g(h̃)|). Checkpoints
go to --checkpoints, outside the DVC output, so a rerun after an interruption resumes.

Several processes: `torchrun --nproc_per_node N stages/pretrain.py ...` runs distributed data
parallel (finesyn.distributed): pretrain.batch_size is the global batch, split over the N
ranks; rank 0 holds the output locks and writes every output and checkpoint.
"""

import contextlib
import logging
import time
from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import StepLines, load, progress_bar, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    dataset: str = typer.Option(..., help="name under `datasets:`"),
    experiment: str = typer.Option(..., help="name under `experiments:`"),
    seed: int = typer.Option(0, help="training seed"),
    data: Path = typer.Option(..., help="prepared cache directory"),
    out: Path = typer.Option(..., help="output directory"),
    checkpoints: Path = typer.Option(..., help="checkpoint directory (kept across runs: resume)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    from finesyn import distributed

    with user_errors():
        ctx = distributed.init_from_env(p.pretrain_for(experiment).device)  # one process unless started by torchrun
    try:
        _pretrain(p, ctx, dataset, experiment, seed, data, out, checkpoints)
    finally:
        distributed.shutdown()


def _rank0_locks(ctx, *outputs: Path) -> contextlib.ExitStack:
    """Refuse a concurrent run writing the same outputs; under torchrun only rank 0 writes, so only it locks."""
    stack = contextlib.ExitStack()
    if ctx.is_main:
        for output in outputs:
            stack.enter_context(output_lock(output))
    return stack


def _pretrain(p, ctx, dataset: str, experiment: str, seed: int, data: Path, out: Path, checkpoints: Path) -> None:
    with user_errors(), _rank0_locks(ctx, out, checkpoints):
        from finesyn.config import ParamsError, dataset_config
        from finesyn.data.prepared import open_cache
        from finesyn.eval.monitor import monitor_split
        from finesyn.live_curves import LiveCurves
        from finesyn.methods import METHODS
        from finesyn.pairs.health import batch_health
        from finesyn.provenance import params_hash
        from finesyn.run_identity import RunSpec, run_settings
        from finesyn.train import pretrain

        dataset_config(p, dataset)
        exp, cfg = p.experiments.get(experiment), p.pretrain_for(experiment)
        log = stage_logging(checkpoints / "train.log" if ctx.is_main else None)
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports for the job
        ds = open_cache(data)
        crop = p.datasets[dataset].crop_size
        if crop > ds.image_size:
            raise ParamsError(f"datasets.{dataset}.crop_size ({crop}) exceeds the cached image size {ds.image_size} of {data}")
        settings = run_settings(p, dataset, experiment)
        run_id = params_hash({"settings": settings, "seed": seed, "data": params_hash(ds.meta)})
        spec = RunSpec(exp.method, exp.synth, cfg, crop, seed, run_id, checkpoints)
        fit_idx, monitor = monitor_split(ds, cfg, crop, p.datasets[dataset].split_seed)
        method_cls = METHODS.get(exp.method)  # None for "none" (no training)
        train_idx = ds.pretraining_indices(fit_idx, uses_labels=bool(method_cls and method_cls.uses_labels))
        n_unlabelled = len(train_idx) - len(fit_idx)
        health = batch_health(ds.images, monitor.val_idx, cfg.augment, crop, cfg.nu) if monitor is not None and exp.synth else None
        if exp.method != "none" and cfg.batch_size > len(train_idx):
            raise ParamsError(
                f"pretrain.batch_size ({cfg.batch_size}) exceeds the {len(train_idx)} images {dataset}/{experiment} pretrains on "
                f"({data}: its train split less the monitor's held-out {cfg.monitor_val_fraction:g}); lower the batch size"
            )
        synth_note = " + synth" if exp.synth else ""
        log.info(
            "pretrain %s/%s seed %d: %s%s, %d train images%s, run %s",
            dataset,
            experiment,
            seed,
            exp.method,
            synth_note,
            len(train_idx),
            f" ({n_unlabelled} of them unlabelled)" if n_unlabelled else "",
            run_id,
        )
        t0 = time.perf_counter()
        live = LiveCurves(out / "live") if ctx.is_main else None  # rank 0 writes every output
        # off a terminal the step lines carry the progress (total, ETA); in one the bar shows loss and img/s
        bar = progress_bar(f"pretrain {experiment}", "step", lines=False) if ctx.is_main else contextlib.nullcontext(None)
        with bar as update, live or contextlib.nullcontext():
            steps = StepLines(log, cfg.epochs, update)
            result = pretrain(
                ds.images, spec, train_idx, on_log=_live_logger(steps.on_log, live), progress=steps.progress, dist=ctx,
                labels=ds.labels, num_classes=len(ds.classes), monitor=monitor, on_resume=live.restart if live else None,
                health=health,
            )  # fmt: skip
        wall = time.perf_counter() - t0
        if ctx.is_main:
            record = {
                "dataset": dataset, "experiment": experiment, "method": exp.method, "synth": exp.synth, "run_id": run_id,
                "steps": result.steps, "train_images": len(train_idx), "unlabelled_images": n_unlabelled, "resumed_from_step": result.resumed_from,
                "wall_time_s": round(wall, 2), "processes": ctx.world_size, "settings": settings,
            }  # fmt: skip
            _write_outputs(out, result, spec, record, ds, train_idx, log)


def _live_logger(on_log, live):
    """on_log for pretrain(): `on_log`, and each record into the live curves too (rank 0)."""
    if live is None:
        return on_log

    def both(rec: dict) -> None:
        on_log(rec)
        live.log(rec)

    return both


def _write_outputs(out: Path, result, spec, record: dict, ds, train_idx, log) -> None:
    """encoder.pt, and with the module pairs.png, g(h)'s PSNR and its health; train.json last (live/ is written while training)."""
    from finesyn.io import atomic_write_bytes, atomic_write_json
    from finesyn.pairs.pair_grid import pair_grid_png
    from finesyn.provenance import provenance
    from finesyn.train import encoder_artifact

    record = {**record, **provenance(spec.seed, record["settings"])}
    out.mkdir(parents=True, exist_ok=True)
    # encoder.pt holds only what determines the weights, so an unchanged run rewrites identical bytes
    # and DVC reruns nothing downstream; timings live in train.json.
    stable = {k: v for k, v in record.items() if k not in ("wall_time_s", "resumed_from_step", "processes")}
    atomic_write_bytes(out / "encoder.pt", encoder_artifact(result, spec, {"provenance": stable}))
    recon_record = _end_of_run_checks(result, spec, ds, train_idx, record["processes"], log) if result.synth is not None else {}
    if result.pair_images is not None:
        atomic_write_bytes(out / "pairs.png", pair_grid_png(result.pair_images))
    final = result.history[-1] if result.history else None
    atomic_write_json(out / "train.json", {**record, **recon_record, "final": final, "monitor": result.monitor})
    log.info("wrote %s (%d steps, %.1f s)", out / "encoder.pt", result.steps, record["wall_time_s"])


def _end_of_run_checks(result, spec, ds, train_idx, processes: int, log) -> dict:
    """With the module: g(h)'s PSNR against the mean image (Fig. 4's yardstick) and, with pairs, the module's
    health (pairs/health.py); in the layout the run trained in (NHWC halves the CPU time of these forwards)."""
    from finesyn.pairs.health import end_of_run_health, end_subset
    from finesyn.pairs.reconstruction import reconstruction_psnr
    from finesyn.train import layout_for_eval

    test_idx, crop = ds.indices("test"), spec.crop_size
    with layout_for_eval((result.method, result.synth), spec.cfg.channels_last):
        recon = reconstruction_psnr(result.backbone, result.synth.decoder, ds.images, end_subset(test_idx), train_idx, crop)
        log.info(
            "g(h) on %d test images: PSNR %.2f dB, the mean training image %.2f dB (%+.2f dB)",
            recon["images"], recon["psnr_db"], recon["mean_image_psnr_db"], recon["gain_db"],
        )  # fmt: skip
        if spec.cfg.nu > 0 and processes > 1:
            log.info("module health: not measured under torchrun (the pair's train-mode forward synchronises BatchNorm across ranks)")
        if spec.cfg.nu == 0 or processes > 1:
            return {"reconstruction": recon}
        health = end_of_run_health(result, ds.images, ds.labels, train_idx, test_idx, spec.cfg, crop, len(ds.classes))
    pair, cls = health["pair"], health["class"]
    log.info(
        "module health: pair differs by %.3f px (two views %.3f, as many random dims %.3f), cos %.2f (two views %.2f); "
        "probe on g(h) %.1f %% vs real %.1f %%; |grad nu*L_Cp| / |grad L_C| %.2f",
        pair["pair_pixel_gap"], pair["views_pixel_gap"], pair["random_dims_pixel_gap"], pair["pair_cos"], pair["views_cos"],
        cls["decoded_top1"], cls["real_top1"], pair["grad_ratio_cp_to_c"],
    )  # fmt: skip
    return {"reconstruction": recon, "health": health}


if __name__ == "__main__":
    app()
