"""The process's one OpenGL ES 3 context, made headless with EGL through PyOpenGL.

Nothing here runs at import: PyOpenGL and the system's EGL and GLES libraries
are loaded the first time a node asks for the context, so the server starts
and serves ``/object_info`` without them. The context is created once and
shared; :func:`current` makes it current on the calling thread under a lock
and releases it afterwards, because the executor may run each prompt on a
different worker thread and an EGL context can be current on only one thread
at a time.

The display is the default one when it initialises (a GPU driver, or a
display server), otherwise Mesa's surfaceless platform (its software
rasterizer on machines without a GPU). No window or surface is needed: the
renderer draws into framebuffer objects.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: The shared libraries the context needs on Linux, and the Debian packages that ship them.
LIBRARIES = {"libEGL.so.1": "libegl1", "libGLESv2.so.2": "libgles2"}
#: Mesa's drivers (the software rasterizer included) come with this package.
DRIVER_PACKAGE = "libgl1-mesa-dri"

_PLATFORM_SURFACELESS_MESA = 0x31DD
_NO_CONFIG = None  # EGL_NO_CONFIG_KHR


class GLUnavailable(RuntimeError):
    """No OpenGL ES 3 context can be made on this machine; the message says what is missing."""


@dataclass
class Context:
    """An initialised display and context, and what the renderer needs to know about them."""

    egl: Any
    gl: Any
    display: Any
    surface: Any
    context: Any
    renderer: str
    extensions: frozenset[str] = field(default_factory=frozenset)


_lock = threading.Lock()
_context: Context | None = None
_failure: str | None = None


def _install_hint() -> str:
    packages = " ".join([*LIBRARIES.values(), DRIVER_PACKAGE])
    return f"On Debian or Ubuntu: apt-get install {packages}"


def missing_libraries(libraries: dict[str, str] | None = None) -> list[str]:
    """The EGL/GLES shared libraries that cannot be loaded (Linux only; elsewhere PyOpenGL finds its own)."""
    if not sys.platform.startswith("linux"):
        return []
    missing = []
    for name in libraries or LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def _import_pyopengl() -> tuple[Any, Any]:
    """PyOpenGL's EGL and GLES3 modules, loaded for the EGL platform."""
    if "OpenGL" not in sys.modules:
        os.environ["PYOPENGL_PLATFORM"] = "egl"
    try:
        import OpenGL
    except ImportError:
        raise GLUnavailable("GLSL shaders need the PyOpenGL package (pip install PyOpenGL)") from None
    from OpenGL import platform

    if type(platform.PLATFORM).__name__ != "EGLPlatform":
        raise GLUnavailable(f"PyOpenGL was already loaded for another platform ({type(platform.PLATFORM).__name__}); "
                            "GLSL shaders need its EGL platform (PYOPENGL_PLATFORM=egl)")
    OpenGL.USE_ACCELERATE = False
    from OpenGL import EGL, GLES3

    return EGL, GLES3


def _initialise(egl: Any, display: Any) -> bool:
    if not display:
        return False
    major, minor = egl.EGLint(), egl.EGLint()
    try:
        return bool(egl.eglInitialize(display, major, minor))
    except egl.EGLError:
        return False


def _display(egl: Any) -> tuple[Any, str]:
    tried = []
    display = egl.eglGetDisplay(egl.EGL_DEFAULT_DISPLAY)
    if _initialise(egl, display):
        return display, "default"
    tried.append("the default display did not initialise")
    client = _string(egl.eglQueryString(egl.EGL_NO_DISPLAY, egl.EGL_EXTENSIONS))
    if "EGL_MESA_platform_surfaceless" in client.split():
        from OpenGL.raw.EGL.EXT.platform_base import eglGetPlatformDisplayEXT

        display = eglGetPlatformDisplayEXT(_PLATFORM_SURFACELESS_MESA, None, None)
        if _initialise(egl, display):
            return display, "surfaceless"
        tried.append("Mesa's surfaceless platform did not initialise")
    else:
        tried.append("EGL offers no surfaceless platform (EGL_MESA_platform_surfaceless)")
    raise GLUnavailable(f"no EGL display could be opened: {'; '.join(tried)}. The EGL library is there but no "
                        f"driver answered; Mesa's drivers (software rendering included) are in {DRIVER_PACKAGE}. "
                        + _install_hint())


