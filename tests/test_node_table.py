"""The node table, the topic table, the launch files and ``nodes/`` agree.

The node table (:mod:`perception.system.node_table`) is the one place the node graph is
written; these checks keep the rest of the tree from drifting away from it.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest
import yaml

from perception.bus import schema
from perception.node.config import ConfigError
from perception.system.launch import load_launch
from perception.system.node_table import EXTERNAL_TOPICS, NODE_TYPES, NODES, stages

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.yaml"))


def _produced() -> set[str]:
    return {t for n in NODES for t in n.outputs} | set(EXTERNAL_TOPICS)


def _launch_nodes(path: Path) -> list[tuple[str, str, dict]]:
    """(name, type, params) of every node a launch file names, enabled or not."""
    doc = yaml.safe_load(path.read_text())
    return [(str(name), str((p or {}).get("type", name)), p or {}) for name, p in doc["nodes"].items()]


def test_every_topic_of_the_table_is_in_the_topic_table_and_every_input_has_a_producer() -> None:
    known = {t.name for t in schema.TOPICS}
    for n in NODES:
        assert set(n.outputs) <= known, f"{n.name}: outputs {set(n.outputs) - known} not in schema.TOPICS"
        assert set(n.inputs) <= known, f"{n.name}: inputs {set(n.inputs) - known} not in schema.TOPICS"
        assert not set(n.inputs) - _produced(), f"{n.name}: no node sends {set(n.inputs) - _produced()}"
    # every topic of the topic table is sent by some node (or by the supervisor)
    assert known == _produced()
    assert EXTERNAL_TOPICS == {"status": "the supervisor"}


def test_ground_truth_comes_from_the_replay_alone() -> None:
    assert [n.name for n in NODES if "gt" in n.outputs] == ["replay"]


def test_every_node_type_has_its_entry_point_and_every_entry_point_a_row() -> None:
    scripts = {p.stem for p in (ROOT / "nodes").glob("*.py")} - {"__init__"}
    assert scripts == set(NODE_TYPES)
    for name in scripts:
        tree = ast.parse((ROOT / "nodes" / f"{name}.py").read_text())
        calls = [
            c.args[0].value
            for c in ast.walk(tree)
            if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "run_node" and c.args
        ]
        assert calls == [name], f"nodes/{name}.py must call run_node({name!r})"
        assert NODE_TYPES[name].module == f"nodes.{name}"


def test_every_row_resolves_and_declares_what_its_logic_has() -> None:
    for n in NODES:
        assert isinstance(n.config_class(), type), n.name
        factory = n.make_logic()
        cls = factory if isinstance(factory, type) else typing.get_type_hints(factory)["return"]
        # the calls the loop makes: prepare and close are methods of the logic; claim is an
        # attribute it makes in __init__ (the loop sets it)
        assert n.caps.prepare == callable(getattr(cls, "prepare", None)), n.name
        assert n.caps.close == callable(getattr(cls, "close", None)), n.name
        assert n.caps.claim == ("self.claim" in inspect.getsource(cls.__init__)), n.name
        # declared in the table alone, not as attributes of the logic
        assert not any(hasattr(cls, f) for f in ("keep_all", "frame_views", "checks_frame_views", "relays"))
        assert tuple(getattr(cls, "inputs", ())) == n.inputs or n.inputs_key, n.name
        assert tuple(cls.outputs) == n.outputs, n.name


def test_checks_frame_views_only_with_frame_views() -> None:
    assert all(n.caps.frame_views for n in NODES if n.caps.checks_frame_views)


def test_stages_are_the_chain_from_frames_to_tracks() -> None:
    assert stages() == ("preprocess", "segmenter", "tracker")
    chain = [NODE_TYPES[s] for s in stages()]
    for a, b in zip(chain, chain[1:], strict=False):
        assert set(a.outputs) & set(b.inputs)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_name_table_types_whose_inputs_are_produced(path: Path) -> None:
    nodes = _launch_nodes(path)
    assert nodes
    for name, type_name, params in nodes:
        assert type_name in NODE_TYPES, f"{path.name}: node {name!r}: type {type_name!r} not in the node table"
        row = NODE_TYPES[type_name]
        inputs = tuple(params.get(row.inputs_key, ())) if row.inputs_key else row.inputs
        missing = set(inputs) - _produced()
        assert not missing, f"{path.name}: node {name!r} takes {missing}, which no node sends"


def test_launch_file_naming_a_type_the_table_lacks_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  tracker: {}\n  segmentor: {}\n")
    with pytest.raises(ConfigError, match=r"node 'segmentor': unknown node type 'segmentor'; known types: camera"):
        load_launch(bad)
    bad.write_text("nodes:\n  fast: {type: yolo}\n")
    with pytest.raises(ConfigError, match=r"node 'fast': unknown node type 'yolo'"):
        load_launch(bad)


@pytest.mark.parametrize("type_name", [n.name for n in NODES if n.inputs_key])
def test_launch_file_naming_a_topic_the_table_lacks_is_rejected(tmp_path: Path, type_name: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"nodes:\n  {type_name}:\n    topics: [tracks, track]\n")
    with pytest.raises(ConfigError, match=rf"node '{type_name}'.*'track'"):
        load_launch(bad)
