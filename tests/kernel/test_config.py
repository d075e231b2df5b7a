import argparse

from comfy_kernel.config import add_server_arguments, apply_layered_defaults, default_config, normalise


def parse(argv, monkeypatch=None):
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    apply_layered_defaults(parser, argv)
    return normalise(parser.parse_args(argv))


def test_defaults():
    cfg = default_config()
    assert cfg.listen == "127.0.0.1" and cfg.port == 8188 and cfg.max_upload_size == 100.0
    assert cfg.enable_cors_header is None and cfg.multi_user is False


def test_bare_flags():
    cfg = parse(["--listen", "--enable-cors-header", "--verbose"])
    assert cfg.listen == "0.0.0.0,::" and cfg.enable_cors_header == "*" and cfg.verbose == "DEBUG"


def test_precedence(tmp_path, monkeypatch):
    conf = tmp_path / "k.toml"
    conf.write_text('port = 9000\nmax-upload-size = 5\nmulti_user = true\ndisable_plugins = ["a"]\n')
    monkeypatch.setenv("COMFY_KERNEL_PORT", "9100")
    cfg = parse(["--config", str(conf)])
    assert cfg.port == 9100 and cfg.max_upload_size == 5 and cfg.multi_user is True
    assert cfg.disable_plugins == ["a"]
    cfg = parse(["--config", str(conf), "--port", "9200"])
    assert cfg.port == 9200
    monkeypatch.setenv("COMFY_KERNEL_MULTI_USER", "false")
    assert parse(["--config", str(conf)]).multi_user is False


def test_repeatable_extra_paths():
    cfg = parse(["--extra-model-paths-config", "a.yaml", "b.yaml", "--extra-model-paths-config", "c.yaml"])
    assert cfg.extra_model_paths_config == ["a.yaml", "b.yaml", "c.yaml"]


def test_nested_commands_read_the_environment(monkeypatch):
    import argparse

    from comfy_kernel.cli import apply_command_defaults
    from comfy_kernel.config import add_server_arguments

    parser = argparse.ArgumentParser()
    tool = parser.add_subparsers(dest="command").add_parser("tool")
    action = tool.add_subparsers(dest="action").add_parser("credit")
    add_server_arguments(action)
    monkeypatch.setenv("COMFY_KERNEL_DATABASE", "postgresql://ck@db/ck")
    argv = ["tool", "credit"]
    apply_command_defaults(parser, argv)
    assert parser.parse_args(argv).database == "postgresql://ck@db/ck"
