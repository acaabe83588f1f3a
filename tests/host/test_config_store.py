"""`persistence true` with a persistence_location folder that is not there: `ubroker run`
(the unix entry, which makes no folders) refuses to start in one line that names the key and
the folder, exit status 2 and no traceback, instead of stopping at its first store file with
a bare ENOENT; `ubroker config --check` (board unix) reports it at its line. On a board
main.py makes the folder, so a board's --check does not ask for it on the host."""

import subprocess

from conftest import UBROKER, free_port


def ub(*args, timeout=60):
    return subprocess.run([UBROKER] + list(args), capture_output=True, text=True, timeout=timeout)


def store_config(tmp_path, where):
    path = tmp_path / "store.conf"
    path.write_text("listener %d 127.0.0.1\npersistence true\npersistence_location %s\n" % (free_port(), where))
    return path


def test_run_refuses_a_missing_store_folder_in_one_line(tmp_path):
    where = tmp_path / "no" / "such"
    r = ub("run", "--board", "esp32", "--config", str(store_config(tmp_path, where)))
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out and "ENOENT" not in out, out
    lines = [ln for ln in out.splitlines() if "persistence_location" in ln]
    assert lines == ["ubroker: cannot start: persistence_location %s does not exist (persistence true): "
                     "create the folder or name another" % where], out
    assert not where.exists()


def test_run_refuses_a_store_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    r = ub("run", "--board", "esp32", "--config", str(store_config(tmp_path, tmp_path / "f")))
    assert r.returncode == 2 and "persistence_location %s is not a folder" % (tmp_path / "f") in r.stdout + r.stderr


def test_check_reports_the_missing_folder_at_its_line(tmp_path):
    where = tmp_path / "nowhere"
    path = store_config(tmp_path, where)
    r = ub("config", "--check", str(path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "%s:3: persistence_location %s does not exist (persistence true)" % (path, where) in r.stderr
    # on a board main.py makes the folder: nothing to find on the host
    assert ub("config", "--board", "esp32", "--check", str(path)).returncode == 0


def test_an_existing_store_folder_starts_and_serves(broker_factory, tmp_path):
    """The same config with the folder made: --check passes and the broker (its os.stat in
    the MicroPython unix port) starts with the store and serves a client."""
    where = tmp_path / "store"
    where.mkdir()
    port = free_port()
    config = "listener %d 127.0.0.1\npersistence true\npersistence_location %s/\n" % (port, where)
    (tmp_path / "ok.conf").write_text(config)
    assert ub("config", "--check", str(tmp_path / "ok.conf")).returncode == 0
    b = broker_factory(config=config, port=port)
    c = b.raw()
    assert c.connect("store-ok") == (0, 0)
    c.close()
    assert any(n.name.startswith("ubroker.") for n in where.iterdir())  # the store's generation


def test_data_flag_makes_its_folder_whatever_the_config_says(broker_factory, tmp_path):
    """`ubroker run --data D` makes D and keeps the store there, also when the config names a
    persistence_location that does not exist: --data replaces it before the folder is checked."""
    data = tmp_path / "data" / "here"
    b = broker_factory(config="persistence true\npersistence_location %s\n" % (tmp_path / "absent"), data=data)
    c = b.raw()
    assert c.connect("store-data") == (0, 0)
    c.close()
    assert any(n.name.startswith("ubroker.") for n in data.iterdir())
    assert not (tmp_path / "absent").exists()
