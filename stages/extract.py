"""extract: frozen encoder (BN in eval mode), one deterministic centre-crop view -> features .npz
with train/test feature matrices (float32), labels and image ids, shared by probe, retrieve and kNN."""

import io
import time
from pathlib import Path
from typing import Any

import _local_src  # noqa: F401,I001  (this checkout's src/ before any installed finesyn)
import typer

from finesyn.cli import load, progress_bar, stage_logging, user_errors
from finesyn.io import output_lock

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
def main(
    dataset: str = typer.Option(..., help="name under `datasets:`"),
    data: Path = typer.Option(..., help="prepared cache directory"),
    model: Path = typer.Option(..., help="pretrain output directory (encoder.pt)"),
    out: Path = typer.Option(..., help="features file to write (.npz)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
) -> None:
    p = load(params)
    with user_errors(), output_lock(out):  # refuse a concurrent run writing the same outputs
        import numpy as np

        from finesyn.config import ParamsError, dataset_config
        from finesyn.data.prepared import open_cache
        from finesyn.eval.features import extract_features, load_encoder
        from finesyn.io import atomic_write_bytes

        dataset_config(p, dataset)
        log = stage_logging(None)
        ds = open_cache(data)
        backbone, projector, state = load_encoder(model)
        if p.extract.feature == "projector" and projector is None:
            raise ParamsError(f"extract.feature: 'projector', but {model / 'encoder.pt'} has none (method {state['method']!r})")
        head = projector if p.extract.feature == "projector" else None
        t0 = time.perf_counter()
        arrays: dict[str, Any] = {
            "num_classes": np.array(len(ds.classes)),
            "encoder_run_id": np.array(state["run_id"]),
            "feature": np.array(p.extract.feature),
        }
        splits = {split: ds.indices(split) for split in ("train", "test")}
        n_all = sum(len(idx) for idx in splits.values())
        with progress_bar(f"extract {model.parent.name}/{model.name}", "img") as update:
            offset = 0
            for split, idx in splits.items():

                def progress(done: int, _total: int, offset: int = offset) -> None:  # a def: mypy types no lambda with a default
                    update(offset + done, n_all)

                arrays[f"{split}_features"] = extract_features(
                    backbone,
                    ds.images,
                    idx,
                    p.datasets[dataset].crop_size,
                    p.extract.batch_size,
                    p.pretrain.device,
                    head,
                    channels_last=p.pretrain.channels_last,
                    progress=progress,
                )
                arrays[f"{split}_labels"] = ds.labels[idx]
                arrays[f"{split}_ids"] = np.asarray([ds.ids[i] for i in idx])
                offset += len(idx)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(out, buf.getvalue())
        n = len(arrays["train_labels"]) + len(arrays["test_labels"])
        log.info("extracted %d x %d features in %.1f s -> %s", n, arrays["train_features"].shape[1], time.perf_counter() - t0, out)


if __name__ == "__main__":
    app()