def _string(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return (ctypes.cast(value, ctypes.c_char_p).value or b"").decode(errors="replace")


def _attributes(egl: Any, *pairs: int) -> Any:
    values = [*pairs, egl.EGL_NONE]
    return (egl.EGLint * len(values))(*values)


def _create() -> Context:
    missing = missing_libraries()
    if missing:
        raise GLUnavailable(f"GLSL shaders need the system's EGL and OpenGL ES libraries; missing: "
                            f"{', '.join(missing)}. " + _install_hint())
    egl, gl = _import_pyopengl()
    display, kind = _display(egl)
    display_extensions = set(_string(egl.eglQueryString(display, egl.EGL_EXTENSIONS)).split())
    if not egl.eglBindAPI(egl.EGL_OPENGL_ES_API):
        raise GLUnavailable("this EGL driver does not offer OpenGL ES")

    surfaceless = "EGL_KHR_surfaceless_context" in display_extensions
    config = egl.EGLConfig()
    count = egl.EGLint()
    wanted = [egl.EGL_RENDERABLE_TYPE, egl.EGL_OPENGL_ES3_BIT]
    if not surfaceless:
        wanted += [egl.EGL_SURFACE_TYPE, egl.EGL_PBUFFER_BIT]
    egl.eglChooseConfig(display, _attributes(egl, *wanted), ctypes.pointer(config), 1, count)
    if count.value == 0:
        if not ({"EGL_KHR_no_config_context", "EGL_MESA_configless_context"} & display_extensions and surfaceless):
            raise GLUnavailable("this EGL driver has no configuration for OpenGL ES 3")
        config = _NO_CONFIG
    surface = egl.EGL_NO_SURFACE
    if not surfaceless:
        surface = egl.eglCreatePbufferSurface(display, config, _attributes(egl, egl.EGL_WIDTH, 1, egl.EGL_HEIGHT, 1))
    try:
        context = egl.eglCreateContext(display, config, egl.EGL_NO_CONTEXT,
                                       _attributes(egl, egl.EGL_CONTEXT_CLIENT_VERSION, 3))
    except egl.EGLError as exc:
        raise GLUnavailable(f"this EGL driver could not create an OpenGL ES 3 context ({exc.err})") from None
    if not context:
        raise GLUnavailable("this EGL driver could not create an OpenGL ES 3 context")

    egl.eglMakeCurrent(display, surface, surface, context)
    try:
        renderer = f"{_string(gl.glGetString(gl.GL_RENDERER))}, {_string(gl.glGetString(gl.GL_VERSION))}"
        count = int(gl.glGetIntegerv(gl.GL_NUM_EXTENSIONS))
        extensions = frozenset(_string(gl.glGetStringi(gl.GL_EXTENSIONS, i)) for i in range(count))
    finally:
        egl.eglMakeCurrent(display, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, egl.EGL_NO_CONTEXT)
    log.info("GLSL shaders render with %s (EGL %s display)", renderer, kind)
    return Context(egl, gl, display, surface, context, renderer, extensions)


def _get() -> Context:
    global _context, _failure
    if _context is None:
        if _failure is not None:
            raise GLUnavailable(_failure)
        try:
            _context = _create()
        except GLUnavailable as exc:
            _failure = str(exc)
            raise
        except Exception as exc:  # a driver or binding failure we did not foresee: report it, do not retry
            _failure = f"the OpenGL ES context could not be created: {type(exc).__name__}: {exc}"
            raise GLUnavailable(_failure) from exc
    return _context


@contextmanager
def current() -> Iterator[Context]:
    """The shared context, current on this thread for the ``with`` block; one thread at a time."""
    with _lock:
        ctx = _get()
        ctx.egl.eglMakeCurrent(ctx.display, ctx.surface, ctx.surface, ctx.context)
        try:
            yield ctx
        finally:
            ctx.egl.eglMakeCurrent(ctx.display, ctx.egl.EGL_NO_SURFACE, ctx.egl.EGL_NO_SURFACE,
                                   ctx.egl.EGL_NO_CONTEXT)
