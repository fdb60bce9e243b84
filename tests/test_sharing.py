"""Sharing results: a DVC remote and a git remote carry the data, the model, experiments and the model artifact."""

from pathlib import Path

import pytest
from conftest import PATHS, Project, make_project, ran, tiny_params, write_mnist

pytestmark = pytest.mark.slow

ARTIFACT = "alexnet-mnist"  # the model's name under artifacts: in dvc.yaml
# what a teammate gets from the remotes: DVC-cached outputs and git-tracked metrics and plots
SHARED = [
    PATHS["train_set"],
    PATHS["val_set"],
    PATHS["test_set"],
    PATHS["model"],
    PATHS["history"],
    PATHS["train_metrics"],
    PATHS["eval_metrics"],
    PATHS["confusion"],
    PATHS["curves_png"],
]


def contents(root: Path) -> dict[str, bytes]:
    """Every file of the workspace but git's and DVC's own, by path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in (".git", ".dvc")
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A reproduced project pushed to a bare git repo and a local-folder DVC remote, and a fresh clone
    of it after `dvc pull`, with no MNIST source: it can only get the data from the remote."""
    tmp = tmp_path_factory.mktemp("sharing")
    checksums = write_mnist(tmp / "mirror")
    project = make_project(tmp / "project", tmp / "mirror", checksums, tiny_params())
    project.dvc("repro")
    project.run("git", "init", "-q", "--bare", str(tmp / "origin.git"))
    project.run("git", "remote", "add", "origin", str(tmp / "origin.git"))
    project.dvc("remote", "add", "-d", "store", str(tmp / "store"))
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "trained, with a default remote")
    project.run("git", "push", "-q", "origin", "HEAD")
    project.dvc("push")

    project.run("git", "clone", "-q", str(tmp / "origin.git"), str(tmp / "clone"))
    clone = Project(tmp / "clone", tmp / "no-mirror")  # nothing to download from, if something reran
    clone.dvc("pull")
    project.tmp, project.clone = tmp, clone
    return project


def test_a_fresh_clone_pulls_everything_and_reruns_nothing(shared):
    clone = shared.clone
    for path in SHARED:
        assert (clone.path / path).read_bytes() == (shared.path / path).read_bytes(), path
    assert clone.dvc("status").stdout.strip() == "Data and pipelines are up to date."
    assert ran(clone.dvc("repro").stdout) == []
    assert not (clone.path / PATHS["checkpoint"]).exists()  # nothing trained here


def test_the_model_artifact_downloads_from_the_git_remote(shared):
    """`dvc artifacts get` finds the artifact's latest version (an annotated `name@vX.Y.Z` git tag,
    GTO's format) in the git repo, reads its path from dvc.yaml and fetches it from the default remote."""
    elsewhere = Project(shared.tmp / "elsewhere", shared.tmp / "no-mirror")  # outside any repo
    elsewhere.path.mkdir()
    origin, out = str(shared.tmp / "origin.git"), str(elsewhere.path / "model.pt")
    untagged = elsewhere.dvc("artifacts", "get", origin, ARTIFACT, "-o", out, check=False)
    assert untagged.returncode == 1 and f"Unable to find artifact '{ARTIFACT}'" in untagged.stderr

    shared.run("git", "tag", "-a", f"{ARTIFACT}@v1.0.0", "-m", "first model")
    shared.run("git", "push", "-q", "origin", f"{ARTIFACT}@v1.0.0")
    elsewhere.dvc("artifacts", "get", origin, ARTIFACT, "-o", out)
    assert Path(out).read_bytes() == (shared.path / PATHS["model"]).read_bytes()


def test_push_and_pull_without_a_usable_remote_fail_clearly_and_lose_nothing(shared):
    before = contents(shared.path)
    for command in ("push", "pull"):
        missing = shared.dvc(command, "-r", "nowhere", check=False)
        assert missing.returncode == 1 and "remote 'nowhere' doesn't exist" in missing.stderr, missing.stderr

    blocker = shared.tmp / "a-file"  # a remote folder inside a regular file cannot be made, even by root
    blocker.write_text("")
    shared.dvc("remote", "add", "--local", "blocked", str(blocker / "store"))
    blocked = shared.dvc("push", "-r", "blocked", check=False)
    assert blocked.returncode != 0 and str(blocker / "store") in blocked.stderr, blocked.stderr

    # a remote whose folder is gone: a clone that needs its data gets a list of what is missing
    other = Project(shared.tmp / "other-clone", shared.tmp / "no-mirror")
    shared.run("git", "clone", "-q", str(shared.tmp / "origin.git"), str(other.path))
    other.dvc("remote", "add", "--local", "gone", str(shared.tmp / "gone"))
    gone = other.dvc("pull", "-r", "gone", check=False)
    assert gone.returncode == 1 and "failed to pull data from the cloud" in gone.stderr, gone.stderr
    assert PATHS["model"] in gone.stderr
    assert (other.path / PATHS["eval_metrics"]).read_bytes() == (shared.path / PATHS["eval_metrics"]).read_bytes()

    assert contents(shared.path) == before
    assert shared.dvc("status").stdout.strip() == "Data and pipelines are up to date."


def test_an_experiment_travels_through_the_remotes(shared):
    shared.dvc("exp", "run", "-n", "lr-high", "-S", "train.lr=0.002")
    shared.dvc("exp", "push", "origin", "lr-high")
    clone = shared.clone
    clone.dvc("exp", "pull", "origin", "lr-high")
    clone.dvc("exp", "apply", "lr-high")
    assert (clone.path / "params.yaml").read_text() == (shared.path / "params.yaml").read_text()
    for path in (PATHS["eval_metrics"], PATHS["model"], PATHS["history"]):
        assert (clone.path / path).read_bytes() == (shared.path / path).read_bytes(), path
    assert clone.dvc("status").stdout.strip() == "Data and pipelines are up to date."
    assert not (clone.path / PATHS["checkpoint"]).exists()  # it came through the remotes, not trained here
