r"""Fidelity check: the official PyTorch code (CityU-MLO/DualOptim, ``ImageClassification``) on a
project setting, beside the project's own models.

The reference's training, unlearning and MIA functions are imported from a checkout of its
repository and run as they are; this file only supplies what its drivers would: the setting's
pool, forget set and test set as in-memory loaders, a width-``w`` ResNet-18 built from the
reference's own ``ResNet`` class, ``argparse`` defaults from its own parser, CPU stand-ins for
``.cuda()``, and inert stand-ins for modules it imports but never calls here (``torchvision``,
Hugging Face ``datasets``, ``lion_pytorch``, ``bitsandbytes``, ``lmdb``, ``loralib``).

Three sub-commands, in two environments:

  # the project's environment: the split of the project's setting, as arrays
  .venv/bin/python -m experiments.reference_code export --setting fashion_mnist_small --seed 1 \
      --out DIR
  # an environment with torch and scikit-learn: pretraining (the reference's per-epoch rate,
  # lr_e = lr (1 + cos(pi (e - 10) / 10)) / 2), then RT and RL (sgd, dual) from its final and from
  # its best-test-accuracy epoch; writes DIR/reference.json after every stage and resumes
  # from it (and from DIR/pretraining.pt, the last finished pretraining epoch)
  TORCH_PYTHON experiments/reference_code.py run --reference REPO --data DIR/data.npz --out DIR
  # the project's environment: the same summaries of the project's trained models
  .venv/bin/python -m experiments.reference_code ours --config fashion_mnist_small_refschedule \
      --models OUT/checkpoints --seed 1 --out DIR

For every model the summary holds UA / RA / TA and the paper's MIA (a balanced logistic
regression on softmax entropy, retain vs test, applied to the forget set), the entropy quantiles
of each set (the MIA classifier's inputs) and the classifier's entropy threshold.
"""

import argparse
import copy
import functools
import importlib.abc
import importlib.machinery
import json
import pathlib
import sys
import time
import types

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
RECIPE = {  # fashion_mnist_small (experiments/configs.py), in the reference's argument names
  "arch": "resnet18",
  "width": 16,
  "epochs": 30,
  "batch_size": 128,
  "lr": 0.1,
  "momentum": 0.9,
  "weight_decay": 5e-4,
  "unlearn_epochs": 10,
  "retain_lr": 0.01,
  "forget_lr": {"sgd": 0.002, "dual": 1e-4},
  "seed": 1,
}


def entropy_summary(entropies: dict[str, np.ndarray]) -> dict:
  """Quantiles of each set's entropies and the threshold of the paper's MIA classifier."""
  from sklearn.linear_model import LogisticRegression

  x = np.concatenate([entropies["retain"], entropies["test"]])[:, None]
  y = np.concatenate([np.ones(len(entropies["retain"])), np.zeros(len(entropies["test"]))])
  clf = LogisticRegression(class_weight="balanced", solver="lbfgs").fit(x, y)
  return {
    "quantiles": list(QUANTILES),
    "entropy": {k: np.quantile(v, QUANTILES).tolist() for k, v in entropies.items()},
    "mean_entropy": {k: float(v.mean()) for k, v in entropies.items()},
    "threshold": float(-clf.intercept_[0] / clf.coef_[0, 0]),
    "MIA": float(100 * clf.predict(entropies["forget"][:, None]).mean()),
  }


# --- export and ours: the project's side ------------------------------------------------------


def export(args) -> None:
  from dualoptim_jax.data.settings import load_setting

  setting = load_setting(args.setting, args.data_root)
  split = setting.split(args.seed)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(
    out / "data.npz",
    forget_images=split.forget.images,
    forget_labels=split.forget.labels,
    retain_images=split.retain.images,
    retain_labels=split.retain.labels,
    test_images=split.test.images,
    test_labels=split.test.labels,
    pool_images=setting.pool.images,
    pool_labels=setting.pool.labels,
    mean=np.asarray(setting.pool.mean),
    std=np.asarray(setting.pool.std),
  )
  print(f"wrote {out / 'data.npz'}")


