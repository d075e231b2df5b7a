"""ComfyUI's ``comfy.options``: argument parsing is the server's, never a pack's."""

args_parsing = False


def enable_args_parsing(enable: bool = True) -> None:
    global args_parsing
    args_parsing = enable
