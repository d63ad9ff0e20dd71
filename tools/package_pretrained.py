"""Package a finished model_dir as a pretrained model shipped in tf_lvae/storage/pretrained_models/.

    python tools/package_pretrained.py --model_dir=/root/runs/scaled/authors_lvae \
        --name=mnist_lvae5 --evaluation=EVAL_K5000.json --evaluation=EVAL_K1000.json \
        --command="python -m tf_lvae.train ..."

The weights carry the population batch-norm statistics of the training split (computed here,
as `tf_lvae.evaluate` does); the card records the config, epochs, the test bounds of the given
`tf_lvae.evaluate` JSON files (which must have used population statistics), the machine and
the command that trained it.
"""
import argparse
import json
import pathlib
import platform

from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.storage import model_zoo
from tf_lvae.storage import checkpoints


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--evaluation", action="append", default=[],
                        help="a tf_lvae.evaluate result JSON of this model (repeatable)")
    parser.add_argument("--command", default="", help="the training command, for the card")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()
    model, config, epochs = checkpoints.load_model(args.model_dir)
    used = batch_norm_statistics.for_evaluation(model, config, "population", args.data_dir)
    bounds = []
    for path in args.evaluation:
        result = json.loads(pathlib.Path(path).read_text())
        if result.get("bn_statistics") != used or result.get("epochs_trained") != epochs:
            raise SystemExit(f"{path} evaluated {result.get('epochs_trained')} epochs with "
                             f"{result.get('bn_statistics')} statistics; the model has {epochs} "
                             f"epochs and {used}")
        bounds.append({k: result[k] for k in ("split", "num_examples", "iw_samples", "elbo",
                                              "iw_bound", "active_units_per_layer", "seed")
                       if k in result})
    card = dict(name=args.name, model_spec=json.loads(model.spec.to_json()), config=config,
                epochs=epochs, bn_statistics=used, test_bounds=bounds,
                training_command=args.command, machine=platform.processor() or platform.machine(),
                source_model_dir=str(pathlib.Path(args.model_dir).resolve()))
    path = model_zoo.save(model, args.name, card)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