def ours(args) -> None:
  from dualoptim_jax.data.batching import eval_batches
  from dualoptim_jax.data.settings import load_setting
  from dualoptim_jax.tasks.classification import metrics
  from dualoptim_jax.tasks.classification.run import pretrain
  from experiments.configs import CONFIGS

  config = CONFIGS[args.config]
  setting = load_setting(config.setting, args.data_root)
  split = setting.split(args.seed)
  models = pathlib.Path(args.models)
  report = {"config": config.name, "seed": args.seed, "models": {}}
  for name, data, directory, seed, schedule in (
    ("original", setting.pool, models / "original", 0, config.original_schedule),
    ("RT", split.retain, models / f"retrain-seed{args.seed}", args.seed, "cosine"),
  ):
    if not directory.is_dir():
      print(f"skipping {name}: no checkpoints in {directory}")
      continue
    graphdef, state, _ = pretrain(config, data, directory, seed, name, None, schedule)
    probs, accuracy = {}, {}
    for key, part in (("forget", split.forget), ("retain", split.retain), ("test", split.test)):
      logits, labels = metrics.predict_logits(
        functools.partial(metrics.predict, graphdef, state.params, state.model_state),
        eval_batches(part, 500),
      )
      probs[key] = metrics.softmax(logits)
      accuracy[key] = metrics.accuracy(logits, labels)
    report["models"][name] = {
      "UA": 100 - accuracy["forget"],
      "RA": accuracy["retain"],
      "TA": accuracy["test"],
      **entropy_summary({k: metrics.entropy(p) for k, p in probs.items()}),
    }
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"ours_{config.name}.json").write_text(json.dumps(report, indent=1))
  for name, model in report["models"].items():
    print(name, {m: round(model[m], 2) for m in ("UA", "RA", "TA", "MIA")})


# --- run: the reference's side (torch) --------------------------------------------------------


class _Inert(types.ModuleType):
  """A module, class or function that the reference imports but never uses here."""

  def __init__(self, name="inert", *args, **kwargs):
    super().__init__(str(name))
    self.__path__ = []

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _Inert(f"{self.__name__}.{name}")

  def __call__(self, *args, **kwargs):
    return _Inert(f"{self.__name__}()")

  def __mro_entries__(self, bases):
    return (object,)


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  def __init__(self, roots):
    self.roots = set(roots)

  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in self.roots:
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    return _Inert(spec.name)

  def exec_module(self, module):
    pass


def _import_reference(repo: pathlib.Path):
  import torch

  code = repo / "ImageClassification"
  if not (code / "unlearn" / "RL.py").is_file():
    raise SystemExit(f"{repo} is not a checkout of CityU-MLO/DualOptim (no ImageClassification).")
  inert = ["datasets", "lion_pytorch", "bitsandbytes", "lmdb", "loralib"]
  try:
    import torchvision  # noqa: F401
  except Exception:  # absent, or a build that does not match torch: the reference never calls it
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
      del sys.modules[name]
    inert.append("torchvision")
  sys.meta_path.insert(0, _InertFinder(inert))
  sys.path.insert(0, str(code))
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  torch.cuda.set_device = lambda *a, **k: None
  import arg_parser
  import evaluation
  import models  # noqa: F401 (loads models.ResNet)
  import unlearn
  import utils
  from trainer import train, validate

  namespace = {"arg_parser": arg_parser, "evaluation": evaluation, "unlearn": unlearn}
  return types.SimpleNamespace(**namespace, utils=utils, train=train, validate=validate)


