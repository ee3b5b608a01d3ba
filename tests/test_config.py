"""Every suite error names the file, the key, the bad value and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from support import tiny_suite_table

from benchmark.config import find_suite, load_suite, parse_suite
from benchmark.errors import ConfigError

SUITE_PATH = Path("/suites/broken.toml")


def _broken(change) -> dict[str, Any]:
    table = copy.deepcopy(tiny_suite_table())
    change(table)
    return table


CASES = [
    ("unknown top key", lambda t: t.update(extra={}), ["'extra'", "allowed keys", "budget"]),
    ("missing budget", lambda t: t.pop("budget"), ["missing [budget]"]),
    ("missing epochs", lambda t: t["budget"].pop("epochs"), ["budget.epochs is missing"]),
    ("epochs zero", lambda t: t["budget"].update(epochs=0), ["budget", "epochs must be at least 1, got 0"]),
    (
        "finetune too big",
        lambda t: t["budget"].update(finetune_epochs=2),
        ["finetune_epochs must be in [0, epochs - 1] = [0, 1], got 2"],
    ),
    ("epochs a string", lambda t: t["budget"].update(epochs="ten"), ["budget.epochs = 'ten'", "expected int"]),
    ("bad optimizer", lambda t: t["training"].update(optimizer="rmsprop"), ["rmsprop", "sgd, adam"]),
    ("bad schedule", lambda t: t["training"].update(schedule="linear"), ["'linear'", "constant, cosine, step"]),
    ("unknown training key", lambda t: t["training"].update(lr_max=1.0), ["'lr_max'", "allowed keys"]),
    ("seeds not ints", lambda t: t["suite"].update(seeds=["a"]), ["suite.seeds = ['a']", "list of integers"]),
    ("seeds empty", lambda t: t["suite"].update(seeds=[]), ["suite.seeds is empty"]),
    ("no tasks", lambda t: t.pop("tasks"), ["missing [[tasks]]"]),
    (
        "unknown task",
        lambda t: t["tasks"][0].update(name="lenet9"),
        ["tasks[0].name = 'lenet9'", "lenet5-mnist-sample"],
    ),
    ("task bad key", lambda t: t["tasks"][0].update(clases=[0, 1]), ["tasks[0]", "'clases'", "classes"]),
    ("one class", lambda t: t["tasks"][0].update(classes=[1]), ["tasks[0].classes = [1]", "at least 2 distinct"]),
    ("bad fraction", lambda t: t["tasks"][0].update(val_fraction=1.5), ["val_fraction = 1.5", "between 0 and 1"]),
    ("model option", lambda t: t["tasks"][0].update(model_options={"depth": 3}), ["'depth'", "widths, width_mult"]),
    (
        "unknown method",
        lambda t: t["methods"].append({"name": "magic"}),
        ["methods[1]", "unknown method 'magic'", "dense"],
    ),
    ("method bad key", lambda t: t["methods"][0].update(parms={}), ["methods[0]", "'parms'", "params"]),
    ("method param", lambda t: t["methods"][0].update(params={"lam": 1.0}), ["methods[0] (dense)", "'lam'"]),
    ("name and pipeline", lambda t: t["methods"][0].update(pipeline=["dense", "dense"]), ["exactly one of name"]),
    ("sweep not list", lambda t: t["methods"][0].update(sweep={"x": 1}), ["sweep.x = 1", "non-empty list"]),
    ("no methods", lambda t: t.update(methods=[]), ["no [[methods]]"]),
    ("train_limit zero", lambda t: t["tasks"][0].update(train_limit=0), ["tasks[0].train_limit = 0", "positive"]),
    ("negative threads", lambda t: t["training"].update(threads=-1), ["threads must be 0", "got -1"]),
    ("typo in budget", lambda t: t["budget"].update(epoch=3), ["'epoch'", "allowed keys"]),
    ("old opset", lambda t: t.update(export={"opset": 13}), ["export.opset = 13", "17 or newer"]),
]


@pytest.mark.parametrize("label, change, fragments", CASES, ids=[c[0] for c in CASES])
def test_config_error_message(label: str, change, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_suite(_broken(change), SUITE_PATH)
    message = str(error.value)
    assert str(SUITE_PATH) in message
    for fragment in fragments:
        assert fragment in message


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[suite\nname = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML") as error:
        load_suite(str(path))
    assert str(path) in str(error.value)


def test_unknown_suite_lists_builtin() -> None:
    with pytest.raises(ConfigError, match="default"):
        find_suite("no-such-suite")


def test_builtin_suites_parse() -> None:
    from benchmark.config import SUITES_DIR

    for path in SUITES_DIR.glob("*.toml"):
        suite = load_suite(str(path))
        assert suite.methods
        quick = load_suite(str(path), quick=True)
        assert quick.budget.epochs <= suite.budget.epochs
        assert len(quick.seeds) == 1


def test_quick_mode_shrinks(tmp_path: Path) -> None:
    table = tiny_suite_table(seeds=(0, 1, 2), epochs=10, finetune_epochs=3, train_limit=3000)
    table["methods"] = [{"name": "dense"}]
    suite = parse_suite(table, tmp_path / "s.toml", quick=True)
    assert suite.budget.epochs == 2
    assert suite.budget.finetune_epochs == 1
    assert suite.seeds == (0,)
    assert suite.tasks[0].train_limit == 1000
    assert suite.quick


def test_default_suite_covers_every_method() -> None:
    from methods.registry import load_methods

    suite = load_suite("default")
    listed = {stage for entry in suite.methods for stage in entry.stages}
    assert set(load_methods()) <= listed


def test_sweep_labels_keep_default_value(tmp_path: Path) -> None:
    from benchmark.runner import expand_suite
    from methods.registry import get_method

    default = get_method("l1l2.across").Params().lam
    table = tiny_suite_table([{"name": "l1l2.across", "sweep": {"lam": [default, default * 10]}}])
    labels = [run.build_method().label() for run in expand_suite(parse_suite(table, tmp_path / "s.toml"))]
    assert labels == [f"l1l2.across(lam={default})", f"l1l2.across(lam={default * 10})"]


def test_class_subset_error_names_task(tmp_path: Path) -> None:
    from benchmark.runner import SuiteRunner

    table = tiny_suite_table()
    table["tasks"][0]["classes"] = [0, 1, 12]
    suite = parse_suite(table, tmp_path / "classes.toml")
    with pytest.raises(ConfigError) as error:
        SuiteRunner(suite, tmp_path / "out").tasks_available()
    assert "classes.toml: tasks[0] (lenet5-mnist-sample)" in str(error.value)
    assert "12 is not a class" in str(error.value)
