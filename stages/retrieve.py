"""retrieve: retrieval (Rank-k, mAP over the full ranking) and FAISS weighted kNN accuracy -> retrieval.json
(the numbers DVC compares) and retrieval.meta.json (protocol, timings, provenance)."""

import time
from pathlib import Path

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, progress_bar, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    features: Path = typer.Option(..., help="features file from extract (.npz)"),
    out: Path = typer.Option(..., help="retrieval.json to write (numbers only; its record goes to retrieval.meta.json next to it)"),
    seed: int = typer.Option(0, help="seed of the run (recorded)"),
    model: Path | None = typer.Option(None, help="pretrain output directory (encoder.pt): the features must be of its run"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same outputs
        from finesyn.artifacts import check_same_run, load_features
        from finesyn.eval.knn import knn_accuracy
        from finesyn.eval.retrieval import retrieval_metrics
        from finesyn.io import atomic_write_json
        from finesyn.metric_files import retrieval_keys, split_record
        from finesyn.paths import RunPaths
        from finesyn.provenance import provenance

        cfg, log = p.retrieve, stage_logging(None)
        f = load_features(features)
        if model is not None:
            check_same_run(features, f["encoder_run_id"], model)
        t0 = time.perf_counter()
        gallery = (f["train_features"], f["train_labels"]) if cfg.protocol == "train_gallery" else (None, None)
        with progress_bar(f"retrieve {'/'.join(out.parts[-3:-1])}", "query") as update:
            res = retrieval_metrics(
                f["test_features"], f["test_labels"], *gallery, ks=cfg.ks, map_at_r=cfg.map_at_r, engine=cfg.engine, progress=update
            )
        res["knn"] = knn_accuracy(
            f["train_features"], f["train_labels"], f["test_features"], f["test_labels"], ks=cfg.knn_ks, temperature=cfg.knn_temperature
        )
        res["search_time_s"] = round(time.perf_counter() - t0, 3)
        res["encoder_run_id"] = str(f["encoder_run_id"])
        res["feature"] = str(f["feature"])
        protocol = {"retrieval": res["protocol"], "map_definition": res.get("map_definition"), "knn": "cosine, weights exp(sim/T)"}
        res.update(provenance(seed, {"retrieve": cfg.model_dump(mode="json"), "encoder_run_id": res["encoder_run_id"]}, protocol=protocol))
        metrics, meta = split_record(res, retrieval_keys(cfg.ks, cfg.knn_ks, cfg.map_at_r), "retrieve")
        atomic_write_json(RunPaths.meta_of(out), meta)
        atomic_write_json(out, metrics)
        log.info("retrieval rank-1 %.2f%% mAP %.2f%% -> %s", res["rank1"], res["mAP"], out)


if __name__ == "__main__":
    app()
