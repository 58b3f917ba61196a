"""Writing a file so that readers see it whole or not at all."""
import contextlib
import os


@contextlib.contextmanager
def replacing(path):
    """A temporary name in ``path``'s folder; renamed to ``path`` when the block ends
    without an error, removed when it raises.  A reader of ``path`` (another process, a
    Ray trial) sees the old file or the new one, never a half-written one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.partial"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