def _narrow_resnet18(ref, width: int, num_classes: int, mean, std):
  """The reference's CIFAR ResNet-18 (3x3 stem, no max-pool) with stage widths w, 2w, 4w, 8w."""
  import torch.nn as nn

  resnet = sys.modules["models.ResNet"]  # the module (the package re-exports its classes)

  class Narrow(resnet.ResNet):
    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
      if planes == 64:  # the first stage: its input is the (narrow) stem
        self.inplanes = width
      return super()._make_layer(block, planes * width // 64, blocks, stride, dilate)

  model = Narrow(resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
  model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
  nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
  model.bn1 = nn.BatchNorm2d(width)
  model.fc = nn.Linear(8 * width, num_classes)
  model.normalize = resnet.NormalizeByChannelMeanStd(
    mean=[float(m) for m in mean], std=[float(s) for s in std]
  )
  return model


class _RecordingLoss:
  """Cross-entropy that keeps each call's value (the per-epoch training loss)."""

  def __init__(self):
    import torch.nn as nn

    self.loss, self.values = nn.CrossEntropyLoss(), []

  def __call__(self, logits, labels):
    value = self.loss(logits, labels)
    self.values.append(float(value.detach()))
    return value

  def take(self) -> float:
    mean, self.values = float(np.mean(self.values)), []
    return mean


def run(args) -> None:
  import torch
  from torch.utils.data import DataLoader, TensorDataset

  ref = _import_reference(pathlib.Path(args.reference))
  arrays = np.load(args.data)
  recipe = dict(RECIPE, epochs=args.epochs, unlearn_epochs=args.unlearn_epochs)

  def tensors(name):
    images = torch.tensor(arrays[f"{name}_images"], dtype=torch.float32).permute(0, 3, 1, 2) / 255
    return TensorDataset(images, torch.tensor(arrays[f"{name}_labels"], dtype=torch.long))

  sets = {name: tensors(name) for name in ("pool", "forget", "retain", "test")}
  argv, sys.argv = sys.argv, sys.argv[:1]
  base = ref.arg_parser.parse_args()  # the reference's defaults
  sys.argv = argv
  base.dataset = "cifar10"  # the reference's forget-then-retain RL loop (also taken by `dual`)
  base.num_classes, base.print_freq, base.save_dir = 10, 10**9, str(pathlib.Path(args.out) / "tmp")
  for key in ("arch", "batch_size", "lr", "momentum", "weight_decay", "seed"):
    setattr(base, key, recipe[key])
  pathlib.Path(base.save_dir).mkdir(parents=True, exist_ok=True)

  def loader(name, shuffle):
    ref.utils.setup_seed(recipe["seed"])
    return DataLoader(sets[name], batch_size=recipe["batch_size"], shuffle=shuffle)

  def summary(model) -> dict:
    """UA / RA / TA and the entropy MIA from one pass of the reference's `collect_prob` per set
    (its MIA fits the classifier `entropy_summary` fits, on the reference's `entropy`)."""
    entropies, accuracy = {}, {}
    for key in ("forget", "retain", "test"):
      probs, labels = ref.evaluation.MIA.collect_prob(loader(key, False), model)
      accuracy[key] = 100 * float((probs.argmax(-1) == labels).float().mean())
      entropies[key] = ref.evaluation.MIA.entropy(probs).numpy().astype(np.float64)
    return {
      "UA": 100 - accuracy["forget"],
      "RA": accuracy["retain"],
      "TA": accuracy["test"],
      **entropy_summary(entropies),
    }

  def new_model():
    ref.utils.setup_seed(recipe["seed"])
    return _narrow_resnet18(ref, recipe["width"], 10, arrays["mean"], arrays["std"])

  out = pathlib.Path(args.out)
  saved, resume = out / "reference.json", out / "pretraining.pt"
  report = {"recipe": recipe, "epochs": [], "models": {}, "seconds": {}}
  if saved.is_file():  # a stopped run: keep its finished stages
    report = json.loads(saved.read_text())
    if report["recipe"] != json.loads(json.dumps(recipe)):
      raise SystemExit(f"{saved} holds a run of another recipe; use another --out.")

  def save(key=None):  # after every stage, so that a stopped run keeps what it finished
    if key is not None:
      print(key, {m: round(report["models"][key][m], 2) for m in ("UA", "RA", "TA", "MIA")})
    saved.write_text(json.dumps(report, indent=1))

  model = new_model()
  optimizer = torch.optim.SGD(
    model.parameters(),
    recipe["lr"],
    momentum=recipe["momentum"],
    weight_decay=recipe["weight_decay"],
  )
  done, best, best_acc, seconds = 0, None, -1.0, 0.0
  if resume.is_file():  # pretraining resumes after its last finished epoch
    state = torch.load(resume, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    done, best, best_acc, seconds = (
      state["epoch"],
      state["best"],
      state["best_acc"],
      state["seconds"],
    )
  if len(report["epochs"]) != done:  # the saved stages came from another pretraining: drop them
    report = {"recipe": recipe, "epochs": report["epochs"][:done], "models": {}, "seconds": {}}
  criterion, train_loader, test_loader = (
    _RecordingLoss(),
    loader("pool", True),
    loader("test", False),
  )
  for epoch in range(done, recipe["epochs"]):
    started = time.time()
    lr = recipe["lr"] * (1 + np.cos(np.pi * (epoch - 10) / 10)) / 2  # main_train.py's rate
    for group in optimizer.param_groups:
      group["lr"] = lr
    train_acc = float(ref.train(train_loader, model, criterion, optimizer, epoch, base))
    test_acc = float(ref.validate(test_loader, model, torch.nn.CrossEntropyLoss(), base))
    row = {"epoch": epoch + 1, "lr": lr, "loss": criterion.take()}
    report["epochs"].append({**row, "train_acc": train_acc, "test_acc": test_acc})
    print(report["epochs"][-1], flush=True)
    if test_acc > best_acc:
      best, best_acc = copy.deepcopy(model.state_dict()), test_acc
    seconds += time.time() - started
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best": best}
    save()  # before the epoch's checkpoint, so that the report never lags behind it
    torch.save({**state, "epoch": epoch + 1, "best_acc": best_acc, "seconds": seconds}, resume)
  report["seconds"]["pretraining"] = seconds
  originals = {"final": model.state_dict(), "best": best}
  report["best_epoch"] = 1 + int(np.argmax([e["test_acc"] for e in report["epochs"]]))

  def unlearned(name, optim, forget_lr, retain_lr, epochs, start):
    model = new_model()
    if start is not None:
      model.load_state_dict(start)
    loaders = {
      "retain": loader("retain", True),
      "forget": loader("forget", True),
      "val": loader("test", False),
      "test": loader("test", False),
    }
    settings = copy.copy(base)
    settings.unlearn, settings.optim, settings.unlearn_epochs = name, optim, epochs
    settings.unlearn_lr, settings.retain_lr = forget_lr, retain_lr
    began = time.time()
    ref.unlearn.get_unlearn_method(name)(loaders, model, torch.nn.CrossEntropyLoss(), settings)
    return model, time.time() - began

  for label, state in originals.items():
    if f"original ({label})" not in report["models"]:
      model = new_model()
      model.load_state_dict(state)
      report["models"][f"original ({label})"] = summary(model)
      save(f"original ({label})")
  if "RT" not in report["models"]:
    model, seconds = unlearned("retrain", "sgd", recipe["lr"], recipe["lr"], recipe["epochs"], None)
    report["models"]["RT"], report["seconds"]["RT"] = summary(model), seconds
    save("RT")
  for label, state in originals.items():
    for optim, forget_lr in recipe["forget_lr"].items():
      key = f"RL {optim} ({label})"
      if key not in report["models"]:
        model, seconds = unlearned(
          "RL", optim, forget_lr, recipe["retain_lr"], recipe["unlearn_epochs"], state
        )
        report["models"][key], report["seconds"][key] = summary(model), seconds
        save(key)
  print(f"wrote {out / 'reference.json'}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("export", help="write the setting's split as data.npz")
  p.add_argument("--setting", default="fashion_mnist_small")
  p.add_argument("--seed", type=int, default=1)
  p.add_argument("--data-root", default=None)
  p.add_argument("--out", required=True)
  p = sub.add_parser("run", help="the reference code on data.npz (needs torch)")
  p.add_argument("--reference", required=True, help="a checkout of CityU-MLO/DualOptim")
  p.add_argument("--data", required=True, help="data.npz from `export`")
  p.add_argument("--epochs", type=int, default=RECIPE["epochs"])
  p.add_argument("--unlearn-epochs", type=int, default=RECIPE["unlearn_epochs"])
  p.add_argument("--out", required=True)
  p = sub.add_parser("ours", help="the same summaries of the project's trained models")
  p.add_argument("--config", default="fashion_mnist_small_refschedule")
  p.add_argument("--models", required=True, help="the run's checkpoints/ directory")
  p.add_argument("--seed", type=int, default=1)
  p.add_argument("--data-root", default=None)
  p.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  {"export": export, "run": run, "ours": ours}[args.command](args)


if __name__ == "__main__":
  main()
